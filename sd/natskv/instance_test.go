package natskv_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

// aegisExample is the record from interop/aegis.md, byte for byte.
const aegisExample = `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34.512345+00:00","stickyActiveGroup":null,"metadata":{"start_time":"2025-08-08T05:02:24.101234+00:00"}}`

func TestEncodeMatchesAegisExample(t *testing.T) {
	in := natskv.Instance{
		ServiceName:   "echo-service",
		InstanceID:    "echo-service-3f9a1c2b",
		Version:       "1.0.0",
		Status:        natskv.StatusActive,
		LastHeartbeat: time.Date(2025, 8, 8, 5, 2, 34, 512345_678, time.UTC), // nanoseconds dropped
		Metadata:      map[string]string{"start_time": "2025-08-08T05:02:24.101234+00:00"},
	}
	have, err := natskv.EncodeInstance(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := aegisExample; string(have) != want {
		t.Fatalf("want %s\nhave %s", want, have)
	}
}

func TestValidateNames(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "a>b", "1abc", "-x", "é", strings.Repeat("a", wire.MaxServiceLen+1)} {
		if err := wire.ValidateService(bad); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("service %q: want wire.ErrInvalidName, have %v", bad, err)
		}
	}
	for _, good := range []string{"a", "echo-service", "Svc_2"} {
		if err := wire.ValidateService(good); err != nil {
			t.Errorf("service %q: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a.b", "*", "a b", "_x", strings.Repeat("a", wire.MaxInstanceLen+1)} {
		if err := wire.ValidateInstance(bad); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("instance %q: want wire.ErrInvalidName, have %v", bad, err)
		}
	}
	if err := wire.ValidateInstance("3f9a1c2b"); err != nil {
		t.Error(err)
	}
	var ne *wire.NameError
	if err := wire.ValidateService("a.b"); !errors.As(err, &ne) || ne.Kind != "service" {
		t.Fatalf("want a *wire.NameError for service, have %v", err)
	}
}

func TestLayoutKeys(t *testing.T) {
	for _, tc := range []struct {
		l        natskv.Layout
		svc, id  string
		want     string
		wantFail bool
	}{
		{natskv.LayoutDotted, "echo", "i-1", "service-instances.echo.i-1", false},
		{natskv.LayoutAegis, "echo-service", "echo-service-3f9a1c2b", "service-instances__echo-service__echo-service-3f9a1c2b", false},
		{natskv.LayoutAegis, "a__b", "i", "", true},
		{natskv.LayoutAegis, "a", "i__j", "", true},
		{natskv.LayoutDotted, "a.b", "i", "", true},
		{natskv.LayoutDotted, "a", "*", "", true},
	} {
		have, err := tc.l.Key(tc.svc, tc.id)
		if tc.wantFail {
			if !errors.Is(err, wire.ErrInvalidName) {
				t.Errorf("%v %s/%s: want wire.ErrInvalidName, have %v (%s)", tc.l, tc.svc, tc.id, err, have)
			}
			continue
		}
		if err != nil || have != tc.want {
			t.Errorf("%v %s/%s: want %s, have %s (%v)", tc.l, tc.svc, tc.id, tc.want, have, err)
		}
	}
}

// EncodeInstance refuses what no reader accepts, with errors that match
// ErrInvalidRecord (or wire.ErrInvalidName): the rules are the registry's
// (internal/registry tests them field by field).
func TestEncodeInstanceRefuses(t *testing.T) {
	base := natskv.Instance{ServiceName: "s", InstanceID: "i", Version: "1.2.3", Status: natskv.StatusActive, LastHeartbeat: time.Now()}
	if _, err := natskv.EncodeInstance(base); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*natskv.Instance)
		want error
	}{
		"version":   {func(i *natskv.Instance) { i.Version = "1.2" }, natskv.ErrInvalidRecord},
		"status":    {func(i *natskv.Instance) { i.Status = "DOWN" }, natskv.ErrInvalidRecord},
		"heartbeat": {func(i *natskv.Instance) { i.LastHeartbeat = time.Time{} }, natskv.ErrInvalidRecord},
		"instance":  {func(i *natskv.Instance) { i.InstanceID = "a.>" }, wire.ErrInvalidName},
		"too large": {func(i *natskv.Instance) {
			i.Metadata = map[string]string{"x": strings.Repeat("y", 64<<10)}
		}, natskv.ErrInvalidRecord},
	} {
		in := base
		tc.mut(&in)
		if _, err := natskv.EncodeInstance(in); !errors.Is(err, tc.want) {
			t.Errorf("%s: want %v, have %v", name, tc.want, err)
		}
	}
}

// aegisStrict applies the Python SDK's reader rules (interop/aegis.md) to a
// record: exactly the seven keys in order, semver version, known status,
// stickyActiveGroup present (null or string), metadata an object.
func aegisStrict(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not an object")
	}
	wantKeys := []string{"serviceName", "instanceId", "version", "status", "lastHeartbeat", "stickyActiveGroup", "metadata"}
	var vals = map[string]json.RawMessage{}
	for n := 0; dec.More(); n++ {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if n >= len(wantKeys) || tok != wantKeys[n] {
			return errors.New("unexpected key " + tok.(string))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		vals[tok.(string)] = v
	}
	if len(vals) != len(wantKeys) {
		return errors.New("missing keys")
	}
	var version, status, hb string
	json.Unmarshal(vals["version"], &version)
	json.Unmarshal(vals["status"], &status)
	json.Unmarshal(vals["lastHeartbeat"], &hb)
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(version) {
		return errors.New("version not semver")
	}
	if status != "ACTIVE" && status != "UNHEALTHY" && status != "STANDBY" {
		return errors.New("bad status")
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$`).MatchString(hb) {
		return errors.New("lastHeartbeat not isoformat UTC: " + hb)
	}
	if g := string(vals["stickyActiveGroup"]); g != "null" && !strings.HasPrefix(g, `"`) {
		return errors.New("stickyActiveGroup not null or string")
	}
	if !strings.HasPrefix(string(vals["metadata"]), "{") {
		return errors.New("metadata not an object")
	}
	return nil
}

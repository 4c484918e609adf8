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

func TestEncodeTimeAndNulls(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    natskv.Instance
		wants []string
	}{
		{"whole second drops microseconds", natskv.Instance{LastHeartbeat: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
			[]string{`"lastHeartbeat":"2025-01-02T03:04:05+00:00"`, `"stickyActiveGroup":null`, `"metadata":{}`}},
		{"offset converted to UTC", natskv.Instance{LastHeartbeat: time.Date(2025, 1, 2, 5, 4, 5, 1000, time.FixedZone("x", 2*3600))},
			[]string{`"lastHeartbeat":"2025-01-02T03:04:05.000001+00:00"`}},
		{"sticky group", natskv.Instance{StickyActiveGroup: "g1", LastHeartbeat: time.Unix(0, 0)},
			[]string{`"stickyActiveGroup":"g1"`}},
		{"no HTML escaping", natskv.Instance{Metadata: map[string]string{"u": "a<b>&c"}, LastHeartbeat: time.Unix(0, 0)},
			[]string{`"metadata":{"u":"a<b>&c"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.in.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.wants {
				if !strings.Contains(string(b), want) {
					t.Errorf("want %s in %s", want, b)
				}
			}
		})
	}
}

// aegisStrict applies the Python SDK's reader rules (interop/aegis.md) to a
// record: exactly the seven keys in order, semver version, known status,
// stickyActiveGroup present (null or string), metadata an object.
// checkStrict holds DecodeInstanceStrict to its contract: it accepts a
// subset of what DecodeInstance accepts, with the same result; what it
// refuses of that has one of the reasons the AegisSDK reader has (an
// unknown top-level key, metadata null or not an object, a non-semver
// version); what it accepts it writes back in a form it accepts again.
func checkStrict(t *testing.T, data []byte) {
	t.Helper()
	strict, serr := natskv.DecodeInstanceStrict(data)
	lenient, lerr := natskv.DecodeInstance(data)
	if serr != nil && !errors.Is(serr, natskv.ErrInvalidRecord) && !errors.Is(serr, wire.ErrInvalidName) {
		t.Fatalf("untyped strict error %v", serr)
	}
	if serr == nil && lerr != nil {
		t.Fatalf("strict accepts what lenient refuses (%v): %s", lerr, data)
	}
	if lerr != nil {
		return
	}
	var top map[string]json.RawMessage
	_ = json.Unmarshal(data, &top)
	reason := ""
	for k := range top {
		switch k {
		case "serviceName", "service_name", "instanceId", "instance_id", "version", "status",
			"lastHeartbeat", "last_heartbeat", "stickyActiveGroup", "sticky_active_group", "metadata":
		default:
			reason = "unknown key " + k
		}
	}
	if md, ok := top["metadata"]; ok && !strings.HasPrefix(strings.TrimLeft(string(md), " \t\r\n"), "{") {
		reason = "metadata not an object"
	}
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(lenient.Version) {
		reason = "version not semver"
	}
	if serr != nil {
		if reason == "" {
			t.Fatalf("strict refuses %s (%v), with none of the AegisSDK reader's reasons", data, serr)
		}
		return
	}
	if reason != "" {
		t.Fatalf("strict accepts %s, which the AegisSDK reader refuses: %s", data, reason)
	}
	if strict.ServiceName != lenient.ServiceName || strict.InstanceID != lenient.InstanceID || strict.Version != lenient.Version ||
		strict.Status != lenient.Status || strict.StickyActiveGroup != lenient.StickyActiveGroup ||
		!equalMap(strict.Metadata, lenient.Metadata) || !strict.LastHeartbeat.Equal(lenient.LastHeartbeat) {
		t.Fatalf("strict %+v != lenient %+v", strict, lenient)
	}
	out, err := natskv.EncodeInstance(strict)
	if err != nil {
		return // e.g. more metadata than a record may carry
	}
	if _, err := natskv.DecodeInstanceStrict(out); err != nil {
		t.Fatalf("strict re-read of %s: %v", out, err)
	}
}

func TestDecodeInstanceStrict(t *testing.T) {
	const hb = `"lastHeartbeat":"2025-08-08T05:02:34.512345+00:00"`
	for _, tc := range []struct {
		name, rec string
		strict    bool // accepted by the strict reader
		field     string
	}{
		{name: "aegis example", rec: aegisExample, strict: true},
		{name: "snake_case", rec: `{"service_name":"echo","instance_id":"e-1","version":"1.0.0","status":"ACTIVE","last_heartbeat":"2025-08-08T05:02:34Z","sticky_active_group":null,"metadata":{}}`, strict: true},
		{name: "Z offset, no sticky group or metadata", rec: `{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, strict: true},
		{name: "other offset", rec: `{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"STANDBY",` + `"lastHeartbeat":"2025-08-08T10:32:34+05:30","metadata":{"n":1,"o":{"a":null}}}`, strict: true},
		{name: "unknown key", rec: `{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":{},"zone":"a"}`, field: "zone"},
		{name: "key of another case", rec: `{"ServiceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":{}}`, field: "ServiceName"},
		{name: "null metadata", rec: `{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":null}`, field: "metadata"},
		{name: "version 1.0", rec: `{"serviceName":"echo","instanceId":"e-1","version":"1.0","status":"ACTIVE",` + hb + `,"metadata":{}}`, field: "version"},
		{name: "version v1.0.0", rec: `{"serviceName":"echo","instanceId":"e-1","version":"v1.0.0","status":"ACTIVE",` + hb + `,"metadata":{}}`, field: "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := natskv.DecodeInstance([]byte(tc.rec)); err != nil {
				t.Fatalf("lenient: %v", err)
			}
			_, err := natskv.DecodeInstanceStrict([]byte(tc.rec))
			if tc.strict {
				if err != nil {
					t.Fatalf("strict refuses: %v", err)
				}
				return
			}
			var re *natskv.RecordError
			if !errors.As(err, &re) || !errors.Is(err, natskv.ErrInvalidRecord) || re.Field != tc.field {
				t.Fatalf("strict: %v, want a RecordError on %q", err, tc.field)
			}
			checkStrict(t, []byte(tc.rec))
		})
	}
	// Wrong types are refused by both readers.
	for _, rec := range []string{
		`{"serviceName":"echo","instanceId":"e-1","version":1,"status":"ACTIVE",` + hb + `,"metadata":{}}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":[]}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"stickyActiveGroup":7}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE","lastHeartbeat":17}`,
	} {
		if _, err := natskv.DecodeInstanceStrict([]byte(rec)); !errors.Is(err, natskv.ErrInvalidRecord) {
			t.Errorf("strict %s: %v, want ErrInvalidRecord", rec, err)
		}
	}
}

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

func TestWrittenRecordPassesAegisStrictRules(t *testing.T) {
	for _, in := range []natskv.Instance{
		{ServiceName: "svc", InstanceID: "i1", Version: "2.10.3", Status: natskv.StatusStandby, LastHeartbeat: time.Now()},
		{ServiceName: "svc", InstanceID: "i1", Version: "0.0.1", Status: natskv.StatusUnhealthy, LastHeartbeat: time.Now(),
			StickyActiveGroup: "default", Metadata: map[string]string{"addr": "1.2.3.4:80"}},
	} {
		b, err := natskv.EncodeInstance(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := aegisStrict(b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	if err := aegisStrict([]byte(aegisExample)); err != nil {
		t.Fatalf("the checker refuses the reference record: %v", err)
	}
}

func TestDecodeAcceptsPeerSpellings(t *testing.T) {
	want := natskv.Instance{ServiceName: "echo-service", InstanceID: "echo-service-3f9a1c2b", Version: "1.0.0",
		Status: natskv.StatusActive, LastHeartbeat: time.Date(2025, 8, 8, 5, 2, 34, 512345000, time.UTC)}
	for name, rec := range map[string]string{
		"aegis example":     aegisExample,
		"snake_case and Z":  `{"service_name":"echo-service","instance_id":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","last_heartbeat":"2025-08-08T05:02:34.512345Z","sticky_active_group":null,"metadata":{}}`,
		"offset":            `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T07:02:34.512345+02:00"}`,
		"naive time, extra": `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34.512345","extra":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			have, err := natskv.DecodeInstance([]byte(rec))
			if err != nil {
				t.Fatal(err)
			}
			if have.ServiceName != want.ServiceName || have.InstanceID != want.InstanceID || have.Status != want.Status ||
				have.Version != want.Version || !have.LastHeartbeat.Equal(want.LastHeartbeat) || have.Metadata == nil {
				t.Fatalf("want %+v, have %+v", want, have)
			}
		})
	}
	have, err := natskv.DecodeInstance([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","metadata":{"n":5,"b":true,"o":{"x":[1, 2]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"n": "5", "b": "true", "o": `{"x":[1,2]}`}; !equalMap(want, have.Metadata) {
		t.Fatalf("metadata: want %v, have %v", want, have.Metadata)
	}
}

func equalMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestDecodeRejectsBadInput(t *testing.T) {
	ok := `"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"`
	for _, tc := range []struct {
		name  string
		rec   string
		want  error
		field string
	}{
		{"not JSON", `hello`, natskv.ErrInvalidRecord, ""},
		{"array", `[1,2]`, natskv.ErrInvalidRecord, ""},
		{"null", `null`, natskv.ErrInvalidRecord, ""},
		{"empty", ``, natskv.ErrInvalidRecord, ""},
		{"status wrong type", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":1,"lastHeartbeat":"2025-08-08T05:02:34Z"}`, natskv.ErrInvalidRecord, "status"},
		{"unknown status", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"BUSY","lastHeartbeat":"2025-08-08T05:02:34Z"}`, natskv.ErrInvalidStatus, "status"},
		{"lowercase status", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"active","lastHeartbeat":"2025-08-08T05:02:34Z"}`, natskv.ErrInvalidStatus, "status"},
		{"missing instance", `{"serviceName":"s","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, natskv.ErrMissingField, "instanceId"},
		{"null service", `{"serviceName":null,"instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, natskv.ErrMissingField, "serviceName"},
		{"missing heartbeat", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE"}`, natskv.ErrMissingField, "lastHeartbeat"},
		{"bad time", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"yesterday"}`, natskv.ErrInvalidRecord, "lastHeartbeat"},
		{"metadata array", `{` + ok + `,"metadata":[1]}`, natskv.ErrInvalidRecord, "metadata"},
		{"wildcard service", `{"serviceName":"s.*","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, wire.ErrInvalidName, ""},
		{"huge", `{` + ok + `,"metadata":{"x":"` + strings.Repeat("x", natskv.MaxRecordSize) + `"}}`, natskv.ErrRecordTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := natskv.DecodeInstance([]byte(tc.rec))
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, have %v", tc.want, err)
			}
			var re *natskv.RecordError
			if tc.field != "" && (!errors.As(err, &re) || re.Field != tc.field) {
				t.Fatalf("want field %q in %v", tc.field, err)
			}
		})
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

func TestInstanceValidate(t *testing.T) {
	base := natskv.Instance{ServiceName: "s", InstanceID: "i", Version: "1.2.3", Status: natskv.StatusActive, LastHeartbeat: time.Now()}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*natskv.Instance)
		want error
	}{
		"version":   {func(i *natskv.Instance) { i.Version = "1.2" }, natskv.ErrInvalidVersion},
		"status":    {func(i *natskv.Instance) { i.Status = "DOWN" }, natskv.ErrInvalidStatus},
		"heartbeat": {func(i *natskv.Instance) { i.LastHeartbeat = time.Time{} }, natskv.ErrMissingField},
		"instance":  {func(i *natskv.Instance) { i.InstanceID = "a.>" }, wire.ErrInvalidName},
		"too large": {func(i *natskv.Instance) {
			i.Metadata = map[string]string{"x": strings.Repeat("y", natskv.MaxRecordSize)}
		}, natskv.ErrRecordTooLarge},
	} {
		in := base.Clone()
		tc.mut(&in)
		if _, err := natskv.EncodeInstance(in); !errors.Is(err, tc.want) {
			t.Errorf("%s: want %v, have %v", name, tc.want, err)
		}
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

func FuzzDecodeInstance(f *testing.F) {
	f.Add([]byte(aegisExample))
	f.Add([]byte(`{"service_name":"s","instance_id":"i","version":"1.0.0","status":"STANDBY","last_heartbeat":"2025-08-08T05:02:34Z","metadata":{"a":1}}`))
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1","status":"ACTIVE","lastHeartbeat":"2025-08-08 05:02:34+05:30","metadata":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","extra":1}`))
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","ServiceName":"s"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkStrict(t, data)
		in, err := natskv.DecodeInstance(data)
		if err != nil {
			if !errors.Is(err, natskv.ErrInvalidRecord) && !errors.Is(err, wire.ErrInvalidName) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if in.Metadata == nil {
			t.Fatal("decoded metadata is nil")
		}
		// Whatever we accept and would write must read back the same.
		out, err := natskv.EncodeInstance(in)
		if err != nil {
			return // e.g. a non-semver version we read leniently
		}
		again, err := natskv.DecodeInstance(out)
		if err != nil {
			t.Fatalf("re-read of %s: %v", out, err)
		}
		if again.ServiceName != in.ServiceName || again.InstanceID != in.InstanceID || again.Status != in.Status ||
			again.StickyActiveGroup != in.StickyActiveGroup || !equalMap(again.Metadata, in.Metadata) ||
			!again.LastHeartbeat.Equal(in.LastHeartbeat.Truncate(time.Microsecond)) {
			t.Fatalf("round trip: %+v != %+v", again, in)
		}
		if err := aegisStrict(out); err != nil {
			t.Fatalf("written record %s fails AegisSDK rules: %v", out, err)
		}
	})
}

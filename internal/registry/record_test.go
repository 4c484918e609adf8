package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/wire"
)

// aegisExample is the record from interop/aegis.md, byte for byte.
const aegisExample = `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34.512345+00:00","stickyActiveGroup":null,"metadata":{"start_time":"2025-08-08T05:02:24.101234+00:00"}}`

func TestEncodeMatchesAegisExample(t *testing.T) {
	in := Instance{
		ServiceName:   "echo-service",
		InstanceID:    "echo-service-3f9a1c2b",
		Version:       "1.0.0",
		Status:        StatusActive,
		LastHeartbeat: time.Date(2025, 8, 8, 5, 2, 34, 512345_678, time.UTC), // nanoseconds dropped
		Metadata:      map[string]string{"start_time": "2025-08-08T05:02:24.101234+00:00"},
	}
	have, err := Encode(in)
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
		in    Instance
		wants []string
	}{
		{"whole second drops microseconds", Instance{LastHeartbeat: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
			[]string{`"lastHeartbeat":"2025-01-02T03:04:05+00:00"`, `"stickyActiveGroup":null`, `"metadata":{}`}},
		{"offset converted to UTC", Instance{LastHeartbeat: time.Date(2025, 1, 2, 5, 4, 5, 1000, time.FixedZone("x", 2*3600))},
			[]string{`"lastHeartbeat":"2025-01-02T03:04:05.000001+00:00"`}},
		{"sticky group", Instance{StickyActiveGroup: "g1", LastHeartbeat: time.Unix(0, 0)},
			[]string{`"stickyActiveGroup":"g1"`}},
		{"no HTML escaping", Instance{Metadata: map[string]string{"u": "a<b>&c"}, LastHeartbeat: time.Unix(0, 0)},
			[]string{`"metadata":{"u":"a<b>&c"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.in.Marshal()
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

// checkStrict holds strict decoding to its contract: it accepts a subset
// of what lenient decoding accepts, with the same result; what it refuses
// of that has one of the reasons the AegisSDK reader has (an unknown
// top-level key, metadata null or not an object, a non-semver version);
// what it accepts it writes back in a form it accepts again.
func checkStrict(t *testing.T, data []byte) {
	t.Helper()
	strict, serr := Decode(data, true)
	lenient, lerr := Decode(data, false)
	if serr != nil && !errors.Is(serr, ErrInvalidRecord) && !errors.Is(serr, wire.ErrInvalidName) {
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
		if !knownField(k) {
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
	if !sameInstance(strict, lenient) {
		t.Fatalf("strict %+v != lenient %+v", strict, lenient)
	}
	out, err := Encode(strict)
	if err != nil {
		return // e.g. more metadata than a record may carry
	}
	if _, err := Decode(out, true); err != nil {
		t.Fatalf("strict re-read of %s: %v", out, err)
	}
}

func sameInstance(a, b Instance) bool {
	return a.ServiceName == b.ServiceName && a.InstanceID == b.InstanceID && a.Version == b.Version &&
		a.Status == b.Status && a.StickyActiveGroup == b.StickyActiveGroup &&
		equalMap(a.Metadata, b.Metadata) && a.LastHeartbeat.Equal(b.LastHeartbeat)
}

func TestDecodeStrict(t *testing.T) {
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
			if _, err := Decode([]byte(tc.rec), false); err != nil {
				t.Fatalf("lenient: %v", err)
			}
			_, err := Decode([]byte(tc.rec), true)
			if tc.strict {
				if err != nil {
					t.Fatalf("strict refuses: %v", err)
				}
				return
			}
			var re *RecordError
			if !errors.As(err, &re) || !errors.Is(err, ErrInvalidRecord) || re.Field != tc.field {
				t.Fatalf("strict: %v, want a RecordError on %q", err, tc.field)
			}
			checkStrict(t, []byte(tc.rec))
		})
	}
	// Wrong types are refused by both readers.
	for _, rec := range []string{
		`{"serviceName":"echo","instanceId":"e-1","version":1,"status":"ACTIVE",` + hb + `,"metadata":{}}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":[]}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":"x"}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE",` + hb + `,"stickyActiveGroup":7}`,
		`{"serviceName":"echo","instanceId":"e-1","version":"1.0.0","status":"ACTIVE","lastHeartbeat":17}`,
	} {
		for _, strict := range []bool{false, true} {
			if _, err := Decode([]byte(rec), strict); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("strict=%v %s: %v, want ErrInvalidRecord", strict, rec, err)
			}
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
	for _, in := range []Instance{
		{ServiceName: "svc", InstanceID: "i1", Version: "2.10.3", Status: StatusStandby, LastHeartbeat: time.Now()},
		{ServiceName: "svc", InstanceID: "i1", Version: "0.0.1", Status: StatusUnhealthy, LastHeartbeat: time.Now(),
			StickyActiveGroup: "default", Metadata: map[string]string{"addr": "1.2.3.4:80"}},
	} {
		b, err := Encode(in)
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
	want := Instance{ServiceName: "echo-service", InstanceID: "echo-service-3f9a1c2b", Version: "1.0.0",
		Status: StatusActive, LastHeartbeat: time.Date(2025, 8, 8, 5, 2, 34, 512345000, time.UTC)}
	for name, rec := range map[string]string{
		"aegis example":     aegisExample,
		"snake_case and Z":  `{"service_name":"echo-service","instance_id":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","last_heartbeat":"2025-08-08T05:02:34.512345Z","sticky_active_group":null,"metadata":{}}`,
		"offset":            `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T07:02:34.512345+02:00"}`,
		"naive time, extra": `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34.512345","extra":1}`,
		"space for T":       `{"serviceName":"echo-service","instanceId":"echo-service-3f9a1c2b","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08 05:02:34.512345"}`,
		"escapes and case":  `{"SERVICENAME":"echo-service","instance\u0049d":"echo-service-3f9a1c2b","version":"1.0.0","status":"\u0041CTIVE","lastHeartbeat":"2025-08-08T05:02:34.512345Z"}`,
		"white space":       " \n{ \"serviceName\" : \"echo-service\" ,\t\"instanceId\":\"echo-service-3f9a1c2b\",\"version\":\"1.0.0\",\"status\":\"ACTIVE\",\"lastHeartbeat\":\"2025-08-08T05:02:34.512345Z\" } \r\n",
	} {
		t.Run(name, func(t *testing.T) {
			have, err := Decode([]byte(rec), false)
			if err != nil {
				t.Fatal(err)
			}
			if have.ServiceName != want.ServiceName || have.InstanceID != want.InstanceID || have.Status != want.Status ||
				have.Version != want.Version || !have.LastHeartbeat.Equal(want.LastHeartbeat) || have.Metadata == nil {
				t.Fatalf("want %+v, have %+v", want, have)
			}
		})
	}
	have, err := Decode([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","metadata":{"n":5,"b":true,"o":{"x":[1, 2]}, "z": null, "e": "a\u00e9\ud83d\ude00\ud800"}}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"n": "5", "b": "true", "o": `{"x":[1,2]}`, "z": "", "e": "aé😀\uFFFD"}; !equalMap(want, have.Metadata) {
		t.Fatalf("metadata: want %q, have %q", want, have.Metadata)
	}
}

func equalMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
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
		{"not JSON", `hello`, ErrInvalidRecord, ""},
		{"array", `[1,2]`, ErrInvalidRecord, ""},
		{"null", `null`, ErrInvalidRecord, ""},
		{"empty", ``, ErrInvalidRecord, ""},
		{"trailing data", `{` + ok + `} x`, ErrInvalidJSON, ""},
		{"two records", `{` + ok + `}{}`, ErrInvalidJSON, ""},
		{"status wrong type", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":1,"lastHeartbeat":"2025-08-08T05:02:34Z"}`, ErrInvalidRecord, "status"},
		{"unknown status", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"BUSY","lastHeartbeat":"2025-08-08T05:02:34Z"}`, ErrInvalidStatus, "status"},
		{"lowercase status", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"active","lastHeartbeat":"2025-08-08T05:02:34Z"}`, ErrInvalidStatus, "status"},
		{"missing instance", `{"serviceName":"s","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, ErrMissingField, "instanceId"},
		{"null service", `{"serviceName":null,"instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, ErrMissingField, "serviceName"},
		{"missing heartbeat", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE"}`, ErrMissingField, "lastHeartbeat"},
		{"bad time", `{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"yesterday"}`, ErrInvalidRecord, "lastHeartbeat"},
		{"metadata array", `{` + ok + `,"metadata":[1]}`, ErrInvalidRecord, "metadata"},
		{"wildcard service", `{"serviceName":"s.*","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, wire.ErrInvalidName, ""},
		{"huge", `{` + ok + `,"metadata":{"x":"` + strings.Repeat("x", MaxRecordSize) + `"}}`, ErrRecordTooLarge, ""},
		{"escape in a name", `{"serviceName":"s\u001b[2J","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`, wire.ErrInvalidName, ""},
		{"too deep", `{` + ok + `,"metadata":{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}}`, ErrInvalidJSON, ""},
		{"too many entries", `{` + ok + `,"metadata":{` + manyEntries(maxMetadataEntries+1) + `}}`, ErrInvalidRecord, "metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.rec), false)
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, have %v", tc.want, err)
			}
			var re *RecordError
			if tc.field != "" && (!errors.As(err, &re) || re.Field != tc.field) {
				t.Fatalf("want field %q in %v", tc.field, err)
			}
			if len(err.Error()) > 512 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
		})
	}
	// The free-text fields are any text, escapes and all, as the AegisSDK
	// reader takes them: whoever prints them escapes them.
	in, err := Decode([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0\u001b[2J","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z",`+
		`"stickyActiveGroup":"g\u202e1","metadata":{"a\nb":"\u001b[31mred\u001b[0m"}}`), false)
	if err != nil || in.Version != "1.0.0\x1b[2J" || in.StickyActiveGroup != "g\u202e1" || in.Metadata["a\nb"] != "\x1b[31mred\x1b[0m" {
		t.Fatalf("text with escapes: %+v, %v", in, err)
	}
}

func manyEntries(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k`)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`":"v"`)
	}
	return b.String()
}

func TestInstanceValidate(t *testing.T) {
	base := Instance{ServiceName: "s", InstanceID: "i", Version: "1.2.3", Status: StatusActive, LastHeartbeat: time.Now()}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Instance)
		want error
	}{
		"version":   {func(i *Instance) { i.Version = "1.2" }, ErrInvalidVersion},
		"status":    {func(i *Instance) { i.Status = "DOWN" }, ErrInvalidStatus},
		"heartbeat": {func(i *Instance) { i.LastHeartbeat = time.Time{} }, ErrMissingField},
		"instance":  {func(i *Instance) { i.InstanceID = "a.>" }, wire.ErrInvalidName},
		"too large": {func(i *Instance) {
			i.Metadata = map[string]string{"x": strings.Repeat("y", MaxRecordSize)}
		}, ErrRecordTooLarge},
	} {
		in := base.Clone()
		tc.mut(&in)
		if _, err := Encode(in); !errors.Is(err, tc.want) {
			t.Errorf("%s: want %v, have %v", name, tc.want, err)
		}
	}
}

func TestParseTime(t *testing.T) {
	for s, want := range map[string]time.Time{
		"2025-08-08T05:02:34Z":        time.Date(2025, 8, 8, 5, 2, 34, 0, time.UTC),
		"2025-08-08T07:02:34.5+02:00": time.Date(2025, 8, 8, 5, 2, 34, 5e8, time.UTC),
		"2025-08-08 05:02:34.123456":  time.Date(2025, 8, 8, 5, 2, 34, 123456000, time.UTC),
		"2025-08-08  05:02:34":        {},
		" 2025-08-08T05:02:34Z":       {},
		strings.Repeat(" ", 1<<16):    {},
	} {
		have, err := ParseTime(s)
		if want.IsZero() {
			if err == nil {
				t.Errorf("%.40q: want an error, have %v", s, have)
			} else if len(err.Error()) > 128 {
				t.Errorf("%.40q: an error of %d bytes", s, len(err.Error()))
			}
			continue
		}
		if err != nil || !have.Equal(want) {
			t.Errorf("%q: want %v, have %v %v", s, want, have, err)
		}
	}
}

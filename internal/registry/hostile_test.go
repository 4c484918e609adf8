package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/wire"
)

// The decoder against hostile records: every field long, escaped, invalid,
// nested, repeated. Each input is as large as a record may be (a little
// under MaxRecordSize), so a cost per byte that grows with the input shows
// as a blow-up here, and in BenchmarkDecode beside the typical record.

// typicalRecord is what a kitnats registrar writes, with a zone and an
// address.
var typicalRecord = []byte(`{"serviceName":"greeter","instanceId":"greeter-7f3a9c1d","version":"1.4.2","status":"ACTIVE",` +
	`"lastHeartbeat":"2026-03-01T10:20:30.123456+00:00","stickyActiveGroup":null,` +
	`"metadata":{"kitnats.rpc":"instance","zone":"eu-west-1a","kitnats.addr.http":"10.0.3.17:8080"}}`)

const hostileSize = MaxRecordSize - 512

// fill repeats unit to about n bytes.
func fill(unit string, n int) string { return strings.Repeat(unit, max(n/len(unit), 1)) }

// record writes a record with the given members after the required ones.
func recordWith(members ...string) []byte {
	return []byte(`{"serviceName":"svc","instanceId":"i-1","version":"1.0.0","status":"ACTIVE",` +
		`"lastHeartbeat":"2026-03-01T10:20:30Z"` + strings.Join(append([]string{""}, members...), ",") + `}`)
}

// recordField replaces one of the required members.
func recordField(name, value string) []byte {
	fields := map[string]string{"serviceName": `"svc"`, "instanceId": `"i-1"`, "version": `"1.0.0"`, "status": `"ACTIVE"`,
		"lastHeartbeat": `"2026-03-01T10:20:30Z"`}
	fields[name] = value
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for _, k := range []string{"serviceName", "instanceId", "version", "status", "lastHeartbeat", name} {
		v, ok := fields[k]
		if !ok {
			continue
		}
		delete(fields, k)
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:%s", k, v)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// hostileRecords is the corpus: name → record.
func hostileRecords() map[string][]byte {
	n := hostileSize - 200
	strs := map[string]string{
		"plain":    `"` + fill("x", n) + `"`,
		"spaces":   `"` + fill(" ", n) + `"`, // the quadratic timestamp, once
		"escapes":  `"` + fill(`\u0041`, n) + `"`,
		"esc-ctl":  `"` + fill(`\u001b[2J`, n) + `"`,
		"pairs":    `"` + fill(`\ud83d\ude00`, n) + `"`,
		"lone-sur": `"` + fill(`\ud800`, n) + `"`,
		"bad-utf8": `"` + fill("\xff\xfe", n) + `"`,
		"multi":    `"` + fill("é😀", n) + `"`,
	}
	out := map[string][]byte{}
	for _, field := range []string{"serviceName", "service_name", "instanceId", "instance_id", "version", "status",
		"lastHeartbeat", "last_heartbeat", "stickyActiveGroup", "sticky_active_group"} {
		for kind, v := range strs {
			out[field+"/"+kind] = recordField(field, v)
		}
	}
	for kind, v := range strs {
		out["metadata value/"+kind] = recordWith(`"metadata":{"k":` + v + `}`)
		out["metadata key/"+kind] = recordWith(`"metadata":{` + v + `:"v"}`)
		out["unknown key/"+kind] = recordWith(v + `:1`)
		out["unknown value/"+kind] = recordWith(`"x":` + v)
	}
	nested := func(open, close string) string {
		d := min(n/(len(open)+len(close)), 2*maxDepth)
		return strings.Repeat(open, d) + strings.Repeat(close, d)
	}
	for kind, v := range map[string]string{
		"arrays":       nested("[", "]"),
		"arrays-ok":    strings.Repeat("[", maxDepth-3) + strings.Repeat("]", maxDepth-3),
		"objects":      strings.Repeat(`{"a":`, maxDepth-3) + "1" + strings.Repeat("}", maxDepth-3),
		"objects-deep": strings.Repeat(`{"a":`, n/6) + "1" + strings.Repeat("}", n/6),
		"wide":         "[" + strings.TrimSuffix(fill(`{"a":[1,{}]},`, n), ",") + "]",
		"number":       fill("9", n),
		"negative":     "-" + fill("9", n-1),
		"exponent":     "1." + fill("0", n/2) + "e-" + fill("9", n/2),
		"unterminated": strings.Repeat("[", 100) + fill(" ", n),
	} {
		out["metadata value/"+kind] = recordWith(`"metadata":{"k":` + v + `}`)
		out["unknown value/"+kind] = recordWith(`"x":` + v)
	}
	out["metadata/many entries"] = recordWith(`"metadata":{` + manyEntries(n/12) + `}`)
	out["metadata/at the limit"] = recordWith(`"metadata":{` + manyEntries(maxMetadataEntries) + `}`)
	out["metadata/duplicate keys"] = recordWith(`"metadata":{` + strings.TrimSuffix(fill(`"k":"v",`, n), ",") + `}`)
	out["metadata/duplicate objects"] = recordWith(strings.TrimSuffix(fill(`"metadata":{"a":"b","c":"d"},`, n), ","))
	out["duplicate version"] = recordWith(strings.TrimSuffix(fill(`"version":"1.0.0",`, n), ","))
	out["duplicate snake"] = recordWith(strings.TrimSuffix(fill(`"service_name":"svc",`, n), ","))
	out["folded keys"] = recordWith(strings.TrimSuffix(fill(`"SERVICENAME":"svc",`, n), ","))
	out["unknown keys"] = recordWith(strings.TrimSuffix(fill(`"a":1,`, n), ","))
	out["white space"] = []byte(fill(" ", n) + string(typicalRecord) + fill("\n", 100))
	out["over the size"] = []byte(string(typicalRecord) + fill(" ", MaxRecordSize))
	return out
}

// memCost is the allocations and allocated bytes of one call of f,
// averaged over runs.
func memCost(runs int, f func()) (mallocs, bytes float64) {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&b)
	return float64(b.Mallocs-a.Mallocs) / float64(runs), float64(b.TotalAlloc-a.TotalAlloc) / float64(runs)
}

// The bounds of one decode: a few copies of the input (a string field
// unescaped: scratch and result) and, for the metadata entries it holds
// (at most one per 6 bytes of input, `"":"",`, and at most
// maxMetadataEntries), a map slot and two strings each. What the worst of
// the corpus costs stays under them, and a decoder that copies a field
// again per byte of it does not.
const (
	maxBytesPerByte  = 8
	maxBytesPerEntry = 192
	maxMallocsPerKiB = 16
	maxMallocsEntry  = 3
	memSlack         = 8 << 10
)

func memBudget(n int) (mallocs, bytes float64) {
	entries := min(n/6, maxMetadataEntries)
	return float64(maxMallocsPerKiB*n/1024 + maxMallocsEntry*entries + 64),
		float64(maxBytesPerByte*n + maxBytesPerEntry*entries + memSlack)
}

func checkMemCost(t testing.TB, name string, data []byte, strict bool) {
	t.Helper()
	mallocs, allocated := memCost(3, func() { _, _ = Decode(data, strict) })
	if maxMallocs, maxBytes := memBudget(len(data)); allocated > maxBytes || mallocs > maxMallocs {
		t.Errorf("%s (strict=%v): %.0f bytes in %.0f allocations for %d bytes of input", name, strict, allocated, mallocs, len(data))
	}
}

// Every record of the corpus decodes to a value or a typed error, with a
// bounded error text and allocations linear in its size.
func TestDecodeHostileRecords(t *testing.T) {
	for name, data := range hostileRecords() {
		for _, strict := range []bool{false, true} {
			in, err := Decode(data, strict)
			switch {
			case err != nil && !errors.Is(err, ErrInvalidRecord) && !errors.Is(err, wire.ErrInvalidName):
				t.Errorf("%s (strict=%v): untyped error %v", name, strict, err)
			case err != nil && len(err.Error()) > 512:
				t.Errorf("%s (strict=%v): an error of %d bytes", name, strict, len(err.Error()))
			case err == nil && in.Metadata == nil:
				t.Errorf("%s (strict=%v): nil metadata", name, strict)
			}
			checkMemCost(t, name, data, strict)
		}
	}
	// Some of them are records: the fields any text may fill (the
	// AegisSDK reader takes any string there too; outputs escape them),
	// the long metadata.
	for _, name := range []string{"version/esc-ctl", "version/bad-utf8", "stickyActiveGroup/esc-ctl", "metadata key/esc-ctl",
		"metadata value/plain", "metadata value/esc-ctl", "metadata value/arrays-ok", "metadata/at the limit",
		"metadata/duplicate keys", "unknown value/objects", "white space"} {
		if _, err := Decode(hostileRecords()[name], false); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"serviceName/esc-ctl", "instanceId/plain", "status/spaces", "lastHeartbeat/spaces",
		"metadata value/arrays", "metadata/many entries", "over the size"} {
		if _, err := Decode(hostileRecords()[name], false); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkDecode puts the worst records of the corpus beside the typical
// one: the figure to compare is ns/B (the cost per byte of input), with
// B/B the bytes allocated per byte.
func BenchmarkDecode(b *testing.B) {
	cases := hostileRecords()
	cases["typical"] = typicalRecord
	names := []string{"typical", "lastHeartbeat/spaces", "version/plain", "metadata value/escapes", "metadata value/pairs",
		"metadata value/bad-utf8", "metadata value/arrays-ok", "metadata value/wide", "metadata value/number",
		"metadata key/plain", "metadata/at the limit", "metadata/many entries", "metadata/duplicate keys",
		"metadata/duplicate objects", "unknown value/objects", "unknown value/arrays", "unknown keys", "folded keys",
		"duplicate version", "white space"}
	// The baseline, in the same run: encoding/json reading the same
	// record, as kitnats' reader did before (referenceDecode).
	decoders := map[string]func([]byte, bool) (Instance, error){"": Decode, "/encoding-json": referenceDecode}
	for _, name := range names {
		data := cases[name]
		for _, strict := range []bool{false, true} {
			for label, decode := range decoders {
				if label != "" && !slices.Contains([]string{"typical", "metadata value/arrays-ok", "metadata/at the limit", "unknown keys"}, name) {
					continue
				}
				benchDecode(b, fmt.Sprintf("%s/strict=%v%s", strings.ReplaceAll(name, " ", "_"), strict, label), data, strict, decode)
			}
		}
	}
}

func benchDecode(b *testing.B, name string, data []byte, strict bool, decode func([]byte, bool) (Instance, error)) {
	b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		start := time.Now()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for b.Loop() {
			_, _ = decode(data, strict)
		}
		runtime.ReadMemStats(&m1)
		per := float64(b.N) * float64(len(data))
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/per, "ns/B")
		b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/per, "B/B")
	})
}

// FuzzDecode: whatever the bytes, Decode returns a value or a typed error,
// allocates in proportion to them (a cost that grows faster than the input
// fails), agrees with encoding/json's reading of the same record (the
// reference decoder below, kitnats' reader before this one) except for
// nesting past maxDepth (encoding/json allows 10,000), and what it accepts
// it writes back the same.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(aegisExample), false)
	f.Add(typicalRecord, true)
	f.Add([]byte(`{"service_name":"s","instance_id":"i","version":"1.0.0","status":"STANDBY","last_heartbeat":"2025-08-08T05:02:34Z","metadata":{"a":1}}`), false)
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1","status":"ACTIVE","lastHeartbeat":"2025-08-08 05:02:34+05:30","metadata":null}`), false)
	f.Add([]byte(`{}`), true)
	f.Add([]byte(`[`), false)
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","extra":1}`), true)
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","ServiceName":"s"}`), false)
	f.Add([]byte(`{"SERVICENAME":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","metadata":{"o":{"x":[1, 2.5e3, true, null]}, "e":"\u00e9\ud800"}}`), false)
	f.Add([]byte("{\"serviceName\":\"s\xff\",\"instanceId\":\"i\",\"version\":\"1\",\"status\":\"ACTIVE\",\"lastHeartbeat\":\"2025-08-08T05:02:34Z\"}"), false)
	f.Fuzz(func(t *testing.T, data []byte, strict bool) {
		in, err := Decode(data, strict)
		checkMemCost(t, "input", data, strict)
		ref, rerr := referenceDecode(data, strict)
		if err != nil {
			if !errors.Is(err, ErrInvalidRecord) && !errors.Is(err, wire.ErrInvalidName) {
				t.Fatalf("untyped error %v", err)
			}
			if len(err.Error()) > 512 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			if rerr == nil && !errors.Is(err, ErrInvalidJSON) && !errors.Is(err, ErrUnknownField) {
				t.Fatalf("refused (%v) what encoding/json reads: %+v", err, ref)
			}
			return
		}
		if rerr != nil {
			t.Fatalf("accepted %+v, which encoding/json refuses: %v", in, rerr)
		}
		if !sameInstance(in, ref) {
			t.Fatalf("decoded %+v, encoding/json %+v", in, ref)
		}
		if in.Metadata == nil {
			t.Fatal("decoded metadata is nil")
		}
		checkStrict(t, data)
		// Whatever we accept and would write must read back the same.
		out, err := Encode(in)
		if err != nil {
			return // e.g. a non-semver version we read leniently
		}
		again, err := Decode(out, strict)
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

// referenceDecode is kitnats' reader before this package's decoder, on
// encoding/json, with the timestamp parser of this package (the old one
// was quadratic): the oracle FuzzDecode holds Decode to.
func referenceDecode(data []byte, strict bool) (Instance, error) {
	if len(data) > MaxRecordSize {
		return Instance{}, ErrRecordTooLarge
	}
	var w struct {
		ServiceName        json.RawMessage `json:"serviceName"`
		ServiceNameS       json.RawMessage `json:"service_name"`
		InstanceID         json.RawMessage `json:"instanceId"`
		InstanceIDS        json.RawMessage `json:"instance_id"`
		Version            json.RawMessage `json:"version"`
		Status             json.RawMessage `json:"status"`
		LastHeartbeat      json.RawMessage `json:"lastHeartbeat"`
		LastHeartbeatS     json.RawMessage `json:"last_heartbeat"`
		StickyActiveGroup  json.RawMessage `json:"stickyActiveGroup"`
		StickyActiveGroupS json.RawMessage `json:"sticky_active_group"`
		Metadata           json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return Instance{}, err
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Instance{}, errors.New("not an object")
	}
	either := func(a, b json.RawMessage) json.RawMessage {
		if len(a) != 0 {
			return a
		}
		return b
	}
	str := func(v json.RawMessage, required bool) (string, error) {
		if len(v) == 0 || string(v) == "null" {
			if required {
				return "", errors.New("missing")
			}
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	}
	var out Instance
	var err error
	if out.ServiceName, err = str(either(w.ServiceName, w.ServiceNameS), true); err != nil {
		return Instance{}, err
	}
	if out.InstanceID, err = str(either(w.InstanceID, w.InstanceIDS), true); err != nil {
		return Instance{}, err
	}
	if out.Version, err = str(w.Version, true); err != nil {
		return Instance{}, err
	}
	status, err := str(w.Status, true)
	if err != nil {
		return Instance{}, err
	}
	if out.Status = Status(status); !out.Status.Valid() {
		return Instance{}, errors.New("status")
	}
	hb, err := str(either(w.LastHeartbeat, w.LastHeartbeatS), true)
	if err != nil {
		return Instance{}, err
	}
	if out.LastHeartbeat, err = ParseTime(hb); err != nil {
		return Instance{}, err
	}
	if out.StickyActiveGroup, err = str(either(w.StickyActiveGroup, w.StickyActiveGroupS), false); err != nil {
		return Instance{}, err
	}
	out.Metadata = map[string]string{}
	if len(w.Metadata) != 0 && string(w.Metadata) != "null" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(w.Metadata, &m); err != nil {
			return Instance{}, err
		}
		if len(m) > maxMetadataEntries {
			return Instance{}, errors.New("too many")
		}
		for k, raw := range m {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				out.Metadata[k] = s
				continue
			}
			var c bytes.Buffer
			if err := json.Compact(&c, raw); err != nil {
				return Instance{}, err
			}
			out.Metadata[k] = c.String()
		}
	}
	if err := wire.ValidateService(out.ServiceName); err != nil {
		return Instance{}, err
	}
	if err := wire.ValidateInstance(out.InstanceID); err != nil {
		return Instance{}, err
	}
	if out.Version == "" {
		return Instance{}, errors.New("no version")
	}
	if strict {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(data, &top); err != nil {
			return Instance{}, err
		}
		for k := range top {
			if !knownField(k) {
				return Instance{}, errors.New("unknown field")
			}
		}
		if md, ok := top["metadata"]; ok {
			if t := bytes.TrimLeft(md, " \t\r\n"); len(t) == 0 || t[0] != '{' {
				return Instance{}, errors.New("metadata not an object")
			}
		}
		if !semver(out.Version) {
			return Instance{}, errors.New("version")
		}
	}
	return out, nil
}

package envelope_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/envelope"
)

func TestDetectEnvelopeFormat(t *testing.T) {
	for _, tc := range []struct {
		data []byte
		want envelope.Format
	}{
		{nil, envelope.JSON},
		{[]byte(`{}`), envelope.JSON},
		{[]byte(` {}`), envelope.JSON},
		{[]byte{0x7f}, envelope.JSON},
		{[]byte{0x80}, envelope.Msgpack},
		{[]byte{0x89}, envelope.Msgpack},
		{[]byte{0x9f}, envelope.Msgpack},
		{[]byte{0xa0}, envelope.JSON}, // fixstr: not an envelope's first byte to AegisSDK
		{[]byte{0xbf}, envelope.JSON},
		{[]byte{0xc0}, envelope.Msgpack},
		{[]byte{0xde}, envelope.Msgpack},
		{[]byte{0xdf}, envelope.Msgpack},
		{[]byte{0xe0}, envelope.JSON},
		{[]byte{0xff}, envelope.JSON},
	} {
		if have := envelope.Detect(tc.data); have != tc.want {
			t.Errorf("DetectEnvelopeFormat(% x) = %v, want %v", tc.data, have, tc.want)
		}
	}
}

var formats = []envelope.Format{envelope.JSON, envelope.Msgpack}

// Requests written by this package pass the strict rules of an independent
// reader (aegistest, written from AegisSDK's format), in both formats, and
// read back as written.
func TestRequestEnvelopeRoundTrip(t *testing.T) {
	in := envelope.Request{
		Head: envelope.Head{
			MessageID: "0b8e5c1f-0000-4000-8000-000000000001",
			TraceID:   "5c1f0b8e-0000-4000-8000-000000000002",
			Timestamp: "2025-08-08T05:02:24.123456+00:00",
			Source:    "caller-1a2b3c4d",
			Target:    "echo-service",
		},
		Method:  "echo",
		Params:  json.RawMessage(`{"message":"hi \"there\"\n","n":-3,"big":18446744073709551615,"f":1.5,"whole":5.0,"list":[1,"two",null,true,{"k":[]}],"u":"é✓\u2028"}`),
		Timeout: 2.5,
	}
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			data, err := in.Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			if envelope.Detect(data) != f {
				t.Fatalf("written %v, detected %v", f, envelope.Detect(data))
			}
			v, af, err := aegistest.Unmarshal(data)
			if err != nil || (af == aegistest.JSON) != (f == envelope.JSON) {
				t.Fatalf("independent reader: %v (%v)", err, af)
			}
			m, err := aegistest.CheckRequest(v, true)
			if err != nil {
				t.Fatalf("strict rules: %v\n%q", err, data)
			}
			if m["correlation_id"] != nil || m["method"] != "echo" || m["target"] != "echo-service" {
				t.Errorf("read %v", m)
			}
			if f == envelope.Msgpack {
				if _, ok := m["timeout"].(float64); !ok {
					t.Errorf("timeout is %T, want a float", m["timeout"])
				}
				p := m["params"].(map[string]any)
				if _, ok := p["whole"].(float64); !ok {
					t.Errorf("5.0 became %T, want a float", p["whole"])
				}
				if _, ok := p["n"].(int8); !ok {
					t.Errorf("-3 became %T, want an int", p["n"])
				}
			}
			out, df, err := envelope.DecodeRequest(data)
			if err != nil || df != f {
				t.Fatalf("decode: %v (%v)", err, df)
			}
			assertSameJSON(t, in.Params, out.Params)
			out.Params = in.Params
			if !reflect.DeepEqual(*out, in) {
				t.Errorf("round trip:\n have %+v\n want %+v", *out, in)
			}
			if out.Deadline() != 2500*time.Millisecond {
				t.Errorf("deadline %v", out.Deadline())
			}
		})
	}
}

func TestResponseEnvelopeRoundTrip(t *testing.T) {
	for _, in := range []envelope.Response{
		{Head: envelope.Head{MessageID: "9d2a0000-0000-4000-8000-000000000001", TraceID: "77e00000-0000-4000-8000-000000000002",
			CorrelationID: "0b8e0000-0000-4000-8000-000000000003", Timestamp: "2025-08-08T05:02:24.000000+00:00"},
			Success: true, Result: json.RawMessage(`{"echo":"hi"}`)},
		{Head: envelope.Head{MessageID: "9d2a0000-0000-4000-8000-000000000001", TraceID: "77e00000-0000-4000-8000-000000000002",
			Timestamp: "2025-08-08T05:02:24.000001+00:00"}, Success: false, Result: json.RawMessage(`null`), Error: "boom"},
		{Head: envelope.Head{MessageID: "9d2a0000-0000-4000-8000-000000000001", TraceID: "77e00000-0000-4000-8000-000000000002",
			Timestamp: "2025-08-08T05:02:24.000001+00:00"}, Success: true, Result: json.RawMessage(`[1,2.5,"x"]`)},
	} {
		for _, f := range formats {
			data, err := in.Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := aegistest.DecodeReply(data)
			if err != nil {
				t.Fatalf("%v: strict rules: %v", f, err)
			}
			if r.Success != in.Success || r.Error != in.Error {
				t.Errorf("%v: independent reader: %+v", f, r)
			}
			out, _, err := envelope.DecodeResponse(data)
			if err != nil {
				t.Fatalf("%v: %v", f, err)
			}
			assertSameJSON(t, in.Result, out.Result)
			out.Result = in.Result
			if !reflect.DeepEqual(*out, in) {
				t.Errorf("%v round trip:\n have %+v\n want %+v", f, *out, in)
			}
		}
	}
}

func assertSameJSON(t *testing.T, want, have json.RawMessage) {
	t.Helper()
	var w, h any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(have, &h); err != nil {
		t.Fatalf("%q: %v", have, err)
	}
	if !reflect.DeepEqual(w, h) {
		t.Errorf("JSON:\n have %s\n want %s", have, want)
	}
}

// Keys with defaults may be absent, as to AegisSDK's reader.
func TestEnvelopeDefaults(t *testing.T) {
	for _, f := range []aegistest.Format{aegistest.JSON, aegistest.Msgpack} {
		data, _ := aegistest.Marshal(f, map[string]any{"method": "echo"})
		r, _, err := envelope.DecodeRequest(data)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		if r.Method != "echo" || r.Deadline() != envelope.DefaultTimeout || r.Params != nil {
			t.Errorf("%v: %+v", f, r)
		}
		data, _ = aegistest.Marshal(f, map[string]any{"method": "echo", "timeout": 3}) // an int
		if r, _, err = envelope.DecodeRequest(data); err != nil || r.Deadline() != 3*time.Second {
			t.Errorf("%v: integer timeout: %v %+v", f, err, r)
		}
		data, _ = aegistest.Marshal(f, map[string]any{"method": "echo", "timeout": 1e12})
		if r, _, err = envelope.DecodeRequest(data); err != nil || r.Deadline() != 24*time.Hour {
			t.Errorf("%v: huge timeout: %v %+v", f, err, r)
		}
		data, _ = aegistest.Marshal(f, map[string]any{"success": false, "error": "x"})
		if r, _, err := envelope.DecodeResponse(data); err != nil || string(r.Result) != "null" {
			t.Errorf("%v: minimal response: %v %+v", f, err, r)
		}
	}
}

// Every way a request or a response can break AegisSDK's strict rules is
// refused, in both formats.
func TestEnvelopeStrictness(t *testing.T) {
	req := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{"message_id": "a", "trace_id": "b", "correlation_id": nil, "timestamp": "t",
			"source": nil, "target": nil, "method": "echo", "params": map[string]any{}, "timeout": 5.0}
		mod(m)
		return m
	}
	resp := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{"message_id": "a", "trace_id": "b", "correlation_id": nil, "timestamp": "t",
			"source": nil, "target": nil, "success": true, "result": nil, "error": nil}
		mod(m)
		return m
	}
	requests := map[string]map[string]any{
		"unknown key":        req(func(m map[string]any) { m["extra"] = 1 }),
		"upper-case key":     req(func(m map[string]any) { delete(m, "method"); m["Method"] = "echo" }),
		"null message_id":    req(func(m map[string]any) { m["message_id"] = nil }),
		"null trace_id":      req(func(m map[string]any) { m["trace_id"] = nil }),
		"null timestamp":     req(func(m map[string]any) { m["timestamp"] = nil }),
		"null method":        req(func(m map[string]any) { m["method"] = nil }),
		"no method":          req(func(m map[string]any) { delete(m, "method") }),
		"numeric method":     req(func(m map[string]any) { m["method"] = 1 }),
		"numeric source":     req(func(m map[string]any) { m["source"] = 1 }),
		"null params":        req(func(m map[string]any) { m["params"] = nil }),
		"list params":        req(func(m map[string]any) { m["params"] = []any{1} }),
		"string params":      req(func(m map[string]any) { m["params"] = "x" }),
		"zero timeout":       req(func(m map[string]any) { m["timeout"] = 0 }),
		"negative timeout":   req(func(m map[string]any) { m["timeout"] = -1.5 }),
		"string timeout":     req(func(m map[string]any) { m["timeout"] = "5" }),
		"bool timeout":       req(func(m map[string]any) { m["timeout"] = true }),
		"null timeout":       req(func(m map[string]any) { m["timeout"] = nil }),
		"bool correlation":   req(func(m map[string]any) { m["correlation_id"] = false }),
		"not a map":          {"": nil}, // replaced below
		"nested unknown key": req(func(m map[string]any) { m["params"] = map[string]any{"ok": 1}; m["x"] = nil }),
	}
	responses := map[string]map[string]any{
		"unknown key":          resp(func(m map[string]any) { m["extra"] = 1 }),
		"no success":           resp(func(m map[string]any) { delete(m, "success") }),
		"null success":         resp(func(m map[string]any) { m["success"] = nil }),
		"string success":       resp(func(m map[string]any) { m["success"] = "true" }),
		"error in success":     resp(func(m map[string]any) { m["error"] = "x" }),
		"null error failure":   resp(func(m map[string]any) { m["success"] = false }),
		"numeric error":        resp(func(m map[string]any) { m["success"] = false; m["error"] = 1 }),
		"null message_id":      resp(func(m map[string]any) { m["message_id"] = nil }),
		"numeric timestamp":    resp(func(m map[string]any) { m["timestamp"] = 1 }),
		"request keys instead": req(func(map[string]any) {}),
	}
	for _, f := range []aegistest.Format{aegistest.JSON, aegistest.Msgpack} {
		for name, m := range requests {
			var data []byte
			if name == "not a map" {
				data, _ = aegistest.Marshal(f, []any{"echo"})
			} else {
				data, _ = aegistest.Marshal(f, m)
			}
			if _, _, err := envelope.DecodeRequest(data); !errors.Is(err, envelope.ErrMalformed) {
				t.Errorf("%v request, %s: err %v, want ErrMalformedEnvelope", f, name, err)
			}
		}
		for name, m := range responses {
			data, _ := aegistest.Marshal(f, m)
			if _, _, err := envelope.DecodeResponse(data); !errors.Is(err, envelope.ErrMalformed) {
				t.Errorf("%v response, %s: err %v, want ErrMalformedEnvelope", f, name, err)
			}
		}
	}
	// What only one format can get wrong.
	good, _ := aegistest.Marshal(aegistest.Msgpack, req(func(map[string]any) {}))
	if _, _, err := envelope.DecodeRequest(good); err != nil {
		t.Fatalf("the base request is refused: %v", err)
	}
	binMethod := msgpackMap(t, "method", []byte("echo"))
	extTimestamp := msgpackMap(t, "method", "echo", "timestamp", time.Unix(1, 0))
	intKey := mustMsgpack(t, map[any]any{"method": "echo", "params": map[any]any{1: "x"}})
	nanTimeout := msgpackMap(t, "method", "echo", "timeout", math.NaN())
	infTimeout := msgpackMap(t, "method", "echo", "timeout", math.Inf(1))
	extParam := msgpackMap(t, "method", "echo", "params", map[string]any{"at": time.Unix(1, 0)})
	nanParam := msgpackMap(t, "method", "echo", "params", map[string]any{"x": math.NaN()})
	for name, data := range map[string][]byte{
		"msgpack trailing bytes":   append(append([]byte(nil), good...), 0xc0),
		"msgpack truncated":        good[:len(good)-3],
		"msgpack bin string":       binMethod,
		"msgpack timestamp ext":    extTimestamp,
		"msgpack int map key":      intKey,
		"msgpack NaN timeout":      nanTimeout,
		"msgpack infinite timeout": infTimeout,
		"msgpack ext in params":    extParam,
		"msgpack NaN in params":    nanParam,
		"msgpack nil":              {0xc0},
		"JSON trailing garbage":    []byte(`{"method":"echo"} x`),
		"JSON null":                []byte(`null`),
		"JSON empty":               nil,
		"JSON duplicate-free bad":  []byte(`{"method":"echo","timeout":1e400}`),
	} {
		if _, _, err := envelope.DecodeRequest(data); !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformedEnvelope", name, err)
		}
	}
}

func msgpackMap(t *testing.T, kv ...any) []byte {
	t.Helper()
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return mustMsgpack(t, m)
}

func mustMsgpack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// msgpack params reach the handler as the JSON of the same value: every
// scalar type, nesting, key order, strings that need escaping, bin as
// base64.
func TestMsgpackParamsAsJSON(t *testing.T) {
	params := map[string]any{
		"s": "é \"q\" \\ \n\t\x01 ✓", "i": -7, "u": uint64(math.MaxUint64), "i64": int64(math.MinInt64),
		"f": 0.1, "f32": float32(1.5), "whole": 2.0, "tiny": 1e-9, "huge": 1e300, "t": true, "n": nil,
		"bin": []byte{0, 1, 2, 0xff}, "list": []any{[]any{}, map[string]any{}}, "deep": map[string]any{"a": map[string]any{"b": "c"}},
	}
	data := msgpackMap(t, "method", "echo", "params", params)
	r, _, err := envelope.DecodeRequest(data)
	if err != nil {
		t.Fatal(err)
	}
	var have map[string]any
	d := json.NewDecoder(strings.NewReader(string(r.Params)))
	d.UseNumber()
	if err := d.Decode(&have); err != nil {
		t.Fatalf("%s: %v", r.Params, err)
	}
	want := map[string]string{"i": "-7", "u": "18446744073709551615", "i64": "-9223372036854775808",
		"f": "0.1", "f32": "1.5", "whole": "2.0", "tiny": "1e-09", "huge": "1e+300"}
	for k, w := range want {
		if n, ok := have[k].(json.Number); !ok || string(n) != w {
			t.Errorf("%s: %v (%T), want %s", k, have[k], have[k], w)
		}
	}
	if have["s"] != params["s"] || have["t"] != true || have["n"] != nil || have["bin"] != "AAEC/w==" {
		t.Errorf("params: %s", r.Params)
	}
	if !strings.Contains(string(r.Params), `"deep":{"a":{"b":"c"}}`) || !strings.Contains(string(r.Params), `"list":[[],{}]`) {
		t.Errorf("params: %s", r.Params)
	}

	// And back: JSON params written as msgpack keep integers integers and
	// floats floats, strings str.
	out := envelope.Request{Method: "echo", Params: json.RawMessage(`{"i":-7,"u":18446744073709551615,"f":2.0,"e":1e3,"s":"x","big":1e400}`)}
	if _, err := out.Encode(envelope.Msgpack); err == nil {
		t.Error("a number beyond float64 was written")
	}
	out.Params = json.RawMessage(`{"i":-7,"u":18446744073709551615,"f":2.0,"e":1e3,"s":"x"}`)
	b, err := out.Encode(envelope.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := aegistest.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	p := v.(map[string]any)["params"].(map[string]any)
	if _, ok := p["i"].(int8); !ok {
		t.Errorf("i is %T", p["i"])
	}
	if p["u"] != uint64(math.MaxUint64) || p["f"] != 2.0 || p["e"] != 1000.0 || p["s"] != "x" {
		t.Errorf("params %#v", p)
	}
}

func TestEnvelopeWritersRefuse(t *testing.T) {
	for _, f := range formats {
		if _, err := (&envelope.Request{Method: "m", Params: json.RawMessage(`[1]`)}).Encode(f); err == nil {
			t.Errorf("%v: params that are not an object were written", f)
		}
		if _, err := (&envelope.Response{Success: true, Result: json.RawMessage(`{`)}).Encode(f); err == nil {
			t.Errorf("%v: a result that is not JSON was written", f)
		}
	}
}

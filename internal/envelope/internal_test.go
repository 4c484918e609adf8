package envelope

import (
	"bytes"
	"encoding/json"

	"reflect"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/hostile"
	"github.com/vmihailenco/msgpack/v5"
)

// EachMember splits an object exactly as encoding/json does (the last of
// repeated keys wins there too), and refuses whatever encoding/json does not
// read as an object.
func FuzzEachMember(f *testing.F) {
	for _, s := range []string{`{}`, ` { "a" : 1 , "b":[1,{"c":"}"}],"a":"x\"y"} `, `{"\u0061":null}`, `[]`, `null`, `{"a":1`, `{"a":"\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hostile.Linear(t, "EachMember", data, 2, 64+float64(len(data))/8, func() {
			_ = EachMember(data, func(k, v []byte) error { return nil })
		})
		var want map[string]json.RawMessage
		werr := json.Unmarshal(data, &want)
		have := map[string]json.RawMessage{}
		herr := EachMember(data, func(k, v []byte) error {
			have[string(k)] = v
			return nil
		})
		if werr != nil || want == nil {
			if herr == nil {
				t.Fatalf("%q: read as an object: %v", data, have)
			}
			return
		}
		if herr != nil {
			t.Fatalf("%q: %v", data, herr)
		}
		if len(have) != len(want) {
			t.Fatalf("%q: %v, want %v", data, have, want)
		}
		for k, v := range want {
			if string(have[k]) != string(v) {
				t.Fatalf("%q: %q = %q, want %q", data, k, have[k], v)
			}
		}
	})
}

// Reading a JSON envelope allocates its strings and nothing else: keys
// are compared in place, params and result are slices of the data.
func TestJSONDecodersDoNotAllocateForKeys(t *testing.T) {
	data := []byte(`{"message_id":"a","trace_id":"b","correlation_id":null,"timestamp":"t","source":null,"target":null,"method":"m","params":{"x":1},"timeout":5.0}`)
	var r Request
	allocs := testing.AllocsPerRun(100, func() {
		r = Request{}
		if err := r.decode(data, JSON, false); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 5 { // the five non-null strings
		t.Errorf("%v allocations", allocs)
	}
}

// JSON written as msgpack reads back as the same JSON value.
func FuzzJSONToMsgpack(f *testing.F) {
	for _, s := range []string{`{"a":[1,-2,3.5,"x",null,true,false,{}],"b":{"c":"\u00e9\n"}}`, `18446744073709551615`, `-9223372036854775809`, `1e400`, `"\ud800"`, ` [ ] `, `{"k":"` + "\xff" + `"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		hostile.Linear(t, "JSON to msgpack", data, 16, 64, func() { _, _ = appendJSONAsMsgpack(nil, data) })
		mp, err := appendJSONAsMsgpack(nil, data)
		if err != nil {
			return // a number beyond float64
		}
		hostile.Linear(t, "msgpack to JSON", mp, 16, 64, func() { c := cursor{data: mp}; _, _ = c.toJSON(nil) })
		c := cursor{data: mp}
		back, err := c.toJSON(nil)
		if err != nil || c.left() != 0 {
			t.Fatalf("%q → % x: %v", data, mp, err)
		}
		var want, have any
		if json.Unmarshal(data, &want) != nil || json.Unmarshal(back, &have) != nil {
			t.Fatalf("%q → %q", data, back)
		}
		if !reflect.DeepEqual(want, have) {
			t.Fatalf("%q → %q", data, back)
		}
	})
}

// The cursor steps over a value exactly where vmihailenco/msgpack's decoder
// does, and converts what that decoder reads to the same JSON: the
// library is the reference for the format, the cursor the reader that
// survives hostile input.
func FuzzCursorAgainstLibrary(f *testing.F) {
	for _, s := range []string{"\x81\xa1a\x01", "\x93\xc0\xc2\xc3", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
		"\xda\x00\x02ab", "\xc4\x02\x00\xff", "\xd4\x01\x02", "\xc1", "\xdc\x00\x01\xa0", "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", "\xd0\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return // the library recurses
		}
		d := msgpack.NewDecoder(bytes.NewReader(data))
		libErr := d.Skip()
		libEnd := len(data) - d.Buffered().(*bytes.Reader).Len()
		c := cursor{data: data}
		err := c.skip()
		if (err == nil) != (libErr == nil) || err == nil && c.i != libEnd {
			t.Fatalf("% x: skip to %d (%v), library to %d (%v)", data, c.i, err, libEnd, libErr)
		}
		if err != nil {
			return
		}
		c = cursor{data: data}
		js, err := c.toJSON(nil)
		if err != nil {
			return // an extension, a non-str key, NaN: no JSON form
		}
		var lib any
		if msgpack.Unmarshal(data[:libEnd], &lib) != nil {
			t.Fatalf("% x: converted, but the library does not read it", data)
		}
		var have any
		if err := json.Unmarshal(js, &have); err != nil {
			t.Fatalf("% x → %s: %v", data, js, err)
		}
		if want := libJSON(lib); !reflect.DeepEqual(have, want) {
			t.Fatalf("% x → %s, library %v", data, js, want)
		}
	})
}

// libJSON is what the library's value is as JSON, read back generically:
// bin as base64, float32 widened exactly as the cursor widens it.
func libJSON(v any) any {
	b, _ := json.Marshal(widen(v))
	var back any
	_ = json.Unmarshal(b, &back)
	return back
}

func widen(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = widen(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = widen(x)
		}
		return s
	case float32:
		return float64(v)
	}
	return v
}

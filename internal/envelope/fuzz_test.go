package envelope_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/hostile"
)

// envelopeSeeds are requests and responses in both formats, well formed and
// not, for the fuzz targets.
func envelopeSeeds(f *testing.F) {
	req := map[string]any{"message_id": "0b8e5c1f-0000-4000-8000-000000000001", "trace_id": "t", "correlation_id": nil,
		"timestamp": "2025-08-08T05:02:24.123456+00:00", "source": "caller-1", "target": "echo", "method": "echo",
		"params": map[string]any{"message": "hi", "n": []any{1, -2, 3.5, nil, true, map[string]any{"x": "é"}}}, "timeout": 5.0}
	resp := map[string]any{"message_id": "m", "trace_id": "t", "correlation_id": "c", "timestamp": "ts",
		"source": nil, "target": nil, "success": true, "result": map[string]any{"echo": "hi"}, "error": nil}
	notActive := map[string]any{"success": true, "result": map[string]any{"success": false, "error": "NOT_ACTIVE", "message": "standby", "result": nil}}
	failure := map[string]any{"success": false, "result": nil, "error": "NOT_ACTIVE: standby"}
	for _, fm := range []aegistest.Format{aegistest.JSON, aegistest.Msgpack} {
		for _, v := range []any{req, resp, notActive, failure, map[string]any{"method": "m"}, []any{1}} {
			b, err := aegistest.Marshal(fm, v)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(hostile.DeepMsgpack(200))
	f.Add(append([]byte("\x82\xa6method\xa1m\xa6params"), hostile.DeepMsgpack(100)...))
	f.Add([]byte(`{"method":"m","params":` + string(hostile.DeepJSONObject(100)) + `}`))
	f.Add([]byte(`{"method":"m","params":null}`))
	f.Add([]byte(`{"err":"boom"}`))
	f.Add([]byte("\x81\xa6method\xc4\x01m"))
	f.Add([]byte("\x81\xa6params\xd6\xff\x00\x00\x00\x01"))
}

func validUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

func sameJSON(t *testing.T, a, b json.RawMessage) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("JSON differs:\n%s\n%s", a, b)
	}
}

// linear fails t when reading data costs more than the package's bounds:
// bytes and allocations per byte of input. Quadratic work shows as
// allocation growing faster than the input.
func linear(t *testing.T, data []byte, read func()) {
	t.Helper()
	hostile.Linear(t, "reading", data, maxBytesPerByte, fixedAllocs+maxAllocsPerByte*float64(len(data)), read)
}

// A request either decodes — and then writes back in both formats and reads
// again as the same request — or fails with ErrMalformedEnvelope, with
// bounded error text, at a cost linear in its size. Never a panic.
func FuzzDecodeRequestEnvelope(f *testing.F) {
	envelopeSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		linear(t, data, func() { _, _, _ = envelope.DecodeRequest(data) })
		linear(t, data, func() { _, _, _, _ = envelope.SniffRequest(data) })
		r, _, err := envelope.DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, envelope.ErrMalformed) || r != nil {
				t.Fatalf("error %v does not match ErrMalformedEnvelope", err)
			}
			if len(err.Error()) > maxErrorText {
				t.Fatalf("error text of %d bytes", len(err.Error()))
			}
			return
		}
		if r.Method == "" && !json.Valid(data) && envelope.Detect(data) == envelope.JSON {
			t.Fatal("invalid JSON decoded")
		}
		if r.Params != nil {
			var m map[string]any
			if err := json.Unmarshal(r.Params, &m); err != nil || m == nil {
				t.Fatalf("params %q are not a JSON object: %v", r.Params, err)
			}
		}
		if r.Deadline() <= 0 {
			t.Fatalf("deadline %v", r.Deadline())
		}
		if !validUTF8(r.MessageID, r.TraceID, r.CorrelationID, r.Timestamp, r.Source, r.Target, r.Method) {
			return // JSON cannot carry it as is
		}
		for _, fm := range []envelope.Format{envelope.JSON, envelope.Msgpack} {
			b, err := r.Encode(fm)
			if err != nil {
				if fm == envelope.Msgpack {
					continue // a JSON number beyond float64 has no msgpack form
				}
				t.Fatalf("%v: %v", fm, err)
			}
			back, bf, err := envelope.DecodeRequest(b)
			if err != nil || bf != fm {
				t.Fatalf("%v: %q: %v", fm, b, err)
			}
			if back.Params != nil || r.Params != nil {
				p := r.Params
				if p == nil {
					p = json.RawMessage("{}")
				}
				sameJSON(t, p, back.Params)
			}
			if back.Deadline() != r.Deadline() {
				t.Fatalf("%v: deadline %v, want %v", fm, back.Deadline(), r.Deadline())
			}
			back.Params, back.Timeout = r.Params, r.Timeout
			if !reflect.DeepEqual(*back, *r) {
				t.Fatalf("%v round trip:\n%+v\n%+v", fm, *back, *r)
			}
		}
	})
}

// A response either decodes — success with a JSON result and no error, or
// failure with an error — and writes back as itself, or fails with
// ErrMalformedEnvelope.
func FuzzDecodeResponseEnvelope(f *testing.F) {
	envelopeSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		linear(t, data, func() { _, _, _ = envelope.DecodeResponse(data) })
		r, _, err := envelope.DecodeResponse(data)
		if err != nil {
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformedEnvelope", err)
			}
			if len(err.Error()) > maxErrorText {
				t.Fatalf("error text of %d bytes", len(err.Error()))
			}
			return
		}
		if !json.Valid(r.Result) || r.Success && r.Error != "" {
			t.Fatalf("decoded %+v", r)
		}
		if !validUTF8(r.MessageID, r.TraceID, r.CorrelationID, r.Timestamp, r.Source, r.Target, r.Error) {
			return
		}
		for _, fm := range []envelope.Format{envelope.JSON, envelope.Msgpack} {
			b, err := r.Encode(fm)
			if err != nil {
				if fm == envelope.Msgpack {
					continue
				}
				t.Fatalf("%v: %v", fm, err)
			}
			back, _, err := envelope.DecodeResponse(b)
			if err != nil {
				t.Fatalf("%v: %q: %v", fm, b, err)
			}
			sameJSON(t, r.Result, back.Result)
			back.Result = r.Result
			if !reflect.DeepEqual(*back, *r) {
				t.Fatalf("%v round trip:\n%+v\n%+v", fm, *back, *r)
			}
		}
	})
}

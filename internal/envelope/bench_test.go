package envelope_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/hostile"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// typicalRequest and typicalResponse are the envelopes of
// BenchmarkEnvelope's call: a 128-byte JSON payload.
func typicalRequest(f aegistest.Format) []byte {
	b, _ := aegistest.Marshal(f, map[string]any{"message_id": "0b8e5c1f-0000-4000-8000-000000000001",
		"trace_id": "5c1f0b8e-0000-4000-8000-000000000002", "correlation_id": nil,
		"timestamp": "2025-08-08T05:02:24.123456+00:00", "source": nil, "target": "bench", "method": "echo",
		"params": map[string]any{"id": 1, "body": strings.Repeat("x", 108)}, "timeout": 5.0})
	return b
}

func typicalResponse(f aegistest.Format) []byte {
	b, _ := aegistest.Marshal(f, map[string]any{"message_id": "0b8e5c1f-0000-4000-8000-000000000001",
		"trace_id": "5c1f0b8e-0000-4000-8000-000000000002", "correlation_id": "0b8e5c1f-0000-4000-8000-000000000003",
		"timestamp": "2025-08-08T05:02:24.123456+00:00", "source": nil, "target": nil, "success": true,
		"result": map[string]any{"id": 1, "body": strings.Repeat("x", 108)}, "error": nil})
	return b
}

// BenchmarkDecode puts each decoder's worst hostile inputs beside its
// typical message, in the same run: compare the MB/s (bytes of input read
// per second) of the hostile inputs with the typical one's. The hostile
// inputs are the costliest per byte of the corpus of hostile_test.go, at
// the default max payload (or the depth limit).
func BenchmarkDecode(b *testing.B) {
	long := hostile.Long(size)
	escaped := `{"method":"m","source":"` + strings.Repeat(`\u00e9\ud83d\ude00\n`, size/20) + `"}`
	nils := append(mp(nil).arrayLen(size), bytes.Repeat([]byte{0xc0}, size)...)
	dupJSON := []byte(`{` + strings.Repeat(`"\u006dethod":"m",`, size/18) + `"method":"m"}`)
	dupMsgpack := mp(nil).mapLen(size / 10)
	for range size / 10 {
		dupMsgpack = dupMsgpack.str("method").str("m")
	}
	requests := []struct {
		name string
		data []byte
	}{
		{"typical-json", typicalRequest(aegistest.JSON)},
		{"typical-msgpack", typicalRequest(aegistest.Msgpack)},
		{"hostile-json-escapes", []byte(escaped)},
		{"hostile-json-duplicate-escaped-keys", dupJSON},
		{"hostile-json-deep", []byte(`{"method":"m","params":` + string(hostile.DeepJSONObject(size/5)) + `}`)},
		{"hostile-msgpack-deep-bomb", request("params", hostile.DeepMsgpack(size/3))},
		{"hostile-msgpack-deep-limit", request("params", hostile.DeepMsgpack(rpclimit.MaxDepth))},
		{"hostile-msgpack-control-bytes", request("params", mp(nil).mapLen(1).str("a").str(strings.Repeat("\x01", size)))},
		{"hostile-msgpack-nils", request("params", append(mp(nil).mapLen(1).str("a"), nils...))},
		{"hostile-msgpack-long-fields", request("source", long, "target", long)},
		{"hostile-msgpack-duplicate-keys", dupMsgpack},
	}
	for _, r := range requests {
		b.Run("request/"+r.name, func(b *testing.B) {
			b.SetBytes(int64(len(r.data)))
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = envelope.DecodeRequest(r.data)
			}
		})
		b.Run("sniff/"+r.name, func(b *testing.B) {
			b.SetBytes(int64(len(r.data)))
			b.ReportAllocs()
			for b.Loop() {
				_, _, _, _ = envelope.SniffRequest(r.data)
			}
		})
	}
	responses := []struct {
		name string
		data []byte
	}{
		{"typical-json", typicalResponse(aegistest.JSON)},
		{"typical-msgpack", typicalResponse(aegistest.Msgpack)},
		{"hostile-json-deep", []byte(`{"success":true,"result":` + string(hostile.DeepJSON(size/2)) + `,"error":null}`)},
		{"hostile-msgpack-deep-limit", response(hostile.DeepMsgpackArray(rpclimit.MaxDepth))},
		{"hostile-msgpack-nils", response(nils)},
		{"hostile-msgpack-control-bytes", response(mp(nil).str(strings.Repeat("\x01", size)))},
		{"hostile-msgpack-invalid-utf8", response(mp(nil).str(strings.Repeat("\xff", size)))},
	}
	for _, r := range responses {
		b.Run("response/"+r.name, func(b *testing.B) {
			b.SetBytes(int64(len(r.data)))
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = envelope.DecodeResponse(r.data)
			}
		})
	}
}

// BenchmarkEncodeMsgpack is JSON → msgpack, a result's way to an AegisSDK
// caller: the typical result beside the quadratic case of issue 16 (900 KB
// nested 9,990 deep, 4.5 s before) and numbers, the costliest to convert.
func BenchmarkEncodeMsgpack(b *testing.B) {
	deep := string(hostile.DeepJSON(rpclimit.MaxDepth - 10))
	for _, c := range []struct {
		name   string
		result []byte
	}{
		{"typical", []byte(`{"id":1,"body":"` + strings.Repeat("x", 108) + `"}`)},
		{"hostile-deep", []byte(`[` + strings.Repeat(`"`+strings.Repeat("x", 80)+`",`, (size-len(deep))/83) + deep + `]`)},
		{"hostile-deep-only", hostile.DeepJSON(rpclimit.MaxDepth)},
		{"hostile-numbers", []byte(`[` + strings.Repeat(`1.5e300,`, size/8) + `1]`)},
		{"hostile-escapes", []byte(`"` + strings.Repeat(`\u00e9\ud83d\ude00\n`, size/20) + `"`)},
	} {
		r := envelope.Response{Success: true, Result: c.result}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.result)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Encode(envelope.Msgpack); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

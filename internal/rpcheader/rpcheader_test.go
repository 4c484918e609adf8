package rpcheader_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/internal/hostile"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

func TestTimeoutHeader(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 1500 * time.Millisecond, 1499999 * time.Microsecond, time.Hour} {
		v, ok := rpcheader.FormatTimeout(d)
		if !ok {
			t.Fatalf("FormatTimeout(%v): not ok", d)
		}
		have, err := rpcheader.ParseTimeout(v)
		if err != nil {
			t.Fatalf("ParseTimeout(%q): %v", v, err)
		}
		if want := d.Truncate(time.Millisecond); have != want {
			t.Errorf("round trip %v: want %v, have %v", d, want, have)
		}
	}
	if _, ok := rpcheader.FormatTimeout(999 * time.Microsecond); ok {
		t.Error("FormatTimeout(<1ms): want not ok")
	}
	if _, ok := rpcheader.FormatTimeout(-time.Second); ok {
		t.Error("FormatTimeout(<0): want not ok")
	}
	for _, bad := range []string{"", "-5", "+5", "5s", " 5", "1e3", "0x10", "1234567890123", "١٢"} {
		if _, err := rpcheader.ParseTimeout(bad); !errors.Is(err, rpcheader.ErrMalformed) {
			t.Errorf("ParseTimeout(%q): want ErrMalformed, have %v", bad, err)
		}
	}
}

func TestErrorHeaders(t *testing.T) {
	for _, want := range []rpcheader.Status{
		{Code: 404, Message: "no such user"},
		{Code: 422, Message: "insufficient funds", Business: true},
		{Code: 503, Message: "draining"},
	} {
		h := nats.Header{}
		rpcheader.EncodeStatus(h, want)
		have, failed, err := rpcheader.DecodeStatus(h)
		if err != nil || !failed {
			t.Fatalf("DecodeStatus: %v %v", failed, err)
		}
		if have != want {
			t.Errorf("want %+v, have %+v", want, have)
		}
	}
	if s, failed, err := rpcheader.DecodeStatus(nats.Header{"Other": {"x"}}); failed || err != nil {
		t.Errorf("no status headers: want a success; have %+v, %v", s, err)
	}
}

func TestEncodeStatusSanitizes(t *testing.T) {
	h := nats.Header{}
	rpcheader.EncodeStatus(h, rpcheader.Status{Code: 7, Message: "line one\r\nline two\x00" + strings.Repeat("x", 5000)})
	if have := h.Get(rpcheader.ErrorCode); have != "500" {
		t.Errorf("out-of-range code: want 500, have %q", have)
	}
	msg := h.Get(rpcheader.Error)
	if strings.ContainsAny(msg, "\r\n\x00") {
		t.Errorf("message keeps control characters: %q", msg[:40])
	}
	if len(msg) > 1024 {
		t.Errorf("message not bounded: %d bytes", len(msg))
	}
}

func TestDecodeMalformedStatus(t *testing.T) {
	for _, h := range []nats.Header{
		{rpcheader.Error: {"boom"}, rpcheader.ErrorCode: {"abc"}},
		{rpcheader.Error: {"boom"}},
		{rpcheader.ErrorCode: {"5000"}},
		{rpcheader.ErrorCode: {"099"}},
		{rpcheader.ErrorCode: {}},
		{rpcheader.Error: {}},
	} {
		s, failed, err := rpcheader.DecodeStatus(h)
		if !errors.Is(err, rpcheader.ErrMalformed) {
			t.Errorf("%v: want ErrMalformed, have %v", h, err)
		}
		// A garbled status is still a failure, never a success.
		if !failed || s.Code != rpcheader.CodeInternal || s.Message == "" {
			t.Errorf("%v: want a CodeInternal failure with a message, have %+v", h, s)
		}
	}
}

func TestCarrierKeepsLowerCaseKeys(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	h := nats.Header{}
	propagation.TraceContext{}.Inject(ctx, rpcheader.Carrier(h))
	if want, have := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", h.Get("traceparent"); have != want {
		t.Fatalf("traceparent: want %q, have %q (header %v)", want, have, h)
	}
	if _, ok := h["Traceparent"]; ok {
		t.Error("canonicalised key Traceparent written")
	}
	got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), rpcheader.Carrier(h)))
	if !got.Equal(sc.WithRemote(true)) {
		t.Errorf("extract: want %v, have %v", sc, got)
	}
	if keys := rpcheader.Carrier(h).Keys(); len(keys) != 1 || keys[0] != "traceparent" {
		t.Errorf("Keys: want [traceparent], have %v", keys)
	}
}

// FuzzParseTimeout: the deadline header decoder never panics, accepts only
// what FormatTimeout writes, and round-trips what it accepts, at a cost
// that does not grow with the value (it reads at most 12 digits).
func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"1500", "0", "", "-1", "999999999999", "9999999999999", "1.5", "5s", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hostile.Linear(t, "ParseTimeout", []byte(s), 0.5, 8, func() { _, _ = rpcheader.ParseTimeout(s) })
		d, err := rpcheader.ParseTimeout(s)
		if err != nil {
			if !errors.Is(err, rpcheader.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if len(err.Error()) > rpclimit.MaxQuoted+64 {
				t.Fatalf("error text of %d bytes", len(err.Error()))
			}
			return
		}
		if d < 0 {
			t.Fatalf("negative duration %v from %q", d, s)
		}
		if d > 0 {
			v, ok := rpcheader.FormatTimeout(d)
			if d2, _ := rpcheader.ParseTimeout(v); !ok || d2 != d {
				t.Fatalf("%q → %v → %q → %v", s, d, v, d2)
			}
		}
	})
}

// FuzzDecodeStatus: the error-status decoder never panics, reports a
// failure whenever a status header is present, keeps its message bounded,
// and what EncodeStatus writes decodes to the same code.
func FuzzDecodeStatus(f *testing.F) {
	f.Add("boom", "500", "", true, true)
	f.Add("nope", "422", "business", true, true)
	f.Add("", "abc", "", false, true)
	f.Add("x\r\ny", "1000", "other", true, false)
	f.Add(hostile.Long(5000), hostile.Long(300), hostile.Controls, true, true)
	f.Fuzz(func(t *testing.T, msg, code, kind string, hasMsg, hasCode bool) {
		h := nats.Header{rpcheader.ErrorKind: {kind}}
		if hasMsg {
			h[rpcheader.Error] = []string{msg}
		}
		if hasCode {
			h[rpcheader.ErrorCode] = []string{code}
		}
		hostile.Linear(t, "DecodeStatus", []byte(msg+code+kind), 4, 24, func() { _, _, _ = rpcheader.DecodeStatus(h) })
		s, failed, err := rpcheader.DecodeStatus(h)
		if !hasMsg && !hasCode {
			if failed || err != nil {
				t.Fatalf("no status: have %+v, %v", s, err)
			}
			return
		}
		if !failed {
			t.Fatal("status present but decoded as success")
		}
		if err != nil && !errors.Is(err, rpcheader.ErrMalformed) {
			t.Fatalf("error %v is not ErrMalformed", err)
		}
		if s.Code < 100 || s.Code > 999 {
			t.Fatalf("code %d out of range", s.Code)
		}
		if len(s.Message) > rpclimit.MaxErrorMessage+rpclimit.MaxQuoted+64 {
			t.Fatalf("message of %d bytes", len(s.Message))
		}
		h2 := nats.Header{}
		rpcheader.EncodeStatus(h2, s)
		s2, _, err := rpcheader.DecodeStatus(h2)
		if err != nil || s2.Code != s.Code || s2.Business != s.Business {
			t.Fatalf("re-encode: want %+v, have %+v, %v", s, s2, err)
		}
	})
}

// FuzzTraceHeaders: extracting trace context from arbitrary traceparent and
// tracestate values through Carrier never panics, and yields either no
// span context or a valid remote one.
func FuzzTraceHeaders(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
	f.Add("ff-0-0-0", "")
	f.Add("00-00000000000000000000000000000000-0000000000000000-00", "a=b,c")
	f.Fuzz(func(t *testing.T, tp, ts string) {
		h := nats.Header{rpcheader.Traceparent: {tp}, rpcheader.Tracestate: {ts}}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), rpcheader.Carrier(h)))
		if sc.IsValid() && !sc.IsRemote() {
			t.Fatalf("extracted span context not remote: %v", sc)
		}
	})
}

func TestGoKitError(t *testing.T) {
	for body, want := range map[string]string{
		`{"err":"boom"}`:               "boom",
		`{"err":""}`:                   "",
		` {"err" : "a \"b\" \u003c"} `: `a "b" <`,
	} {
		if msg, ok := rpcheader.GoKitError([]byte(body)); !ok || msg != want {
			t.Errorf("%s: %q %v, want %q", body, msg, ok, want)
		}
	}
	for _, body := range []string{``, `{}`, `{"err":null}`, `{"err":1}`, `{"err":"x","v":1}`, `{"Err":"x"}`, `["err"]`, `{"err":"x"`, `"err"`} {
		if msg, ok := rpcheader.GoKitError([]byte(body)); ok {
			t.Errorf("%s: read as go-kit's error %q", body, msg)
		}
	}
}

// go-kit's error body: whatever GoKitError accepts, go-kit's encoder
// writes the same message back.
func FuzzGoKitError(f *testing.F) {
	f.Add([]byte(`{"err":"\u003cb\u003e"}`))
	f.Add([]byte(`{"err":"boom"}`))
	f.Add([]byte(`{"err":"a","err":"b"}`))
	f.Add([]byte(`{"err":"x","a":[[[1]]]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		hostile.Linear(t, "GoKitError", data, 3, 40+float64(len(data))/8, func() { _, _ = rpcheader.GoKitError(data) })
		msg, ok := rpcheader.GoKitError(data)
		if !ok {
			return
		}
		if len(msg) > rpclimit.MaxErrorMessage {
			t.Fatalf("message of %d bytes", len(msg))
		}
		body := rpcheader.GoKitErrorBody(msg)
		if again, ok := rpcheader.GoKitError(body); !ok || again != msg {
			t.Fatalf("%q → %q → %q %v", data, msg, again, ok)
		}
		var v struct {
			Err string `json:"err"`
		}
		if json.Unmarshal(body, &v) != nil || v.Err != msg {
			t.Fatalf("body %q is not go-kit's", body)
		}
	})
}

// The hostile corpus through every reader of this package: each input is
// refused with an error, or read to a bounded value, at a cost linear in
// its size.
func TestHostileHeaders(t *testing.T) {
	long := hostile.Long(900_000)
	values := append([]string{long, hostile.Controls, hostile.InvalidUTF8, ""}, hostile.Numbers...)
	for _, v := range values {
		name := rpclimit.Quote([]byte(v))
		if _, err := rpcheader.ParseTimeout(v); err == nil && (len(v) > rpclimit.MaxTimeoutDigits || strings.ContainsAny(v, "-+.eE")) {
			t.Errorf("ParseTimeout(%s) accepted", name)
		} else if err != nil && len(err.Error()) > rpclimit.MaxQuoted+64 {
			t.Errorf("ParseTimeout(%s): error of %d bytes", name, len(err.Error()))
		}
		for _, h := range []nats.Header{
			{rpcheader.Error: {v}, rpcheader.ErrorCode: {v}},
			{rpcheader.Error: {v, "second"}, rpcheader.ErrorCode: {"503", v}, rpcheader.ErrorKind: {v, rpcheader.KindBusiness}},
			{rpcheader.ErrorCode: {v}},
		} {
			s, failed, err := rpcheader.DecodeStatus(h)
			if !failed || s.Code < 100 || s.Code > 999 {
				t.Errorf("DecodeStatus(%s): %+v, %v", name, s, failed)
			}
			if len(s.Message) > rpclimit.MaxErrorMessage+rpclimit.MaxQuoted+64 {
				t.Errorf("DecodeStatus(%s): message of %d bytes", name, len(s.Message))
			}
			if err != nil && len(err.Error()) > rpclimit.MaxQuoted+64 {
				t.Errorf("DecodeStatus(%s): error of %d bytes", name, len(err.Error()))
			}
			if utf8.ValidString(v) && !utf8.ValidString(s.Message) {
				t.Errorf("DecodeStatus(%s): message cut inside a rune", name)
			}
			out := nats.Header{}
			rpcheader.EncodeStatus(out, s)
			if m := out.Get(rpcheader.Error); len(m) > rpclimit.MaxErrorMessage || strings.ContainsAny(m, "\r\n\x00\x1b") {
				t.Errorf("EncodeStatus(%s): header %q", name, m[:min(len(m), 40)])
			}
		}
		hostile.Linear(t, "DecodeStatus "+name, []byte(v), 0.1, 24, func() {
			_, _, _ = rpcheader.DecodeStatus(nats.Header{rpcheader.Error: {v}, rpcheader.ErrorCode: {v}})
		})
		hostile.Linear(t, "ParseTimeout "+name, []byte(v), 0.1, 8, func() { _, _ = rpcheader.ParseTimeout(v) })
	}

	// go-kit's body: deep nesting, long and hostile strings, duplicate keys.
	for name, body := range map[string][]byte{
		"deep":          append(append([]byte(`{"err":"x","a":`), hostile.DeepJSON(500_000)...), '}'),
		"deep object":   append(append([]byte(`{"err":"x","a":`), hostile.DeepJSONObject(100_000)...), '}'),
		"long message":  rpcheader.GoKitErrorBody(long),
		"duplicate err": []byte(`{"err":"a","err":"b"}`),
		"invalid utf-8": []byte(`{"err":"` + hostile.InvalidUTF8 + `"}`),
		"controls":      rpcheader.GoKitErrorBody(hostile.Controls),
	} {
		msg, ok := rpcheader.GoKitError(body)
		if strings.HasPrefix(name, "deep") == ok || len(msg) > rpclimit.MaxErrorMessage {
			t.Errorf("%s: %v, message of %d bytes", name, ok, len(msg))
		}
		hostile.Linear(t, "GoKitError "+name, body, 3, 40, func() { _, _ = rpcheader.GoKitError(body) })
	}
}

// BenchmarkDecodeHostile puts the worst hostile input of each reader beside
// a typical one: compare ns/op divided by the input's size (the "B/s"
// figure, from SetBytes).
func BenchmarkDecodeHostile(b *testing.B) {
	typical := nats.Header{rpcheader.Error: {"no such user"}, rpcheader.ErrorCode: {"404"}}
	long := hostile.Long(900_000)
	worst := nats.Header{rpcheader.Error: {long}, rpcheader.ErrorCode: {long}}
	b.Run("status/typical", func(b *testing.B) {
		b.SetBytes(int64(len("no such user") + 3))
		for b.Loop() {
			_, _, _ = rpcheader.DecodeStatus(typical)
		}
	})
	b.Run("status/hostile", func(b *testing.B) {
		b.SetBytes(int64(2 * len(long)))
		for b.Loop() {
			_, _, _ = rpcheader.DecodeStatus(worst)
		}
	})
	b.Run("timeout/typical", func(b *testing.B) {
		b.SetBytes(4)
		for b.Loop() {
			_, _ = rpcheader.ParseTimeout("1500")
		}
	})
	b.Run("timeout/hostile", func(b *testing.B) {
		b.SetBytes(int64(len(long)))
		for b.Loop() {
			_, _ = rpcheader.ParseTimeout(long)
		}
	})
	gk := []byte(`{"err":"no such user"}`)
	deep := append(append([]byte(`{"err":"x","a":`), hostile.DeepJSON(450_000)...), '}')
	b.Run("gokit/typical", func(b *testing.B) {
		b.SetBytes(int64(len(gk)))
		for b.Loop() {
			_, _ = rpcheader.GoKitError(gk)
		}
	})
	b.Run("gokit/hostile", func(b *testing.B) {
		b.SetBytes(int64(len(deep)))
		for b.Loop() {
			_, _ = rpcheader.GoKitError(deep)
		}
	})
}

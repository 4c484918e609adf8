package natsrpc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestTimeoutHeader(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 1500 * time.Millisecond, 1499999 * time.Microsecond, time.Hour} {
		v, ok := natsrpc.FormatTimeout(d)
		if !ok {
			t.Fatalf("FormatTimeout(%v): not ok", d)
		}
		have, err := natsrpc.ParseTimeout(v)
		if err != nil {
			t.Fatalf("ParseTimeout(%q): %v", v, err)
		}
		if want := d.Truncate(time.Millisecond); have != want {
			t.Errorf("round trip %v: want %v, have %v", d, want, have)
		}
	}
	if _, ok := natsrpc.FormatTimeout(999 * time.Microsecond); ok {
		t.Error("FormatTimeout(<1ms): want not ok")
	}
	if _, ok := natsrpc.FormatTimeout(-time.Second); ok {
		t.Error("FormatTimeout(<0): want not ok")
	}
	for _, bad := range []string{"", "-5", "+5", "5s", " 5", "1e3", "0x10", "1234567890123", "١٢"} {
		if _, err := natsrpc.ParseTimeout(bad); !errors.Is(err, natsrpc.ErrMalformedHeader) {
			t.Errorf("ParseTimeout(%q): want ErrMalformedHeader, have %v", bad, err)
		}
	}
}

func TestErrorHeaders(t *testing.T) {
	for _, want := range []*natsrpc.Error{
		{Code: 404, Message: "no such user"},
		{Code: natsrpc.CodeUnprocessable, Message: "insufficient funds", Business: true},
		{Code: natsrpc.CodeUnavailable, Message: "draining"},
	} {
		h := nats.Header{}
		natsrpc.EncodeError(h, want)
		have, err := natsrpc.DecodeError(h)
		if err != nil {
			t.Fatalf("DecodeError: %v", err)
		}
		if have.Code != want.Code || have.Message != want.Message || have.Business != want.Business {
			t.Errorf("want %+v, have %+v", want, have)
		}
	}
	if e, err := natsrpc.DecodeError(nats.Header{"Other": {"x"}}); e != nil || err != nil {
		t.Errorf("no status headers: want nil, nil; have %v, %v", e, err)
	}
}

func TestEncodeErrorSanitizes(t *testing.T) {
	h := nats.Header{}
	natsrpc.EncodeError(h, &natsrpc.Error{Code: 7, Message: "line one\r\nline two\x00" + strings.Repeat("x", 5000)})
	if have := h.Get(natsrpc.HeaderErrorCode); have != "500" {
		t.Errorf("out-of-range code: want 500, have %q", have)
	}
	msg := h.Get(natsrpc.HeaderError)
	if strings.ContainsAny(msg, "\r\n\x00") {
		t.Errorf("message keeps control characters: %q", msg[:40])
	}
	if len(msg) > 1024 {
		t.Errorf("message not bounded: %d bytes", len(msg))
	}
}

func TestDecodeMalformedErrorHeaders(t *testing.T) {
	for _, h := range []nats.Header{
		{natsrpc.HeaderError: {"boom"}, natsrpc.HeaderErrorCode: {"abc"}},
		{natsrpc.HeaderError: {"boom"}},
		{natsrpc.HeaderErrorCode: {"5000"}},
		{natsrpc.HeaderErrorCode: {"099"}},
		{natsrpc.HeaderErrorCode: {}},
		{natsrpc.HeaderError: {}},
	} {
		e, err := natsrpc.DecodeError(h)
		if !errors.Is(err, natsrpc.ErrMalformedHeader) {
			t.Errorf("%v: want ErrMalformedHeader, have %v", h, err)
		}
		// A garbled status is still a failure, never a success.
		if e == nil || e.Code != natsrpc.CodeInternal || e.Message == "" {
			t.Errorf("%v: want a CodeInternal *Error with a message, have %+v", h, e)
		}
	}
}

func TestHeaderCarrierKeepsLowerCaseKeys(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	h := nats.Header{}
	propagation.TraceContext{}.Inject(ctx, natsrpc.HeaderCarrier(h))
	if want, have := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", h.Get("traceparent"); have != want {
		t.Fatalf("traceparent: want %q, have %q (header %v)", want, have, h)
	}
	if _, ok := h["Traceparent"]; ok {
		t.Error("canonicalised key Traceparent written")
	}
	got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), natsrpc.HeaderCarrier(h)))
	if !got.Equal(sc.WithRemote(true)) {
		t.Errorf("extract: want %v, have %v", sc, got)
	}
	if keys := natsrpc.HeaderCarrier(h).Keys(); len(keys) != 1 || keys[0] != "traceparent" {
		t.Errorf("Keys: want [traceparent], have %v", keys)
	}
}

func TestErrorSentinels(t *testing.T) {
	var r interface{ Retryable() bool }
	for _, tc := range []struct {
		err       error
		retryable bool
		is        []error
	}{
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrNoResponders}, true, []error{natsrpc.ErrNoResponders, nats.ErrNoResponders}},
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrConnClosed, Cause: nats.ErrConnectionDraining}, true, []error{natsrpc.ErrConnClosed, nats.ErrConnectionDraining}},
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrClientClosed}, true, []error{natsrpc.ErrClientClosed}},
		{&natsrpc.CallError{Subject: "s", Err: context.DeadlineExceeded}, false, []error{context.DeadlineExceeded}},
		{&natsrpc.Error{Code: 503}, true, []error{natsrpc.ErrRemote}},
		{&natsrpc.Error{Code: 503, Business: true}, false, []error{natsrpc.ErrRemote, natsrpc.ErrBusiness}},
		{&natsrpc.Error{Code: 500}, false, []error{natsrpc.ErrRemote}},
		{&natsrpc.PayloadError{Size: 2, Max: 1}, false, []error{natsrpc.ErrPayloadTooLarge}},
	} {
		if !errors.As(tc.err, &r) {
			t.Errorf("%v: does not implement Retryable", tc.err)
			continue
		}
		if have := r.Retryable(); have != tc.retryable {
			t.Errorf("%v: Retryable want %v, have %v", tc.err, tc.retryable, have)
		}
		for _, target := range tc.is {
			if !errors.Is(tc.err, target) {
				t.Errorf("%v: want errors.Is %v", tc.err, target)
			}
		}
	}
}

// FuzzParseTimeout: the deadline header decoder never panics, accepts only
// what FormatTimeout writes, and round-trips what it accepts.
func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"1500", "0", "", "-1", "999999999999", "9999999999999", "1.5", "5s", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := natsrpc.ParseTimeout(s)
		if err != nil {
			if !errors.Is(err, natsrpc.ErrMalformedHeader) {
				t.Fatalf("error %v is not ErrMalformedHeader", err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("negative duration %v from %q", d, s)
		}
		if d > 0 {
			v, ok := natsrpc.FormatTimeout(d)
			if d2, _ := natsrpc.ParseTimeout(v); !ok || d2 != d {
				t.Fatalf("%q → %v → %q → %v", s, d, v, d2)
			}
		}
	})
}

// FuzzDecodeError: the error-status decoder never panics, reports a failure
// whenever a status header is present, and what EncodeError writes decodes
// to the same code.
func FuzzDecodeError(f *testing.F) {
	f.Add("boom", "500", "", true, true)
	f.Add("nope", "422", "business", true, true)
	f.Add("", "abc", "", false, true)
	f.Add("x\r\ny", "1000", "other", true, false)
	f.Fuzz(func(t *testing.T, msg, code, kind string, hasMsg, hasCode bool) {
		h := nats.Header{natsrpc.HeaderErrorKind: {kind}}
		if hasMsg {
			h[natsrpc.HeaderError] = []string{msg}
		}
		if hasCode {
			h[natsrpc.HeaderErrorCode] = []string{code}
		}
		e, err := natsrpc.DecodeError(h)
		if !hasMsg && !hasCode {
			if e != nil || err != nil {
				t.Fatalf("no status: have %v, %v", e, err)
			}
			return
		}
		if e == nil {
			t.Fatal("status present but decoded as success")
		}
		if err != nil && !errors.Is(err, natsrpc.ErrMalformedHeader) {
			t.Fatalf("error %v is not ErrMalformedHeader", err)
		}
		if e.Code < 100 || e.Code > 999 {
			t.Fatalf("code %d out of range", e.Code)
		}
		h2 := nats.Header{}
		natsrpc.EncodeError(h2, e)
		e2, err := natsrpc.DecodeError(h2)
		if err != nil || e2.Code != e.Code || e2.Business != e.Business {
			t.Fatalf("re-encode: want %+v, have %+v, %v", e, e2, err)
		}
	})
}

// FuzzTraceHeaders: extracting trace context from arbitrary traceparent and
// tracestate values through HeaderCarrier never panics, and yields either no
// span context or a valid remote one.
func FuzzTraceHeaders(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
	f.Add("ff-0-0-0", "")
	f.Add("00-00000000000000000000000000000000-0000000000000000-00", "a=b,c")
	f.Fuzz(func(t *testing.T, tp, ts string) {
		h := nats.Header{natsrpc.HeaderTraceparent: {tp}, natsrpc.HeaderTracestate: {ts}}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), natsrpc.HeaderCarrier(h)))
		if sc.IsValid() && !sc.IsRemote() {
			t.Fatalf("extracted span context not remote: %v", sc)
		}
	})
}

// FuzzDecodeJSONRequest: the JSON request decoder rejects garbage with an
// error, never a panic.
func FuzzDecodeJSONRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"body":"x"}`))
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte{0x81, 0xa1, 'a', 0x01}) // msgpack, as an AegisSDK peer may send
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := natsrpc.DecodeJSONRequest[benchMsg](context.Background(), &nats.Msg{Data: data})
		if err == nil {
			if _, ok := v.(benchMsg); !ok {
				t.Fatalf("decoded %T, want benchMsg", v)
			}
		}
	})
}

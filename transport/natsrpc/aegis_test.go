package natsrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// The AegisSDK side of these tests is internal/aegistest: a server and a
// client written from AegisSDK's wire format, whose readers apply its strict
// rules, and more (every key present, UUIDs, ISO timestamps), to all that
// kitnats writes.

type greetReq struct {
	Name string `json:"name"`
}

type greetResp struct {
	Greeting string `json:"greeting"`
	Instance string `json:"instance"`
}

// aegisGreeter runs an AegisSDK-style instance of service "greeter" whose
// method "hello" greets params["name"], fails for "fail" and panics for
// "panic".

var formats = []natsrpc.EnvelopeFormat{natsrpc.EnvelopeJSON, natsrpc.EnvelopeMsgpack}

func aegisGreeter(t *testing.T, nc *nats.Conn, instance string, f aegistest.Format) *aegistest.Server {
	t.Helper()
	s, err := aegistest.NewServer(nc, "greeter", instance, f, map[string]aegistest.Handler{
		"hello": func(p map[string]any) (any, error) {
			name, _ := p["name"].(string)
			switch name {
			case "fail":
				return nil, errors.New("ValueError: no such person")
			case "panic":
				panic("KeyError: 'name'")
			}
			return map[string]any{"greeting": "hello, " + name, "instance": instance}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// A kitnats client with ClientEnvelope calls an AegisSDK service in either
// format, whatever format the service replies in: results decode, the
// service's strict reader accepts every request, and the envelope carries
// the method, the target and the caller's deadline.
func TestEnvelopeClientCallsAegisService(t *testing.T) {
	for _, cf := range formats {
		for _, sf := range []aegistest.Format{aegistest.JSON, aegistest.Msgpack} {
			t.Run(fmt.Sprintf("client %v, server %v", cf, sf), func(t *testing.T) {
				e := newEnv(t)
				srv := aegisGreeter(t, e.snc, "py-1", sf)
				c, err := natsrpc.NewServiceClient(e.cnc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[greetResp],
					natsrpc.WithEnvelope(cf), natsrpc.WithEnvelopeSource("go-caller-1"))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(ctxWait(t), 4*time.Second)
				defer cancel()
				// The caller's trace becomes the envelope's trace_id.
				traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
				ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
					TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled}))
				resp, err := natsrpc.Call[greetResp](ctx, c.Endpoint(), greetReq{Name: "gopher"})
				if err != nil || resp.Greeting != "hello, gopher" || resp.Instance != "py-1" {
					t.Fatalf("call: %+v, %v", resp, err)
				}
				if v := srv.Violations(); len(v) > 0 {
					t.Fatalf("the AegisSDK reader refused requests: %v", v)
				}
				reqs := srv.Requests()
				if len(reqs) != 1 {
					t.Fatalf("%d requests", len(reqs))
				}
				r := reqs[0]
				if r["method"] != "hello" || r["target"] != "greeter" || r["source"] != "go-caller-1" || r["correlation_id"] != nil {
					t.Errorf("request %v", r)
				}
				if r["trace_id"] != "4bf92f35-77b3-4da6-a3ce-929d0e0e4736" {
					t.Errorf("trace_id %v, want the caller's trace", r["trace_id"])
				}
				if p, _ := r["params"].(map[string]any); p["name"] != "gopher" {
					t.Errorf("params %v", r["params"])
				}
				timeout, _ := json.Number(fmt.Sprint(r["timeout"])).Float64()
				if timeout <= 0 || timeout > 4 {
					t.Errorf("timeout %v, want the caller's remaining time, at most 4 s", r["timeout"])
				}
			})
		}
	}
}

// AegisSDK's failures reach the caller as errors: success:false carries
// the remote message and is not retryable; NOT_ACTIVE, in both shapes, is
// ErrNotActive and retryable; a reply that is no envelope is a decode
// error, never a success.
func TestEnvelopeClientErrors(t *testing.T) {
	e := newEnv(t)
	srv := aegisGreeter(t, e.snc, "py-1", aegistest.Msgpack)
	c, err := natsrpc.NewServiceClient(e.cnc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[greetResp], natsrpc.WithEnvelope(natsrpc.EnvelopeJSON))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxWait(t)
	retryable := func(err error) bool {
		var r interface{ Retryable() bool }
		return errors.As(err, &r) && r.Retryable()
	}

	for name, want := range map[string]string{"fail": "ValueError: no such person", "panic": "KeyError: 'name'"} {
		_, err = c.Endpoint()(ctx, greetReq{Name: name})
		var ee *natsrpc.EnvelopeError
		if !errors.As(err, &ee) || ee.Message != want || ee.NotActive || retryable(err) ||
			!errors.Is(err, natsrpc.ErrRemote) || errors.Is(err, natsrpc.ErrNotActive) {
			t.Errorf("%s: %v (%#v)", name, err, ee)
		}
		if ee != nil && (ee.MessageID == "" || ee.CorrelationID == "") {
			t.Errorf("%s: the error does not identify the failed reply: %+v", name, ee)
		}
	}
	if _, err := c.Endpoint()(ctx, []string{"not", "an", "object"}); err == nil {
		t.Error("params that are not an object were sent")
	}

	for _, mode := range []aegistest.Mode{aegistest.NotActiveResult, aegistest.NotActiveError} {
		srv.SetMode(mode)
		_, err = c.Endpoint()(ctx, greetReq{Name: "gopher"})
		var ee *natsrpc.EnvelopeError
		if !errors.Is(err, natsrpc.ErrNotActive) || !retryable(err) || !errors.As(err, &ee) || !ee.NotActive ||
			!strings.Contains(ee.Message, "py-1") {
			t.Errorf("NOT_ACTIVE shape %d: %v", mode, err)
		}
	}

	// Replies that are not envelopes, from a responder on another subject.
	for name, body := range map[string]string{
		"bare body":        `{"greeting":"hello"}`,
		"no success":       `{"message_id":"a","result":{"greeting":"hello"},"error":null}`,
		"unknown key":      `{"success":true,"result":null,"error":null,"extra":1}`,
		"failure, no text": `{"success":false,"result":null,"error":null}`,
		"empty":            ``,
		"msgpack garbage":  "\x89\xa1",
	} {
		sub, err := e.snc.Subscribe("rpc.broken.hello", func(m *nats.Msg) { _ = m.Respond([]byte(body)) })
		if err != nil {
			t.Fatal(err)
		}
		_ = e.snc.Flush()
		bc, _ := natsrpc.NewServiceClient(e.cnc, "broken", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[greetResp], natsrpc.WithEnvelope(natsrpc.EnvelopeMsgpack))
		resp, err := bc.Endpoint()(ctx, greetReq{Name: "x"})
		var ce *natsrpc.CallError
		if !errors.As(err, &ce) || !errors.Is(err, natsrpc.ErrMalformedEnvelope) || retryable(err) {
			t.Errorf("%s: %v, %v: want a decode error", name, resp, err)
		}
		_ = sub.Unsubscribe()
	}
}

// kitnats' side of the same fleet: an AegisSDK-style client calls a kitnats
// Service in JSON and msgpack. The handler gets the params only; the reply is
// an envelope in the request's format whatever happened — success, business
// error, error, panic, params the handler cannot decode, an envelope that
// breaks the rules — and every one passes the strict reader.
func TestAegisClientCallsKitnatsService(t *testing.T) {
	e := newEnv(t)
	var deadlines = make(chan time.Duration, 100)
	hello := natsrpc.NewJSONServer(func(ctx context.Context, r greetReq) (any, error) {
		if dl, ok := ctx.Deadline(); ok {
			deadlines <- time.Until(dl)
		} else {
			deadlines <- -1
		}
		switch r.Name {
		case "business":
			return failing{errors.New("insufficient funds")}, nil
		case "fail":
			return nil, errors.New("disk on fire")
		case "panic":
			panic("boom")
		case "nothing":
			return nil, nil
		}
		return greetResp{Greeting: "hello, " + r.Name, Instance: "go-1"}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "greeter", "go-1", map[string]*natsrpc.Server{"hello": hello})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)

	for _, f := range []aegistest.Format{aegistest.JSON, aegistest.Msgpack} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			c := &aegistest.Client{NC: e.cnc, Format: f, Source: "py-caller"}
			for _, tc := range []struct {
				params  map[string]any
				success bool
				result  string // in the reply's error when !success
			}{
				{map[string]any{"name": "py"}, true, "hello, py"},
				{map[string]any{"name": "business"}, false, "insufficient funds"},
				{map[string]any{"name": "fail"}, false, "disk on fire"},
				{map[string]any{"name": "panic"}, false, "panic: boom"},
				{map[string]any{"name": 42}, false, "decode request"},
				{map[string]any{"name": "nothing"}, true, ""},
			} {
				r, _, err := c.Call(ctx, "greeter", "hello", tc.params, 2.5)
				if err != nil {
					t.Fatalf("%v: %v", tc.params, err)
				}
				if r.Format != f {
					t.Errorf("%v: reply in %v, want the request's %v", tc.params, r.Format, f)
				}
				if r.Success != tc.success {
					t.Errorf("%v: success %v (%v)", tc.params, r.Success, r.Error)
					continue
				}
				switch {
				case !tc.success:
					if !strings.Contains(r.Error, tc.result) || strings.Contains(r.Error, "NOT_ACTIVE") {
						t.Errorf("%v: error %q, want %q", tc.params, r.Error, tc.result)
					}
				case tc.result == "":
					if r.Result != nil {
						t.Errorf("%v: result %v, want null", tc.params, r.Result)
					}
				default:
					m, _ := r.Result.(map[string]any)
					if m["greeting"] != tc.result || m["instance"] != "go-1" {
						t.Errorf("%v: result %v", tc.params, r.Result)
					}
				}
			}
			// The envelope's timeout is the handler's deadline (five calls
			// reached the handler: all but the undecodable params).
			for range 5 {
				if d := <-deadlines; d <= 0 || d > 2500*time.Millisecond {
					t.Errorf("handler deadline %v, want within the envelope's 2.5 s", d)
				}
			}
			if len(deadlines) != 0 {
				t.Errorf("%d more calls reached the handler", len(deadlines))
			}

			// Envelopes that break the rules: replied, success:false.
			for name, env := range map[string]map[string]any{
				"null params":    {"message_id": aegistest.NewUUID(), "method": "hello", "params": nil},
				"unknown key":    {"message_id": aegistest.NewUUID(), "method": "hello", "params": map[string]any{}, "priority": 1},
				"string timeout": {"message_id": aegistest.NewUUID(), "method": "hello", "params": map[string]any{}, "timeout": "5"},
				"null trace_id":  {"message_id": aegistest.NewUUID(), "method": "hello", "params": map[string]any{}, "trace_id": nil},
			} {
				data, _ := aegistest.Marshal(f, env)
				r, err := c.Send(ctx, "rpc.greeter.hello", data)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if r.Success || !strings.Contains(r.Error, "invalid request envelope") || r.Format != f {
					t.Errorf("%s: %+v", name, r)
				}
			}
		})
	}
	if n := statSum(t, svc, "errors"); n != 2*(4+4) {
		t.Errorf("endpoint stats errors: %d, want %d", n, 2*(4+4))
	}
}

// A kitnats Service that refuses a request it will not run (here: its one
// worker busy, no queue) tells an AegisSDK caller NOT_ACTIVE, which
// AegisSDK clients retry on another instance; a kitnats envelope client
// sees ErrNotActive.
func TestRefusedEnvelopeIsNotActive(t *testing.T) {
	e := newEnv(t)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	hello := natsrpc.NewJSONServer(func(ctx context.Context, r greetReq) (greetResp, error) {
		if r.Name == "block" {
			entered <- struct{}{}
			<-release
		}
		return greetResp{Greeting: "hello"}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "greeter", "go-1", map[string]*natsrpc.Server{"hello": hello},
		natsrpc.WithMaxConcurrent(1), natsrpc.WithMaxPending(0))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	defer close(release)
	ctx := ctxWait(t)
	c := &aegistest.Client{NC: e.cnc, Format: aegistest.Msgpack}
	go func() { _, _, _ = c.Call(ctx, "greeter", "hello", map[string]any{"name": "block"}, 10) }()
	<-entered

	r, _, err := c.Call(ctx, "greeter", "hello", map[string]any{"name": "x"}, 10)
	if err != nil || r.Success || !strings.HasPrefix(r.Error, "NOT_ACTIVE: ") {
		t.Errorf("refused request: %+v, %v", r, err)
	}
	kc, _ := natsrpc.NewServiceClient(e.cnc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[greetResp], natsrpc.WithEnvelope(natsrpc.EnvelopeJSON))
	if _, err := kc.Endpoint()(ctx, greetReq{Name: "x"}); !errors.Is(err, natsrpc.ErrNotActive) {
		t.Errorf("kitnats envelope client: %v, want ErrNotActive", err)
	}
}

// A kitnats client speaking envelopes to a kitnats Service is answered in
// envelopes (the timeout travels in the envelope; no Kitnats-Timeout
// header is sent), in both formats.
func TestEnvelopeClientCallsKitnatsService(t *testing.T) {
	e := newEnv(t)
	headers := make(chan nats.Header, 10)
	hello := natsrpc.NewJSONServer(func(ctx context.Context, r greetReq) (any, error) {
		if r.Name == "business" {
			return failing{errors.New("insufficient funds")}, nil
		}
		return greetResp{Greeting: "hello, " + r.Name, Instance: "go-1"}, nil
	}, natsrpc.WithBefore(func(ctx context.Context, m *nats.Msg) context.Context {
		headers <- m.Header
		return ctx
	}))
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "greeter", "go-1", map[string]*natsrpc.Server{"hello": hello})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	for _, f := range formats {
		c, err := natsrpc.NewServiceClient(e.cnc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[greetResp], natsrpc.WithEnvelope(f))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := natsrpc.Call[greetResp](ctxWait(t), c.Endpoint(), greetReq{Name: "gopher"})
		if err != nil || resp.Greeting != "hello, gopher" {
			t.Errorf("%v: %+v, %v", f, resp, err)
		}
		if h := <-headers; h.Get(rpcheader.Timeout) != "" {
			t.Errorf("%v: Kitnats-Timeout sent with an envelope", f)
		}
		_, err = c.Endpoint()(ctxWait(t), greetReq{Name: "business"})
		var ee *natsrpc.EnvelopeError
		if !errors.As(err, &ee) || ee.Message != "insufficient funds" {
			t.Errorf("%v: %v", f, err)
		}
		<-headers
	}
}

// Factory with ClientMetadata follows the instance: one that registered
// kitnats.rpc=instance is called on its own subject with the headers
// protocol; one that did not (an AegisSDK instance), or that the lookup does
// not know, on the service-wide subject in envelopes.
func TestFactoryFollowsTheInstance(t *testing.T) {
	e := newEnv(t)
	aegisGreeter(t, e.snc, "py-1", aegistest.Msgpack)
	meta := map[string]map[string]string{
		"go-1": {wire.MetadataRPC: wire.RPCInstance},
		"py-1": {"start_time": "2025-08-08T05:02:24.101234+00:00"},
	}
	lookup := func(id string) (map[string]string, bool) { m, ok := meta[id]; return m, ok }
	hello := natsrpc.NewJSONServer(func(ctx context.Context, r greetReq) (greetResp, error) {
		return greetResp{Greeting: "hello, " + r.Name, Instance: "go-1"}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "greeter-go", "go-1", map[string]*natsrpc.Server{"hello": hello})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	for _, tc := range []struct {
		service, instance, subject string
	}{
		{"greeter-go", "go-1", "rpc.greeter-go.hello.go-1"},
		{"greeter", "py-1", "rpc.greeter.hello"},
		{"greeter", "unknown-1", "rpc.greeter.hello"},
	} {
		factory := natsrpc.JSONFactory[greetResp](e.cnc, tc.service, "hello", natsrpc.WithRegistryMetadata(lookup))
		ep, closer, err := factory(tc.instance)
		if err != nil {
			t.Fatal(err)
		}
		if s := natsrpc.SubjectOf(closer.(*natsrpc.Client)); s != tc.subject {
			t.Errorf("%s: subject %s, want %s", tc.instance, s, tc.subject)
		}
		resp, err := natsrpc.Call[greetResp](ctxWait(t), ep, greetReq{Name: "gopher"})
		if err != nil || resp.Greeting != "hello, gopher" {
			t.Errorf("%s: %+v, %v", tc.instance, resp, err)
		}
		_ = closer.Close()
		if _, err := ep(ctxWait(t), greetReq{}); !errors.Is(err, natsrpc.ErrClientClosed) {
			t.Errorf("%s: closed endpoint: %v", tc.instance, err)
		}
	}
	if _, _, err := natsrpc.JSONFactory[greetResp](e.cnc, "greeter", "hello", natsrpc.WithRegistryMetadata(lookup))("bad.id"); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("invalid instance: %v", err)
	}
}

package natsrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitnats "github.com/go-kit/kit/transport/nats"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// go-kit's own DefaultErrorEncoder body is what GoKitError reads.
func TestGoKitErrorMatchesGoKit(t *testing.T) {
	e := newEnv(t)
	sub, err := e.snc.Subscribe("gokit.fail", func(m *nats.Msg) {
		kitnats.DefaultErrorEncoder(context.Background(), errors.New(`bad <input> & "quotes"`), m.Reply, e.snc)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = e.snc.Flush()
	m, err := e.cnc.Request("gokit.fail", nil, wait)
	if err != nil {
		t.Fatal(err)
	}
	if msg, ok := rpcheader.GoKitError(m.Data); !ok || msg != `bad <input> & "quotes"` {
		t.Errorf("%s: %q %v", m.Data, msg, ok)
	}
}

type sumReq struct {
	A, B int
}

type sumResp struct {
	V int `json:"v"`
}

// go-kit style: the business error travels in the response.
type sumRespWithErr struct {
	V   int    `json:"v"`
	Err string `json:"err,omitempty"`
}

// A natsrpc client calls a go-kit Subscriber: results decode, and go-kit's
// error body is an error — a *natsrpc.Error with go-kit's message — not a
// success with an empty response. A response type that has an "err" field
// of its own still gets the body as data.
func TestClientCallsGoKitSubscriber(t *testing.T) {
	e := newEnv(t)
	sum := func(_ context.Context, request any) (any, error) {
		r := request.(sumReq)
		if r.A < 0 {
			return nil, errors.New("negative input")
		}
		return sumResp{V: r.A + r.B}, nil
	}
	subscriber := kitnats.NewSubscriber(endpoint.Endpoint(sum),
		func(_ context.Context, m *nats.Msg) (any, error) {
			var r sumReq
			err := json.Unmarshal(m.Data, &r)
			return r, err
		},
		kitnats.EncodeJSONResponse)
	sub, err := e.snc.QueueSubscribe("gokit.sum", "gokit", subscriber.ServeMsg(e.snc))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = e.snc.Flush()

	c := natsrpc.NewClient(e.cnc, "gokit.sum", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[sumResp])
	ctx := ctxWait(t)
	if r, err := natsrpc.Call[sumResp](ctx, c.Endpoint(), sumReq{A: 2, B: 3}); err != nil || r.V != 5 {
		t.Errorf("sum: %+v, %v", r, err)
	}
	_, err = c.Endpoint()(ctx, sumReq{A: -1})
	var re *natsrpc.Error
	if !errors.As(err, &re) || re.Message != "negative input" || re.Code != natsrpc.CodeInternal || re.Retryable() {
		t.Errorf("go-kit error: %v (%#v)", err, re)
	}
	var ce *natsrpc.CallError
	if errors.As(err, &ce) {
		t.Errorf("go-kit error reported as a transport failure: %v", err)
	}
	// Undecodable requests too: go-kit replies its error body.
	raw := natsrpc.NewClient(e.cnc, "gokit.sum", func(_ context.Context, m *nats.Msg, _ any) error {
		m.Data = []byte("not json")
		return nil
	}, natsrpc.DecodeJSONResponse[sumResp])
	if _, err := raw.Endpoint()(ctx, nil); !errors.As(err, &re) || !errors.Is(err, natsrpc.ErrRemote) {
		t.Errorf("undecodable request: %v", err)
	}

	withErr := natsrpc.NewClient(e.cnc, "gokit.sum", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[sumRespWithErr])
	r, err := natsrpc.Call[sumRespWithErr](ctx, withErr.Endpoint(), sumReq{A: -1})
	if err != nil || r.Err != "negative input" {
		t.Errorf("a type with its own err field: %+v, %v", r, err)
	}
	anyResp := natsrpc.NewClient(e.cnc, "gokit.sum", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[map[string]any])
	if m, err := natsrpc.Call[map[string]any](ctx, anyResp.Endpoint(), sumReq{A: -1}); err != nil || m["err"] != "negative input" {
		t.Errorf("a map: %v, %v", m, err)
	}
}

// A go-kit Publisher calls a natsrpc Service, with natsrpc's JSON codecs
// (they have go-kit's types): results decode; errors, whose replies carry
// go-kit's body, come back as errors, to natsrpc's decoder and to a
// go-kit-style decoder that reads "err"; the handler runs under the
// Service's default deadline.
func TestGoKitPublisherCallsService(t *testing.T) {
	e := newEnv(t)
	deadlines := make(chan time.Duration, 10)
	srv := natsrpc.NewJSONServer(func(ctx context.Context, r sumReq) (any, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			deadlines <- -1
		} else {
			deadlines <- time.Until(dl)
		}
		switch {
		case r.A < 0:
			return nil, errors.New("negative input")
		case r.A == 0:
			return failing{errors.New("zero is not a number here")}, nil
		}
		return sumResp{V: r.A + r.B}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "adder", "a-1", map[string]*natsrpc.Server{"sum": srv},
		natsrpc.WithDefaultTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)

	pub := kitnats.NewPublisher(e.cnc, "rpc.adder.sum", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[sumResp]).Endpoint()
	if r, err := pub(ctx, sumReq{A: 2, B: 3}); err != nil || r.(sumResp).V != 5 {
		t.Errorf("sum: %v, %v", r, err)
	}
	if d := <-deadlines; d <= 0 || d > 3*time.Second {
		t.Errorf("handler deadline %v, want the service's default 3 s", d)
	}
	for a, want := range map[int]string{-1: "negative input", 0: "zero is not a number here"} {
		_, err := pub(ctx, sumReq{A: a})
		var re *natsrpc.Error
		if !errors.As(err, &re) || re.Message != want {
			t.Errorf("A=%d: %v", a, err)
		}
		<-deadlines
	}

	// A decoder as go-kit users write them: the body's "err" is the error.
	goKitStyle := func(_ context.Context, m *nats.Msg) (any, error) {
		var r sumRespWithErr
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, err
		}
		if r.Err != "" {
			return nil, errors.New(r.Err)
		}
		return r, nil
	}
	pub2 := kitnats.NewPublisher(e.cnc, "rpc.adder.sum", kitnats.EncodeJSONRequest, goKitStyle).Endpoint()
	if _, err := pub2(ctx, sumReq{A: -1}); err == nil || err.Error() != "negative input" {
		t.Errorf("go-kit-style decoder: %v", err)
	}
	<-deadlines
	// A request the handler cannot decode: go-kit's body too.
	m, err := e.cnc.Request("rpc.adder.sum", []byte("not json"), wait)
	if err != nil {
		t.Fatal(err)
	}
	if msg, ok := rpcheader.GoKitError(m.Data); !ok || msg == "" || m.Header.Get(rpcheader.ErrorCode) != "400" {
		t.Errorf("undecodable request: %q %v", m.Data, m.Header)
	}
}

// GoKitErrorEncoder adds go-kit's body to every error reply, kitnats
// callers' included, who still read the status headers.
func TestGoKitErrorEncoder(t *testing.T) {
	e := newEnv(t)
	srv := natsrpc.NewJSONServer(func(ctx context.Context, r sumReq) (sumResp, error) {
		return sumResp{}, &natsrpc.Error{Code: 409, Message: "conflict"}
	}, natsrpc.WithErrorEncoder(natsrpc.GoKitErrorEncoder))
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "adder", "a-1", map[string]*natsrpc.Server{"sum": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	c, _ := natsrpc.NewServiceClient(e.cnc, "adder", "sum", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[sumResp])
	_, err = c.Endpoint()(ctxWait(t), sumReq{A: 1})
	var re *natsrpc.Error
	if !errors.As(err, &re) || re.Code != 409 || re.Message != "conflict" {
		t.Fatalf("%v", err)
	}
	if msg, ok := rpcheader.GoKitError(re.Data); !ok || msg != "conflict" {
		t.Errorf("body %q", re.Data)
	}
}

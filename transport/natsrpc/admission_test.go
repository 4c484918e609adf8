package natsrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// A request without a deadline header (go-kit's transport/nats, the
// AegisSDK) gets the service's default deadline; with the default turned
// off it has none.
func TestDefaultTimeout(t *testing.T) {
	e := newEnv(t)
	type seen struct {
		hasDeadline bool
		err         error
	}
	got := make(chan seen, 1)
	wait := natsrpc.NewJSONServer(func(ctx context.Context, r echoReq) (echoResp, error) {
		_, ok := ctx.Deadline()
		if !r.Block {
			got <- seen{hasDeadline: ok}
			return echoResp{}, nil
		}
		<-ctx.Done() // only the default deadline ends this
		got <- seen{hasDeadline: ok, err: ctx.Err()}
		return echoResp{}, ctx.Err()
	})
	short, err := natsrpc.NewService(ctxWait(t), e.snc, "short", "a", map[string]*natsrpc.Server{"wait": wait},
		natsrpc.WithDefaultTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, short)
	none, err := natsrpc.NewService(ctxWait(t), e.snc, "none", "a", map[string]*natsrpc.Server{"wait": wait},
		natsrpc.WithDefaultTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, none)
	ctx := ctxWait(t)

	data, _ := json.Marshal(echoReq{Block: true})
	m, err := e.cnc.RequestWithContext(ctx, "rpc.short.wait", data) // no headers at all
	if err != nil {
		t.Fatal(err)
	}
	if re, _ := decodeError(m.Header); re == nil || re.Code != natsrpc.CodeTimeout {
		t.Errorf("want a 504 at the default deadline, have %+v", re)
	}
	if s := <-got; !s.hasDeadline || !errors.Is(s.err, context.DeadlineExceeded) {
		t.Errorf("handler: want the default deadline, have %+v", s)
	}

	data, _ = json.Marshal(echoReq{})
	if _, err := e.cnc.RequestWithContext(ctx, "rpc.none.wait", data); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.hasDeadline {
		t.Error("ServiceDefaultTimeout(0): want no deadline")
	}
}

// A request whose deadline has passed when it arrives is dropped unrun and
// counted; its caller has gone, so it gets no reply.
func TestExpiredOnArrival(t *testing.T) {
	e := newEnv(t)
	ran := make(chan struct{}, 1)
	srv := natsrpc.NewJSONServer(func(context.Context, echoReq) (echoResp, error) {
		ran <- struct{}{}
		return echoResp{}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	inbox := e.cnc.NewRespInbox()
	replies, err := e.cnc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(echoReq{})
	if err := e.cnc.PublishMsg(&nats.Msg{Subject: "rpc.echo.say.a", Reply: inbox, Data: data,
		Header: nats.Header{rpcheader.Timeout: {"0"}}}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxWait(t)
	for statSum(t, svc, "expired") == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("expired request never counted")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// A live request after it is served, and is the only reply.
	if _, err := natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, "a"), echoReq{}); err != nil {
		t.Fatal(err)
	}
	<-ran
	select {
	case <-ran:
		t.Error("the expired request ran")
	default:
	}
	if m, err := replies.NextMsg(10 * time.Millisecond); err == nil {
		t.Errorf("expired request: want no reply, have %v", m.Header)
	}
}

package hedge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// startGreeters serves greeter/hello on a real NATS server as each of ids,
// with handle as the business logic.
func startGreeters(t testing.TB, nc *nats.Conn, handle func(ctx context.Context, id string) (string, error), ids ...string) {
	t.Helper()
	for _, id := range ids {
		hello := natsrpc.NewJSONServer(func(ctx context.Context, _ string) (string, error) {
			return handle(ctx, id)
		})
		svc, err := natsrpc.NewService(context.Background(), nc, "greeter", id,
			map[string]*natsrpc.Server{"hello": hello}, natsrpc.WithMaxConcurrent(256))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			_ = svc.Shutdown(ctx)
		})
	}
}

// newSet is the client side's endpoint set over fixed instances, once it has
// every instance's endpoint.
func newSet(t testing.TB, nc *nats.Conn, opts []tracing.Option, ids ...string) *lb.EndpointSet {
	t.Helper()
	factory := tracing.Factory(breaker.Factory(natsrpc.JSONFactory[string](nc, "greeter", "hello")),
		"greeter", "hello", opts...)
	set := lb.NewEndpointSet(sd.FixedInstancer(ids), factory, nil)
	t.Cleanup(set.Close)
	for deadline := time.Now().Add(patience); len(set.Instances()) < len(ids); {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint set has %v, want %v", set.Instances(), ids)
		}
		time.Sleep(time.Millisecond)
	}
	return set
}

// TestOverNATS hedges a call whose first instance never answers, through
// the whole client chain on a real NATS server: the backup goes to another
// instance and its answer is the call's; the first attempt's span ends
// cancelled, the backup's has its own instance; and the silent instance's
// handler sees its context end — at the deadline the request carried, since
// NATS request-reply has no cancel message.
func TestOverNATS(t *testing.T) {
	srv := natstest.Start(t)
	servers := natstest.Connect(t, srv.URL())
	client := natstest.Connect(t, srv.URL())

	handlerSaw := make(chan error, 1)
	startGreeters(t, servers, func(ctx context.Context, id string) (string, error) {
		if id == "silent" {
			<-ctx.Done()
			handlerSaw <- ctx.Err()
			return "", ctx.Err()
		}
		return "hello from " + id, nil
	}, "silent", "g1", "g2")

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	set := newSet(t, client, []tracing.Option{tracing.WithTracerProvider(tp)}, "silent", "g1", "g2")
	h := mustNew(t, lb.New(set, lb.Sticky()), hedge.WithDelay(5*time.Millisecond))
	call, err := retry.New(h, retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}

	// The call goes to "silent" first (a preferred instance, to make sure).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := natsrpc.Call[string](lb.WithPreferredInstance(ctx, "silent"), call, "gopher")
	if err != nil || (resp != "hello from g1" && resp != "hello from g2") {
		t.Fatalf("want g1's or g2's answer, have %q, %v", resp, err)
	}
	if s := h.Stats(); s.Calls != 1 || s.Sent != 1 || s.Won != 1 {
		t.Errorf("stats: want 1 call, 1 sent, 1 won; have %+v", s)
	}

	ended := spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("want 2 attempt spans, have %d", len(ended))
	}
	byInstance := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byInstance[attr(s.Attributes(), "kitnats.instance")] = s
	}
	if s := byInstance["silent"]; s == nil || attr(s.Attributes(), "error.type") != "canceled" || s.Status().Code != codes.Error {
		t.Errorf("the silent instance's span: want error.type canceled, have %v", s)
	}
	winner := byInstance[resp[len("hello from "):]]
	if winner == nil || winner.Status().Code == codes.Error || attr(winner.Attributes(), "kitnats.attempt") != "1" {
		t.Errorf("the backup's span: want a success labelled with its instance, attempt 1; have %v", winner)
	}

	select {
	case err := <-handlerSaw:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("silent handler: want its context to end at the deadline, have %v", err)
		}
	case <-time.After(patience):
		t.Error("the silent instance's handler never saw its context end")
	}
}

func attr(kvs []attribute.KeyValue, key attribute.Key) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

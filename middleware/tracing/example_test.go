package tracing_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

// firstUntried stands in for an lb balancer over an endpoint set: it holds
// instance → endpoint and picks, in order, the first instance not tried
// whose breaker is closed.
type firstUntried struct {
	names   []string
	eps     map[string]endpoint.Endpoint
	closers map[string]io.Closer
}

func (b *firstUntried) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *firstUntried) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	for _, n := range b.names {
		if a, ok := b.closers[n].(lb.Available); ok && !a.Available() {
			continue
		}
		if !slices.Contains(tried, n) {
			return lb.Pick{Instance: n, Endpoint: b.eps[n]}, nil
		}
	}
	return lb.Pick{}, lb.ErrNoInstances
}

// Example wires a client the way kitnats does: tracing → retry → balancer →
// per-instance tracing and breaker → transport. The transport is in memory:
// instance "a" has crashed (no responders), "b" serves through a traced
// server endpoint, receiving the attempt's span context as natsrpc would
// in its headers.
func Example() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	otelOpts := []tracing.Option{tracing.WithTracerProvider(tp)}

	// Server side.
	serve := tracing.Server("echo", "Echo", otelOpts...)(func(_ context.Context, req any) (any, error) {
		return strings.ToUpper(req.(string)), nil
	})

	// Client side: the transport's sd.Factory, then a breaker and attempt
	// spans per instance.
	transport := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(ctx context.Context, req any) (any, error) {
			if instance == "a" {
				return nil, nats.ErrNoResponders
			}
			remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.SpanContextFromContext(ctx))
			return serve(remote, req)
		}, nil, nil
	}
	factory := tracing.Factory(
		breaker.Factory(transport, breaker.WithStateChange(tracing.BreakerStateHook(otelOpts...))),
		"echo", "Echo", otelOpts...)

	// lb's endpoint set and a balancer do this part.
	balancer := &firstUntried{names: []string{"a", "b"}, eps: map[string]endpoint.Endpoint{}, closers: map[string]io.Closer{}}
	for _, inst := range balancer.names {
		e, closer, _ := factory(inst)
		balancer.eps[inst], balancer.closers[inst] = e, closer
	}

	call, err := retry.New(balancer, retry.WithObserver(tracing.RetryObserver("echo", "Echo", otelOpts...)))
	if err != nil {
		panic(err)
	}
	call = tracing.Client("echo", "Echo", otelOpts...)(call)

	resp, err := call(context.Background(), "hello")
	fmt.Println(resp, err)
	printTree(spans.Ended())
	// Output:
	// HELLO <nil>
	// echo/Echo client
	//   echo/Echo client kitnats.instance=a kitnats.attempt=1 error.type=no_responders
	//   echo/Echo client kitnats.instance=b kitnats.attempt=2
	//     echo/Echo server
}

// printTree prints spans as a tree, children in attempt order.
func printTree(spans []sdktrace.ReadOnlySpan) {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
	}
	var walk func(parent trace.SpanID, depth int)
	walk = func(parent trace.SpanID, depth int) {
		kids := children[parent]
		slices.SortFunc(kids, func(x, y sdktrace.ReadOnlySpan) int {
			return strings.Compare(attr(x, attemptKey), attr(y, attemptKey))
		})
		for _, s := range kids {
			line := strings.Repeat("  ", depth) + s.Name() + " " + s.SpanKind().String()
			for _, k := range []attribute.Key{instanceKey, attemptKey, "error.type"} {
				if v := attr(s, k); v != "" {
					line += " " + string(k) + "=" + v
				}
			}
			fmt.Println(line)
			walk(s.SpanContext().SpanID(), depth+1)
		}
	}
	walk(trace.SpanID{}, 0)
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.String()
		}
	}
	return ""
}

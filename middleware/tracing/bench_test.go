package tracing_test

import (
	"context"
	"io"
	"testing"

	"github.com/go-kit/kit/endpoint"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

// BenchmarkMiddleware measures the client middleware of kitnats on an
// in-memory endpoint that answers at once: the bare endpoint (raw), Client
// alone with no-op providers (client-noop), the whole client chain —
// Client, retry with RetryObserver, a balancer, Factory's attempt spans,
// per-instance breakers — with no-op providers (chain-noop), and the chain
// recording into the otel SDK (chain-sdk, sampling everything).
func BenchmarkMiddleware(b *testing.B) {
	ok := endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, nil })
	noop := []tracing.Option{
		tracing.WithTracerProvider(tracenoop.NewTracerProvider()),
		tracing.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
	chain := func(b *testing.B, opts []tracing.Option) endpoint.Endpoint {
		transport := func(string) (endpoint.Endpoint, io.Closer, error) { return ok, nil, nil }
		factory := tracing.Factory(breaker.Factory(transport,
			breaker.WithStateChange(tracing.BreakerStateHook(opts...))), "echo", "Echo", opts...)
		bal, _ := newMemBalancer(factory, "a")
		e, err := retry.New(bal, retry.WithObserver(tracing.RetryObserver("echo", "Echo", opts...)))
		if err != nil {
			b.Fatal(err)
		}
		return tracing.Client("echo", "Echo", opts...)(e)
	}
	run := func(b *testing.B, e endpoint.Endpoint) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := e(ctx, nil); err != nil {
					b.Error(err)
				}
			}
		})
	}
	b.Run("raw", func(b *testing.B) { run(b, ok) })
	b.Run("client-noop", func(b *testing.B) { run(b, tracing.Client("echo", "Echo", noop...)(ok)) })
	b.Run("chain-noop", func(b *testing.B) { run(b, chain(b, noop)) })
	b.Run("chain-sdk", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider() // samples everything, exports nowhere
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		}()
		run(b, chain(b, []tracing.Option{tracing.WithTracerProvider(tp), tracing.WithMeterProvider(mp)}))
	})
}

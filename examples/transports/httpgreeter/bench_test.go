package main

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/aegis-sdk/kitnats/examples/transports"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// BenchmarkHTTPCall measures one go-kit HTTP call to one instance on
// loopback three ways, in the same run, over the same server and client:
//
//   - fixed: go-kit's HTTP client endpoint for the instance's address, alone
//     (the baseline);
//   - fixed-chain: the kitnats chain (balancer, retry, breaker, tracing with
//     a no-op provider) over sd.FixedInstancer;
//   - natskv-chain: the same chain over natskv discovery (WithAddresses).
//
// natskv-chain ÷ fixed is what discovery and the chain cost an HTTP call.
func BenchmarkHTTPCall(b *testing.B) {
	ctx := context.Background()
	reg, err := transports.StartRegistry(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	srv, err := Listen("127.0.0.1:0", (&Greeter{ID: "greeter-1"}).Handler(nil))
	if err != nil {
		b.Fatal(err)
	}
	in, err := transports.StartInstance(ctx, reg.Bucket, service, "greeter-1", "http", srv, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Stop()
	hc := NewHTTPClient()
	defer hc.CloseIdleConnections()
	req := HelloRequest{Name: "bench"}
	cfg := transports.Config{Service: service, Method: method, TracerProvider: noop.NewTracerProvider()}

	b.Run("fixed", func(b *testing.B) {
		e, _, err := Factory(hc)(srv.Addr())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fixed-chain", func(b *testing.B) {
		c, err := transports.NewClient(sd.FixedInstancer{srv.Addr()}, Factory(hc), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("natskv-chain", func(b *testing.B) {
		i, err := natskv.NewInstancerContext(ctx, reg.Bucket, service, nil, transports.Liveness, natskv.WithAddresses("http"))
		if err != nil {
			b.Fatal(err)
		}
		defer i.Stop()
		c, err := transports.NewClient(i, Factory(hc), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHTTPCallPaired runs the three calls of BenchmarkHTTPCall in
// turn within every iteration (rotating which goes first) and reports the
// median of each, and natskv-chain's and fixed-chain's medians over
// fixed's: on a shared, noisy machine the three meet the same noise, where
// sequential sub-benchmarks each meet their own.
func BenchmarkHTTPCallPaired(b *testing.B) {
	ctx := context.Background()
	reg, err := transports.StartRegistry(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	srv, err := Listen("127.0.0.1:0", (&Greeter{ID: "greeter-1"}).Handler(nil))
	if err != nil {
		b.Fatal(err)
	}
	in, err := transports.StartInstance(ctx, reg.Bucket, service, "greeter-1", "http", srv, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Stop()
	hc := NewHTTPClient()
	defer hc.CloseIdleConnections()
	req := HelloRequest{Name: "bench"}
	cfg := transports.Config{Service: service, Method: method, TracerProvider: noop.NewTracerProvider()}

	bare, _, err := Factory(hc)(srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	fixed, err := transports.NewClient(sd.FixedInstancer{srv.Addr()}, Factory(hc), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer fixed.Close()
	i, err := natskv.NewInstancerContext(ctx, reg.Bucket, service, nil, transports.Liveness, natskv.WithAddresses("http"))
	if err != nil {
		b.Fatal(err)
	}
	defer i.Stop()
	viaNATS, err := transports.NewClient(i, Factory(hc), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer viaNATS.Close()

	calls := []func(context.Context, any) (any, error){bare, fixed.Call, viaNATS.Call}
	took := make([][]time.Duration, len(calls))
	n := 0
	for b.Loop() {
		for k := range calls {
			j := (n + k) % len(calls)
			start := time.Now()
			if _, err := calls[j](ctx, req); err != nil {
				b.Fatal(err)
			}
			took[j] = append(took[j], time.Since(start))
		}
		n++
	}
	med := make([]float64, len(calls))
	for j, d := range took {
		slices.Sort(d)
		med[j] = float64(d[len(d)/2])
	}
	b.ReportMetric(med[0], "fixed-ns/call")
	b.ReportMetric(med[1], "fixed-chain-ns/call")
	b.ReportMetric(med[2], "natskv-chain-ns/call")
	b.ReportMetric(med[1]/med[0], "fixed-chain/fixed")
	b.ReportMetric(med[2]/med[0], "natskv-chain/fixed")
}

// BenchmarkChainAlone is what the chain itself costs a call, without a
// transport: the same client as above over an endpoint that does nothing,
// beside that endpoint called directly. Its difference is what
// BenchmarkHTTPCall's ratios are made of.
func BenchmarkChainAlone(b *testing.B) {
	ctx := context.Background()
	nop := func(string) (endpoint.Endpoint, io.Closer, error) { return endpoint.Nop, nil, nil }
	cfg := transports.Config{Service: service, Method: method, TracerProvider: noop.NewTracerProvider()}
	b.Run("bare", func(b *testing.B) {
		e, _, _ := nop("127.0.0.1:1")
		b.ReportAllocs()
		for b.Loop() {
			_, _ = e(ctx, nil)
		}
	})
	b.Run("chain", func(b *testing.B) {
		c, err := transports.NewClient(sd.FixedInstancer{"127.0.0.1:1"}, nop, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

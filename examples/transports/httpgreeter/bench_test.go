package main

import (
	"context"
	"testing"

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

package natsrpc_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// BenchmarkEnvelope compares one round trip to a natsrpc Service with the
// 128-byte JSON payload of BenchmarkRequestReply, by protocol:
//
//	headers           this package's own: the body as is, deadline and errors in headers
//	envelope-json     AegisSDK envelopes in JSON (ClientEnvelope(EnvelopeJSON)); the
//	                  Service answers in kind
//	envelope-msgpack  the same in msgpack, params and result converted from and to JSON
//	                  on both sides
//
// Each sub-benchmark reports ns/op, allocations and CPU per op; "paired"
// runs the three in rotating batches and reports the median per-round
// ratio of each envelope caller to headers, by wall and by CPU time, which
// a shared machine's drifting load disturbs far less (see
// BenchmarkRequestReplyPaired).
func BenchmarkEnvelope(b *testing.B) {
	callers := envelopeCallers(b)
	b.Run("serial", func(b *testing.B) {
		runCallers(b, callers, func(b *testing.B, ctx context.Context, call func(context.Context) error) {
			for b.Loop() {
				if err := call(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("parallel", func(b *testing.B) {
		runCallers(b, callers, func(b *testing.B, ctx context.Context, call func(context.Context) error) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	})
	b.Run("paired", func(b *testing.B) {
		const batch = 20
		par := runtime.GOMAXPROCS(0)
		wall := make([][]float64, len(callers))
		cpu := make([][]float64, len(callers))
		took := make([]time.Duration, len(callers))
		used := make([]time.Duration, len(callers))
		round := 0
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			for k := range callers {
				i := (k + round) % len(callers)
				c0, t0 := cpuTime(), time.Now()
				var wg sync.WaitGroup
				for range par {
					wg.Go(func() {
						for range batch {
							if err := callers[i].call(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				took[i], used[i] = time.Since(t0), cpuTime()-c0
			}
			cancel()
			for i := range callers {
				wall[i] = append(wall[i], float64(took[i])/float64(took[0]))
				cpu[i] = append(cpu[i], float64(used[i])/float64(max(used[0], 1)))
			}
			round++
		}
		for i, c := range callers[1:] {
			b.ReportMetric(median(wall[i+1]), c.name+"/headers")
			b.ReportMetric(median(cpu[i+1]), c.name+"/headers-cpu")
		}
	})
}

// envelopeCallers starts a Service and returns a caller per protocol,
// headers first.
func envelopeCallers(b *testing.B) []benchCaller {
	srv := natstest.Start(b)
	snc := natstest.Connect(b, srv.URL())
	cnc := natstest.Connect(b, srv.URL())
	payload := benchPayload(b)

	methods := map[string]*natsrpc.Server{"echo": natsrpc.NewJSONServer(echo)}
	svc, err := natsrpc.NewService(context.Background(), snc, "bench", "i1", methods)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Shutdown(context.Background()) })

	var callers []benchCaller
	for _, c := range []struct {
		name string
		opts []natsrpc.ClientOption
	}{
		{"headers", nil},
		{"envelope-json", []natsrpc.ClientOption{natsrpc.WithEnvelope(natsrpc.EnvelopeJSON)}},
		{"envelope-msgpack", []natsrpc.ClientOption{natsrpc.WithEnvelope(natsrpc.EnvelopeMsgpack)}},
	} {
		client, err := natsrpc.NewServiceClient(cnc, "bench", "echo", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[benchMsg], c.opts...)
		if err != nil {
			b.Fatal(err)
		}
		callers = append(callers, benchCaller{c.name, func(ctx context.Context) error {
			m, err := natsrpc.Call[benchMsg](ctx, client.Endpoint(), payload)
			if err == nil && m != payload {
				b.Errorf("echo %+v", m)
			}
			return err
		}})
	}
	return callers
}

package hedge_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// BenchmarkSlowInstance calls three instances on an embedded NATS server
// through retry, a balancer and natsrpc, one of them slow now and then: 5 %
// of its calls take 200 ms. Without hedging about 1.7 % of calls (a third
// of 5 %) take 200 ms under round robin, so p99 is 200 ms; with hedging
// (the defaults: p95 delay, 10 % budget) they take the delay and a normal
// call. Each sub-benchmark reports latency percentiles, the backups sent and
// won, and the extra load on the servers — requests served beyond one per
// call — in %; hedge=off and hedge=on run in the same process, against the
// same servers.
//
// The load is an open loop at a fixed rate (openLoopRate calls a second,
// each on its own goroutine), well below what the machine can serve: a
// closed loop of callers would call less often while its calls are stuck,
// so the variants would be compared at different loads. ns/op is therefore
// the interval between calls; read the reported metrics.
func BenchmarkSlowInstance(b *testing.B) {
	srv := natstest.Start(b)
	servers := natstest.Connect(b, srv.URL())
	client := natstest.Connect(b, srv.URL())
	var served atomic.Int64
	startGreeters(b, servers, func(ctx context.Context, id string) (string, error) {
		served.Add(1)
		if id == "slow" && rand.Float64() < 0.05 {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return id, nil
	}, "fast-1", "fast-2", "slow")
	set := newSet(b, client, nil, "fast-1", "fast-2", "slow")

	balancers := []struct {
		name string
		new  func() lb.Balancer
	}{
		{"roundrobin", func() lb.Balancer { return lb.New(set, lb.RoundRobin()) }},
		{"leastloaded", func() lb.Balancer { return lb.New(set, lb.LeastLoaded()) }},
	}
	for _, bal := range balancers {
		for _, hedged := range []bool{false, true} {
			name := "balancer=" + bal.name + "/hedge=off"
			if hedged {
				name = "balancer=" + bal.name + "/hedge=on"
			}
			b.Run(name, func(b *testing.B) {
				var h *hedge.Balancer
				balancer := bal.new()
				if hedged {
					h = mustNew(b, balancer)
					balancer = h
				}
				call, err := retry.New(balancer, retry.WithIdempotent())
				if err != nil {
					b.Fatal(err)
				}
				served.Store(0)
				lat := make([]time.Duration, b.N)
				var (
					wg   sync.WaitGroup
					errs atomic.Int64
				)
				ctx := context.Background()
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					if d := time.Until(start.Add(time.Duration(i) * time.Second / openLoopRate)); d > 0 {
						time.Sleep(d)
					}
					wg.Go(func() {
						began := time.Now()
						if _, err := natsrpc.Call[string](ctx, call, "gopher"); err != nil {
							errs.Add(1)
						}
						lat[i] = time.Since(began)
					})
				}
				wg.Wait()
				b.StopTimer()
				if n := errs.Load(); n > 0 {
					b.Fatalf("%d calls failed", n)
				}

				// Backups whose losers were abandoned may still be on their
				// way to a server: wait for them to be counted.
				var sent int64
				if h != nil {
					s := h.Stats()
					sent = int64(s.Sent)
					b.ReportMetric(100*float64(s.Sent)/float64(b.N), "hedged-%")
					b.ReportMetric(100*float64(s.Won)/float64(b.N), "won-%")
					b.ReportMetric(100*float64(s.BudgetExhausted)/float64(b.N), "refused-%")
					b.ReportMetric(float64(s.Delay.Microseconds()), "delay-µs")
				}
				for deadline := time.Now().Add(time.Second); served.Load() < int64(b.N)+sent && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				slices.Sort(lat)
				b.ReportMetric(quantile(lat, 0.50), "p50-µs")
				b.ReportMetric(quantile(lat, 0.99), "p99-µs")
				b.ReportMetric(quantile(lat, 0.999), "p99.9-µs")
				b.ReportMetric(100*float64(served.Load()-int64(b.N))/float64(b.N), "extra-load-%")
			})
		}
	}
}

// openLoopRate is the calls a second BenchmarkSlowInstance offers.
const openLoopRate = 4000

// quantile of sorted latencies in microseconds, nearest rank.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := max(0, min(int(q*float64(len(sorted))+0.5)-1, len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1e3
}

// BenchmarkOverhead is what hedging costs a call that is not hedged — an
// endpoint that answers at once — next to the same call without hedging,
// and to a call that is not marked idempotent (Pick passes it through).
func BenchmarkOverhead(b *testing.B) {
	fb := inOrder{{Instance: "a", Endpoint: answers("a")}, {Instance: "b", Endpoint: answers("b")}}
	h := mustNew(b, fb, hedge.WithDelay(time.Hour))
	for _, bc := range []struct {
		name string
		bal  lb.Balancer
		ctx  context.Context
	}{
		{"baseline", fb, idempotent()},
		{"hedge/idempotent", h, idempotent()},
		{"hedge/not-idempotent", h, context.Background()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := bc.bal.Pick(bc.ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Endpoint(bc.ctx, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

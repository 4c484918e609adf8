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
// of 5 %) take 200 ms, so p99 is 200 ms; with hedging (the defaults: p95
// delay, 10 % budget) they take the delay and a normal call. Each
// sub-benchmark reports latency percentiles and the extra load on the
// servers — requests served beyond one per call — in %; hedge=off and
// hedge=on run in the same process, against the same servers.
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
		{"roundrobin", func() lb.Balancer { return lb.NewRoundRobin(set) }},
		{"leastloaded", func() lb.Balancer { return lb.NewLeastLoaded(set) }},
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
				var (
					mu  sync.Mutex
					lat []time.Duration
				)
				b.SetParallelism(8)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					ctx := context.Background()
					for pb.Next() {
						began := time.Now()
						if _, err := natsrpc.Call[string](ctx, call, "gopher"); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(began))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
				b.StopTimer()

				// Backups the losers of which were abandoned may still be
				// on their way to a server: wait for them to be counted.
				var sent int64
				if h != nil {
					s := h.Stats()
					sent = int64(s.Sent)
					b.ReportMetric(100*float64(s.Sent)/float64(b.N), "hedged-%")
					b.ReportMetric(100*float64(s.Won)/float64(b.N), "won-%")
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

// quantile of sorted latencies in microseconds, nearest rank.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := max(0, min(int(q*float64(len(sorted))+0.5)-1, len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1e3
}

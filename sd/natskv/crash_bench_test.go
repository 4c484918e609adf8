package natskv_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// BenchmarkCrashToRemoval weighs the two bucket designs CreateBucket
// offers: expiry markers (LimitMarkerTTL; the server then allows roll-ups)
// against the default (per-key TTL, no markers, no roll-ups), by the time
// from a crash to the crashed instance leaving the set of every watcher
// (three Instancers on connections of their own). Heartbeat 200 ms, TTL
// 1 s (the server's least). "one" crashes one instance of four; "three"
// crashes three at once, which engages the stale guard where staleness
// alone removes them (markers remove at once, guard or not). Metrics:
// from the crashed instance's last write (the server's time stamp) and
// from the crash, p50 and p99 in ms.
func BenchmarkCrashToRemoval(b *testing.B) {
	for _, design := range []struct {
		name string
		cfg  natskv.BucketConfig
	}{
		{"markers", natskv.BucketConfig{LimitMarkerTTL: time.Second}},
		{"no-markers", natskv.BucketConfig{}},
	} {
		for _, crash := range []int{1, 3} {
			b.Run(fmt.Sprintf("%s/%s", design.name, map[int]string{1: "one", 3: "three"}[crash]), func(b *testing.B) {
				s, bk := newBucket(b, design.cfg)
				liveness := natskv.Options(natskv.WithHeartbeat(200*time.Millisecond), natskv.WithTTL(time.Second))
				var watchers []*natskv.Instancer
				for range 3 {
					wb, err := natskv.BindBucket(ctxT(b), natstest.JetStream(b, natstest.Connect(b, s.URL())), bk.Name())
					if err != nil {
						b.Fatal(err)
					}
					watchers = append(watchers, newInstancer(b, wb, "svc", liveness))
				}
				var fromWrite, fromCrash []time.Duration
				round := 0
				for b.Loop() {
					round++
					var regs []*natskv.Registrar
					var ids []string
					for n := range 4 {
						id := fmt.Sprintf("r%d-%d", round, n)
						r, err := natskv.NewRegistrar(bk, inst("svc", id), nil, liveness)
						if err != nil {
							b.Fatal(err)
						}
						if err := r.RegisterContext(ctxT(b)); err != nil {
							b.Fatal(err)
						}
						regs, ids = append(regs, r), append(ids, id)
					}
					waitAll(b, watchers, ids...)
					time.Sleep(300 * time.Millisecond) // a heartbeat or so in
					crashed := time.Now()
					for _, r := range regs[:crash] {
						r.Close() // the record stays: the process died
					}
					last := crashed
					for _, r := range regs[:crash] {
						if e, err := bk.KeyValue().Get(ctxT(b), r.Key()); err == nil && e.Created().Before(last) {
							last = e.Created()
						}
					}
					waitAll(b, watchers, ids[crash:]...)
					gone := time.Now()
					fromWrite, fromCrash = append(fromWrite, gone.Sub(last)), append(fromCrash, gone.Sub(crashed))
					for _, r := range regs[crash:] {
						_ = r.DeregisterContext(ctxT(b))
						r.Close()
					}
					waitAll(b, watchers)
				}
				report := func(unit string, ds []time.Duration) {
					slices.Sort(ds)
					b.ReportMetric(float64(ds[len(ds)/2].Milliseconds()), unit+"-p50-ms")
					b.ReportMetric(float64(ds[min(len(ds)*99/100, len(ds)-1)].Milliseconds()), unit+"-p99-ms")
				}
				report("write", fromWrite)
				report("crash", fromCrash)
			})
		}
	}
}

// waitAll waits until every watcher offers exactly ids, polling (5 ms).
func waitAll(b *testing.B, ws []*natskv.Instancer, ids ...string) {
	b.Helper()
	slices.Sort(ids)
	deadline := time.Now().Add(waitFor)
	for _, w := range ws {
		for {
			var have []string
			for _, in := range w.Instances() {
				have = append(have, in.InstanceID)
			}
			slices.Sort(have)
			if slices.Equal(have, ids) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("a watcher offers %v, want %v", have, ids)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

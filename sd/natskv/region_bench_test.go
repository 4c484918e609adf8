//go:build unix

package natskv_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// The capacity of one registry bucket, and what regions cost. Run them
// when the machine is quiet:
//
//	go test -run '^$' -bench 'BenchmarkRegion' -benchtime 20000x ./sd/natskv/
//
// Each reports its own baseline beside it, in the same run.

// benchWriters is how many instances heartbeat at once in
// BenchmarkRegionHeartbeatWrites: enough to keep a stream busy.
const benchWriters = 64

// BenchmarkRegionHeartbeatWrites: how many heartbeat writes per second one
// bucket takes, written by benchWriters instances at once, each a Registrar
// rewriting its own record (RegisterContext writes it as a heartbeat
// does: a JetStream publish with Nats-TTL, acknowledged). raw-publish is
// the same publish without kitnats, the baseline. R1 is one server, R3 a
// three-node cluster; gateway-local and gateway-remote write to a region's
// home bucket from its own region and from another one, across the
// gateway.
func BenchmarkRegionHeartbeatWrites(b *testing.B) {
	b.Run("R1", func(b *testing.B) {
		s := natstest.Start(b)
		_, js := rgConn(b, s.URL())
		bk, err := natskv.CreateBucket(rgCtx(b), js, natskv.BucketConfig{Name: "r1"})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("raw-publish", func(b *testing.B) { benchRawWrites(b, js, bk.Name()) })
		b.Run("registrar", func(b *testing.B) { benchRegistrarWrites(b, bk) })
	})
	b.Run("R3", func(b *testing.B) {
		c := natstest.StartCluster(b, 3)
		_, js := rgConn(b, c.URL())
		bk, err := natskv.CreateBucket(rgCtx(b), js, natskv.BucketConfig{Name: "r3", Replicas: 3})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("raw-publish", func(b *testing.B) { benchRawWrites(b, js, bk.Name()) })
		b.Run("registrar", func(b *testing.B) { benchRegistrarWrites(b, bk) })
	})
	b.Run("gateway", func(b *testing.B) {
		sc := natstest.StartSupercluster(b, natstest.SuperclusterConfig{})
		_, jsE := rgConn(b, sc.Region("east").URL())
		_, jsW := rgConn(b, sc.Region("west").URL())
		east := rgProvision(b, jsE, natskv.RegionConfig{Region: "east"})
		b.Run("local", func(b *testing.B) { benchRegistrarWrites(b, east.Home()) })
		remote, err := natskv.BindBucket(rgCtx(b), jsW, east.Home().Name())
		if err != nil {
			b.Fatal(err)
		}
		b.Run("remote", func(b *testing.B) { benchRegistrarWrites(b, remote) })
	})
}

// benchWrites runs b.N writes over benchWriters goroutines, write(w) being
// one write of writer w, and reports writes/s.
func benchWrites(b *testing.B, write func(w int) error) {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range benchWriters {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := write(w); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
}

func benchRawWrites(b *testing.B, js jetstream.JetStream, bucket string) {
	data := make([][]byte, benchWriters)
	for w := range data {
		in := inst("svc", fmt.Sprintf("raw-%d", w))
		in.LastHeartbeat = time.Now()
		data[w], _ = natskv.EncodeInstance(in)
	}
	benchWrites(b, func(w int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m := nats.NewMsg(fmt.Sprintf("$KV.%s.service-instances.svc.raw-%d", bucket, w))
		m.Data = data[w]
		_, err := js.PublishMsg(ctx, m, jetstream.WithMsgTTL(30*time.Second))
		return err
	})
}

func benchRegistrarWrites(b *testing.B, bk *natskv.Bucket) {
	regs := make([]*natskv.Registrar, benchWriters)
	for w := range regs {
		// The heartbeat is long: the benchmark writes, not the loop.
		r, err := natskv.NewRegistrar(bk, inst("svc", fmt.Sprintf("reg-%d", w)), nil, natskv.WithHeartbeat(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		regs[w] = r
	}
	benchWrites(b, func(w int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return regs[w].RegisterContext(ctx)
	})
}

// BenchmarkRegionWatchFanout: one bucket watched by 1, 10 and 100
// processes (each its own connection), every update delivered to all of
// them. all-p50/all-p99 is the time from a write to its delivery to the
// last watcher; cpu-ns/delivery is the CPU time (server and clients, all in
// this process) per update delivered to one watcher. instancer watches
// with natskv Instancers (told of every change by WithChangeFunc);
// raw-watch, the baseline, with nats.go KV watchers.
func BenchmarkRegionWatchFanout(b *testing.B) {
	for _, watchers := range []int{1, 10, 100} {
		for _, kind := range []string{"raw-watch", "instancer"} {
			b.Run(fmt.Sprintf("watchers=%d/%s", watchers, kind), func(b *testing.B) {
				s := natstest.Start(b)
				_, js := rgConn(b, s.URL())
				ctx := rgCtx(b)
				bk, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "fanout"})
				if err != nil {
					b.Fatal(err)
				}
				const key = "service-instances.svc.x"
				if _, err := bk.KeyValue().Put(ctx, key, toggled(0)); err != nil {
					b.Fatal(err)
				}
				got := make(chan uint64, 4*watchers)
				for range watchers {
					_, wjs := rgConn(b, s.URL())
					wb, err := natskv.BindBucket(ctx, wjs, bk.Name())
					if err != nil {
						b.Fatal(err)
					}
					if kind == "raw-watch" {
						w, err := wb.KeyValue().WatchFiltered(ctx, []string{"service-instances.svc.*"}, jetstream.UpdatesOnly())
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { w.Stop() })
						go func() {
							for e := range w.Updates() {
								if e != nil {
									got <- e.Revision()
								}
							}
						}()
						continue
					}
					i, err := natskv.NewInstancer(wb, "svc", nil, natskv.WithReadyWait(rgWait), natskv.WithChangeFunc(func(c natskv.Change) {
						if c.Kind == natskv.ChangeUpdated {
							got <- c.Revision
						}
					}))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(i.Stop)
				}
				lat := make([]time.Duration, 0, b.N)
				cpu0 := cpuTime()
				b.ResetTimer()
				for n := 1; n <= b.N; n++ {
					start := time.Now()
					rev, err := bk.KeyValue().Put(ctx, key, toggled(n))
					if err != nil {
						b.Fatal(err)
					}
					for seen := 0; seen < watchers; {
						select {
						case r := <-got:
							if r == rev {
								seen++
							}
						case <-ctx.Done():
							b.Fatalf("write %d: %d of %d watchers told", n, seen, watchers)
						}
					}
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*watchers), "cpu-ns/delivery")
				percentilesAs(b, lat, "all")
			})
		}
	}
}

// BenchmarkRegionPropagation: the time from a write to an Instancer's being
// told of it (WithChangeFunc), p50 and p99, on a two-region supercluster:
// single-cluster is the baseline, a plain bucket written and watched in
// west; local-region writes to west's home bucket and watches west's view
// (the extra hop every region's own records take); cross-region writes to
// east's home bucket, from east, and watches west's view.
func BenchmarkRegionPropagation(b *testing.B) {
	sc := natstest.StartSupercluster(b, natstest.SuperclusterConfig{})
	_, jsE := rgConn(b, sc.Region("east").URL())
	_, jsW := rgConn(b, sc.Region("west").URL())
	ctx := rgCtx(b)
	regions := []string{"east", "west"}
	east := rgProvision(b, jsE, natskv.RegionConfig{Region: "east", Regions: regions})
	west := rgProvision(b, jsW, natskv.RegionConfig{Region: "west", Regions: regions})
	plain, err := natskv.CreateBucket(ctx, jsW, natskv.BucketConfig{Name: "plain"})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		write, watch *natskv.Bucket
	}{
		{"single-cluster", plain, plain},
		{"local-region", west.Home(), west.View()},
		{"cross-region", east.Home(), west.View()},
	} {
		b.Run(c.name, func(b *testing.B) {
			svc := "svc-" + c.name
			key := "service-instances." + svc + ".x"
			got := make(chan uint64, 16)
			_, wjs := rgConn(b, sc.Region("west").URL())
			wb, err := natskv.BindBucket(ctx, wjs, c.watch.Name())
			if err != nil {
				b.Fatal(err)
			}
			i, err := natskv.NewInstancer(wb, svc, nil, natskv.WithReadyWait(rgWait), natskv.WithChangeFunc(func(ch natskv.Change) {
				if ch.Kind == natskv.ChangeUpdated || ch.Kind == natskv.ChangeAdded {
					got <- 0
				}
			}))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(i.Stop)
			in := inst(svc, "x")
			// Warm up: the sources are set up, the first write is in.
			in.LastHeartbeat = time.Now()
			data, _ := natskv.EncodeInstance(in)
			if _, err := c.write.KeyValue().Put(ctx, key, data); err != nil {
				b.Fatal(err)
			}
			select {
			case <-got:
			case <-ctx.Done():
				b.Fatal("the first write never arrived")
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				in.LastHeartbeat = time.Now()
				data, _ := natskv.EncodeInstance(in)
				start := time.Now()
				if _, err := c.write.KeyValue().Put(ctx, key, data); err != nil {
					b.Fatal(err)
				}
				select {
				case <-got:
				case <-ctx.Done():
					b.Fatal("a write never arrived")
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			percentiles(b, lat)
		})
	}
}

func percentilesAs(b *testing.B, lat []time.Duration, prefix string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), prefix+"-p50-ns")
	b.ReportMetric(float64(lat[min(len(lat)*99/100, len(lat)-1)].Nanoseconds()), prefix+"-p99-ns")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRegionViewIngest: every region's view takes every region's
// writes, so a view, not a home bucket, is the first stream to fill up.
// benchWriters writers, half in east and half in west, write b.N records,
// each under a key of its own (a fleet's heartbeats: no key written twice
// before the view has it), to their regions' home buckets as fast as
// those take them (writes/s); view-writes/s is b.N over the time from the
// first write until west's view holds them all.
func BenchmarkRegionViewIngest(b *testing.B) {
	sc := natstest.StartSupercluster(b, natstest.SuperclusterConfig{})
	_, jsE := rgConn(b, sc.Region("east").URL())
	_, jsW := rgConn(b, sc.Region("west").URL())
	regions := []string{"east", "west"}
	east := rgProvision(b, jsE, natskv.RegionConfig{Region: "east", Regions: regions})
	west := rgProvision(b, jsW, natskv.RegionConfig{Region: "west", Regions: regions})
	ctx := rgCtx(b)
	view, err := jsW.Stream(ctx, "KV_"+west.View().Name())
	if err != nil {
		b.Fatal(err)
	}
	held := func() uint64 {
		info, err := view.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return info.State.Msgs
	}
	in := inst("svc", "x")
	in.LastHeartbeat = time.Now()
	data, _ := natskv.EncodeInstance(in)
	var seq atomic.Int64
	from := held()
	start := time.Now()
	benchWrites(b, func(w int) error {
		r, js := east, jsE
		if w%2 == 1 {
			r, js = west, jsW
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m := nats.NewMsg(fmt.Sprintf("$KV.%s.service-instances.svc.k%d", r.Home().Name(), seq.Add(1)))
		m.Data = data
		_, err := js.PublishMsg(ctx, m, jetstream.WithMsgTTL(time.Hour))
		return err
	})
	b.StartTimer()
	for held() < from+uint64(b.N) {
		if ctx.Err() != nil {
			b.Fatalf("the view holds %d of %d", held()-from, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "view-writes/s")
}

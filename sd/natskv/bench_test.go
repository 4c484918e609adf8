package natskv_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/sd/natskv/internal/scale"
)

func percentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[min(len(lat)*99/100, len(lat)-1)].Nanoseconds()), "p99-ns")
}

// toggled returns instance "x" of svc alternately ACTIVE and UNHEALTHY, so
// every write changes the healthy set.
func toggled(n int) []byte {
	in := inst("svc", "x")
	in.LastHeartbeat = time.Now()
	if n%2 == 1 {
		in.Status = natskv.StatusUnhealthy
	}
	data, _ := natskv.EncodeInstance(in)
	return data
}

// BenchmarkWatchPropagation: Put of an instance record → delivery, through a
// plain nats.go KV watcher (raw) and through an Instancer's sd.Event.
func BenchmarkWatchPropagation(b *testing.B) {
	const key = "service-instances.svc.x"
	b.Run("raw", func(b *testing.B) {
		_, bk := newBucket(b, natskv.BucketConfig{})
		ctx := ctxT(b)
		w, err := bk.KeyValue().WatchFiltered(ctx, []string{"service-instances.svc.*"}, jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Stop()
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			start := time.Now()
			if _, err := bk.KeyValue().Put(ctx, key, toggled(n)); err != nil {
				b.Fatal(err)
			}
			for e := range w.Updates() {
				if e != nil {
					break
				}
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		percentiles(b, lat)
	})
	b.Run("instancer", func(b *testing.B) {
		_, bk := newBucket(b, natskv.BucketConfig{})
		ctx := ctxT(b)
		register(b, bk, inst("svc", "y"))
		i := newInstancer(b, bk, "svc")
		ch := subscribe(b, i)
		waitSet(b, ch, "y")
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			start := time.Now()
			if _, err := bk.KeyValue().Put(ctx, key, toggled(n)); err != nil {
				b.Fatal(err)
			}
			<-ch
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		percentiles(b, lat)
	})
}

// writer toggles instance x every 10 ms until stopped, ignoring errors, so an
// update is always on its way.
func writer(tb testing.TB, url string, bucket string) (stop func()) {
	nc := natstest.Connect(tb, url)
	js := natstest.JetStream(tb, nc)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var kv jetstream.KeyValue
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			if kv == nil {
				kv, _ = js.KeyValue(ctx, bucket)
			}
			if kv != nil {
				kv.Put(ctx, "service-instances.svc.x", toggled(n))
			}
			cancel()
		}
	}()
	return func() { close(done); wg.Wait() }
}

// stampReconnects records when nc reconnects, read from a status listener
// as soon as the client sends the event.
func stampReconnects(tb testing.TB, nc *nats.Conn) <-chan time.Time {
	st := nc.StatusChanged(nats.CONNECTED)
	out := make(chan time.Time, 16)
	go func() {
		for range st {
			out <- time.Now()
		}
	}()
	tb.Cleanup(func() { nc.RemoveStatusListener(st) })
	return out
}

// nextUpdate waits for the next event with a set (not an error).
func nextUpdate(tb testing.TB, ch <-chan sd.Event) time.Time {
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Err == nil {
				return time.Now()
			}
		case <-deadline:
			tb.Fatal("no update within 60 s")
		}
	}
}

func drain(ch <-chan sd.Event) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// measureRestarts restarts s b.N times and reports the mean time from the
// client's reconnect, and from the server being up, to the next update, whose
// arrival next waits for and returns.
func measureRestarts(b *testing.B, s *natstest.Server, reconnected <-chan time.Time, next func() time.Time) {
	var total, fromUp time.Duration
	for range b.N {
		if err := s.Restart(); err != nil {
			b.Fatal(err)
		}
		up := time.Now()
		at := <-reconnected
		got := next()
		total += got.Sub(at)
		fromUp += got.Sub(up)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "recovery-ms")
	b.ReportMetric(float64(fromUp.Microseconds())/1000/float64(b.N), "from-server-up-ms")
}

// BenchmarkWatchRecovery: time from the client's reconnect to a restarted
// server (restart) or from the stop of the node holding the watch consumer
// (node-loss) to the next update delivered, and (from-server-up-ms) from the
// server being up again. restart-nats-defaults and
// restart-reconnect-options connect with nats.go's default reconnect
// settings and with ReconnectOptions. raw-restart is the stock nats.go KV
// watcher, the baseline (one iteration takes ~15 s).
func BenchmarkWatchRecovery(b *testing.B) {
	b.Run("restart", func(b *testing.B) {
		s, bk := newBucket(b, natskv.BucketConfig{})
		nc := natstest.Connect(b, s.URL())
		reconnected := stampReconnects(b, nc)
		ib, err := natskv.BindBucket(ctxT(b), natstest.JetStream(b, nc), bk.Name())
		if err != nil {
			b.Fatal(err)
		}
		defer writer(b, s.URL(), bk.Name())()
		i := newInstancer(b, ib, "svc")
		ch := subscribe(b, i)
		nextUpdate(b, ch)
		measureRestarts(b, s, reconnected, func() time.Time {
			drain(ch)
			return nextUpdate(b, ch)
		})
	})
	// The same from the server's side: the connection's reconnect settings
	// decide when the client sees the restarted server at all.
	for name, opts := range map[string][]nats.Option{
		"restart-nats-defaults":     nil,
		"restart-reconnect-options": natskv.ReconnectOptions(),
	} {
		b.Run(name, func(b *testing.B) {
			s, bk := newBucket(b, natskv.BucketConfig{})
			nc, err := nats.Connect(s.URL(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(nc.Close)
			reconnected := stampReconnects(b, nc)
			ib, err := natskv.BindBucket(ctxT(b), natstest.JetStream(b, nc), bk.Name())
			if err != nil {
				b.Fatal(err)
			}
			defer writer(b, s.URL(), bk.Name())()
			i := newInstancer(b, ib, "svc")
			ch := subscribe(b, i)
			nextUpdate(b, ch)
			measureRestarts(b, s, reconnected, func() time.Time {
				drain(ch)
				return nextUpdate(b, ch)
			})
		})
	}
	b.Run("raw-restart", func(b *testing.B) {
		if testing.Short() {
			b.Skip("slow baseline")
		}
		s, bk := newBucket(b, natskv.BucketConfig{})
		nc := natstest.Connect(b, s.URL())
		reconnected := stampReconnects(b, nc)
		kv, err := natstest.JetStream(b, nc).KeyValue(ctxT(b), bk.Name())
		if err != nil {
			b.Fatal(err)
		}
		defer writer(b, s.URL(), bk.Name())()
		w, err := kv.WatchFiltered(ctxT(b), []string{"service-instances.svc.*"}, jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Stop()
		<-w.Updates()
		measureRestarts(b, s, reconnected, func() time.Time {
			for len(w.Updates()) > 0 {
				<-w.Updates()
			}
			select {
			case <-w.Updates():
			case <-time.After(60 * time.Second):
				b.Fatal("raw watcher silent for 60 s")
			}
			return time.Now()
		})
	})
	b.Run("node-loss", func(b *testing.B) {
		if testing.Short() {
			b.Skip("cluster benchmark skipped in -short mode")
		}
		c := natstest.StartCluster(b, 3)
		ctx := ctxT(b)
		js := natstest.JetStream(b, natstest.Connect(b, c.URL()))
		var bk *natskv.Bucket
		eventually(b, "create R3 bucket", func() (err error) { // peers may still be joining
			bk, err = natskv.CreateBucket(ctx, js, natskv.BucketConfig{Replicas: 3})
			return err
		})
		ib, err := natskv.BindBucket(ctx, natstest.JetStream(b, natstest.Connect(b, c.URL())), bk.Name())
		if err != nil {
			b.Fatal(err)
		}
		defer writer(b, c.URL(), bk.Name())()
		i := newInstancer(b, ib, "svc")
		ch := subscribe(b, i)
		nextUpdate(b, ch)
		var total time.Duration
		for n := 0; n < b.N; n++ {
			var node string
			eventually(b, "find consumer", func() (err error) {
				node, err = watchConsumerNode(ctx, js, bk.Name())
				return err
			})
			c.Node(node).Stop()
			at := time.Now()
			drain(ch)
			total += nextUpdate(b, ch).Sub(at)
			b.StopTimer()
			if err := c.Node(node).StartAgain(); err != nil {
				b.Fatal(err)
			}
			time.Sleep(2 * time.Second) // let the node catch up before the next round
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "recovery-ms")
	})
}

// BenchmarkInstancerScale: 10,000 instances of 1,000 services in one bucket,
// one Instancer per service, all live (internal/scale, which
// bench/etcdcompare runs beside go-kit's etcdv3): the time to build them
// all, the first event of a new Instancer for a service already watched and
// for one that is not, the process's CPU while they sit idle, the heap per
// instance, the JetStream consumers on the server, and update propagation
// with all live beside a raw KV watch. One iteration is the whole scenario:
// run it with -benchtime 1x.
//
// first-event-aegis is a new Instancer on a bucket of the aegis layout with
// as many keys, where a service is found by scanning the bucket (another
// service is watched already); raw-first-event is a nats.go KV watch
// listing one service of the dotted bucket.
func BenchmarkInstancerScale(b *testing.B) {
	b.Run("fleet", func(b *testing.B) {
		for range b.N {
			scale.Run(b, scale.StartNATS(b), scale.DefaultConfig).Report(b)
		}
	})
	const services, per = 1000, 10
	s := natstest.Start(b)
	nc := natstest.Connect(b, s.URL())
	js := natstest.JetStream(b, nc)
	ctx := ctxT(b)
	fill := func(name string, l natskv.Layout) *natskv.Bucket {
		bk, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: name})
		if err != nil {
			b.Fatal(err)
		}
		for sv := range services {
			for n := range per {
				in := inst(fmt.Sprintf("svc%04d", sv), fmt.Sprintf("i%d", n))
				in.LastHeartbeat = time.Now()
				data, _ := natskv.EncodeInstance(in)
				key, _ := l.Key(in.ServiceName, in.InstanceID)
				if _, err := js.PublishAsync("$KV."+name+"."+key, data); err != nil {
					b.Fatal(err)
				}
			}
			if sv%50 == 49 { // a bounded number in flight
				<-js.PublishAsyncComplete()
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("publish timed out")
		}
		return bk
	}
	dotted := fill("scale", natskv.LayoutDotted)
	aegis := fill("scale_aegis", natskv.LayoutAegis)
	b.Run("first-event-aegis", func(b *testing.B) {
		keep := newInstancer(b, aegis, "svc0999", natskv.WithLayout(natskv.LayoutAegis))
		waitSet(b, subscribe(b, keep), "i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9")
		var lat []time.Duration
		for n := 0; n < b.N; n++ {
			start := time.Now()
			i, err := natskv.NewInstancer(aegis, fmt.Sprintf("svc%04d", n%(services-1)), nil, natskv.WithLayout(natskv.LayoutAegis))
			if err != nil {
				b.Fatal(err)
			}
			ch := make(chan sd.Event, 1)
			i.Register(ch)
			if ev := <-ch; len(ev.Instances) != per {
				b.Fatalf("want %d instances, have %v", per, ev)
			}
			lat = append(lat, time.Since(start))
			i.Stop()
		}
		b.ReportMetric(float64(scale.Percentile(lat, 50).Microseconds())/1000, "first-event-p50-ms")
	})
	b.Run("raw-first-event", func(b *testing.B) {
		var lat []time.Duration
		for n := 0; n < b.N; n++ {
			start := time.Now()
			w, err := dotted.KeyValue().WatchFiltered(ctx, []string{fmt.Sprintf("service-instances.svc%04d.*", n%services)})
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for e := range w.Updates() {
				if e == nil {
					break
				}
				got++
			}
			w.Stop()
			if got != per {
				b.Fatalf("want %d, have %d", per, got)
			}
			lat = append(lat, time.Since(start))
		}
		b.ReportMetric(float64(scale.Percentile(lat, 50).Microseconds())/1000, "first-event-p50-ms")
	})
}

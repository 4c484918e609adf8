// Package scale is the fleet-scale scenario of natskv's benchmarks, run the
// same way over any go-kit discovery backend: natskv's own benchmark runs it
// over NATS, bench/etcdcompare over go-kit's etcdv3 beside NATS. It is test
// support; nothing in the library imports it.
//
// The scenario: Services services of PerService instances each are
// registered; one Instancer per service is built and subscribed (all live);
// then it measures the time to build them all, the heap they hold, the
// process's CPU while they sit idle, the backend's server-side watches, the
// first event of a new Instancer for a service already watched and for one
// that is not, and an update's propagation to its subscriber — beside the
// same propagation through the backend's raw client watch.
package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
)

// Backend is one discovery system under test.
type Backend interface {
	// Fill registers per healthy instances of each service.
	Fill(ctx context.Context, services []string, per int) error
	// Set rewrites instance 0 of service as healthy or not: one write that
	// changes the service's healthy set.
	Set(ctx context.Context, service string, healthy bool) error
	// NewInstancer is the backend's go-kit Instancer for service.
	NewInstancer(service string) (sd.Instancer, error)
	// ServerWatches is the number of watch resources the server holds for
	// the process (JetStream consumers, etcd watchers).
	ServerWatches(ctx context.Context) (int, error)
	// RawWatch watches service through the backend's own client; every
	// change is a value on the channel.
	RawWatch(ctx context.Context, service string) (<-chan struct{}, func(), error)
}

// Config sizes the scenario.
type Config struct {
	Services   int
	PerService int
	Samples    int           // first events and updates measured
	Quiet      time.Duration // the idle window
}

// DefaultConfig is the fixture: 10,000 instances across 1,000
// services.
var DefaultConfig = Config{Services: 1000, PerService: 10, Samples: 200, Quiet: 3 * time.Second}

// Result is what the scenario measured.
type Result struct {
	BuildAll         time.Duration
	FirstFollowed    time.Duration // p50
	FirstNew         time.Duration // p50
	IdleCPU          float64       // percent of one core
	BytesPerInstance float64
	ServerWatches    int
	UpdateP50        time.Duration
	UpdateP99        time.Duration
	RawP50           time.Duration
	RawP99           time.Duration
}

// Report reports r's figures as benchmark metrics.
func (r Result) Report(b *testing.B) {
	b.ReportMetric(float64(r.BuildAll.Microseconds())/1000, "build-all-ms")
	b.ReportMetric(float64(r.FirstFollowed.Nanoseconds())/1000, "first-followed-p50-µs")
	b.ReportMetric(float64(r.FirstNew.Nanoseconds())/1000, "first-new-p50-µs")
	b.ReportMetric(r.IdleCPU, "idle-cpu-%")
	b.ReportMetric(r.BytesPerInstance, "heap-B/instance")
	b.ReportMetric(float64(r.ServerWatches), "server-watches")
	b.ReportMetric(float64(r.UpdateP50.Nanoseconds())/1000, "update-p50-µs")
	b.ReportMetric(float64(r.UpdateP99.Nanoseconds())/1000, "update-p99-µs")
	b.ReportMetric(float64(r.RawP50.Nanoseconds())/1000, "raw-p50-µs")
	b.ReportMetric(float64(r.RawP99.Nanoseconds())/1000, "raw-p99-µs")
}

// Service is the name of service n.
func Service(n int) string { return fmt.Sprintf("svc%04d", n) }

// RawService is the service the raw watch measures: registered, watched by
// no Instancer.
const RawService = "rawsvc"

type live struct {
	inst sd.Instancer
	ch   chan sd.Event
}

func newLive(be Backend, svc string) (*live, error) {
	i, err := be.NewInstancer(svc)
	if err != nil {
		return nil, err
	}
	l := &live{inst: i, ch: make(chan sd.Event, 1)}
	i.Register(l.ch)
	return l, nil
}

func (l *live) stop() {
	l.inst.Deregister(l.ch)
	l.inst.Stop()
}

// next waits for the next event with a set.
func (l *live) next(tb testing.TB) sd.Event {
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-l.ch:
			if ev.Err == nil {
				return ev
			}
		case <-deadline:
			tb.Fatal("scale: no event within 30 s")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Percentile is the p-th percentile of d (which it sorts).
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)*p/100, len(d)-1)]
}

// Run runs the scenario over be.
func Run(tb testing.TB, be Backend, cfg Config) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	services := make([]string, cfg.Services)
	for n := range services {
		services[n] = Service(n)
	}
	if err := be.Fill(ctx, append(slices.Clone(services), RawService), cfg.PerService); err != nil {
		tb.Fatal(err)
	}
	var r Result

	// Build them all, one after the other as a program would, each with a
	// subscriber.
	before := heap()
	lives := make([]*live, cfg.Services)
	start := time.Now()
	for n, svc := range services {
		l, err := newLive(be, svc)
		if err != nil {
			tb.Fatal(err)
		}
		lives[n] = l
	}
	for _, l := range lives {
		if ev := l.next(tb); len(ev.Instances) != cfg.PerService {
			tb.Fatalf("scale: want %d instances, have %v", cfg.PerService, ev)
		}
	}
	r.BuildAll = time.Since(start)
	defer func() {
		for _, l := range lives {
			l.stop()
		}
	}()
	r.BytesPerInstance = float64(int64(heap())-int64(before)) / float64(cfg.Services*cfg.PerService)

	// The idle window.
	time.Sleep(200 * time.Millisecond)
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(cfg.Quiet)
	r.IdleCPU = 100 * float64(cpuTime()-c0) / float64(time.Since(t0))
	if n, err := be.ServerWatches(ctx); err == nil {
		r.ServerWatches = n
	} else {
		r.ServerWatches = -1
	}

	rnd := rand.New(rand.NewPCG(1, 2))
	// Propagation, all live: one write, to the subscriber of its service;
	// then the same through the raw client watch of a service no Instancer
	// watches.
	time.Sleep(200 * time.Millisecond)
	state := make([]bool, cfg.Services) // true: instance 0 unhealthy
	var upd []time.Duration
	for range cfg.Samples {
		n := rnd.IntN(cfg.Services)
		state[n] = !state[n]
		t := time.Now()
		if err := be.Set(ctx, services[n], !state[n]); err != nil {
			tb.Fatal(err)
		}
		lives[n].next(tb)
		upd = append(upd, time.Since(t))
	}
	r.UpdateP50, r.UpdateP99 = Percentile(upd, 50), Percentile(upd, 99)
	raw, stopRaw, err := be.RawWatch(ctx, RawService)
	if err != nil {
		tb.Fatal(err)
	}
	var rawLat []time.Duration
	healthy := true
	for range cfg.Samples {
		healthy = !healthy
		t := time.Now()
		if err := be.Set(ctx, RawService, healthy); err != nil {
			tb.Fatal(err)
		}
		select {
		case <-raw:
		case <-time.After(30 * time.Second):
			tb.Fatal("scale: raw watch silent for 30 s")
		}
		rawLat = append(rawLat, time.Since(t))
	}
	stopRaw()
	r.RawP50, r.RawP99 = Percentile(rawLat, 50), Percentile(rawLat, 99)

	// First events: a second Instancer for a service already watched, and
	// a new Instancer for a service no longer watched. They come last:
	// go-kit's etcdv3 Instancer leaves its watch running after Stop, and
	// these stop many.
	var followed, fresh []time.Duration
	for range cfg.Samples {
		n := rnd.IntN(cfg.Services)
		t := time.Now()
		l, err := newLive(be, services[n])
		if err != nil {
			tb.Fatal(err)
		}
		l.next(tb)
		followed = append(followed, time.Since(t))
		l.stop()
	}
	for range cfg.Samples {
		n := rnd.IntN(cfg.Services)
		lives[n].stop()
		t := time.Now()
		l, err := newLive(be, services[n])
		if err != nil {
			tb.Fatal(err)
		}
		l.next(tb)
		fresh = append(fresh, time.Since(t))
		lives[n] = l
	}
	r.FirstFollowed, r.FirstNew = Percentile(followed, 50), Percentile(fresh, 50)

	return r
}

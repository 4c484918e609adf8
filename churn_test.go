package kitnats_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// Churn: a fleet whose instances come and go all day. The fleet — a NATS
// server, stable instances and a stream of fresh instance IDs, two in three
// leaving cleanly and one in three crashing (heartbeats stop, the record is
// left to its TTL) — runs in a child process (TestChurnFleet), so that the
// heap and goroutines measured here are the client's alone. Fates follow
// the ID's number: churn-N crashes when N%3 == 2.

const churnFleetEnv = "KITNATS_CHURN_FLEET"

// churnConfig is one churn scenario.
type churnConfig struct {
	ids      int           // fresh instance IDs to churn through
	every    time.Duration // a fresh ID every
	lifetime time.Duration // how long each one lives
	stable   int           // instances that stay throughout
	workers  int           // concurrent callers
	// heartbeat and ttl of every registrar and of the client's instancer;
	// zero: fastLiveness (200 ms and 1 s).
	heartbeat, ttl time.Duration
}

func (c churnConfig) liveness() natskv.Option {
	if c.heartbeat == 0 {
		return fastLiveness
	}
	return natskv.Options(natskv.WithHeartbeat(c.heartbeat), natskv.WithTTL(c.ttl))
}

func (c churnConfig) env() []string {
	return append(os.Environ(),
		churnFleetEnv+"=1",
		"KITNATS_CHURN_EVERY="+c.every.String(),
		"KITNATS_CHURN_LIFETIME="+c.lifetime.String(),
		"KITNATS_CHURN_STABLE="+strconv.Itoa(c.stable),
		"KITNATS_CHURN_HEARTBEAT="+c.heartbeat.String(),
		"KITNATS_CHURN_TTL="+c.ttl.String())
}

// TestChurnFleet is the fleet's process; it does nothing unless started by
// startFleet. It prints the server's URL, then churns until its standard
// input closes.
func TestChurnFleet(t *testing.T) {
	if os.Getenv(churnFleetEnv) == "" {
		t.Skip("the churn fleet runs only as the child of a churn test")
	}
	every, _ := time.ParseDuration(os.Getenv("KITNATS_CHURN_EVERY"))
	lifetime, _ := time.ParseDuration(os.Getenv("KITNATS_CHURN_LIFETIME"))
	stable, _ := strconv.Atoi(os.Getenv("KITNATS_CHURN_STABLE"))
	var cfg churnConfig
	cfg.heartbeat, _ = time.ParseDuration(os.Getenv("KITNATS_CHURN_HEARTBEAT"))
	cfg.ttl, _ = time.ParseDuration(os.Getenv("KITNATS_CHURN_TTL"))
	live := cfg.liveness()
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	bucket := newBucket(t, nc)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range stable {
		wg.Go(func() { churnOne(s.URL(), bucket, fmt.Sprintf("stable-%d", i+1), -1, live, stop) })
	}
	fmt.Printf("url %s\n", s.URL())

	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			wg.Wait()
			return
		case <-tick.C:
		}
		wg.Go(func() { churnOne(s.URL(), bucket, fmt.Sprintf("churn-%d", n), lifetime, live, stop) })
	}
}

// churnOne runs instance id for its lifetime (< 0: until stop), then stops
// it cleanly or crashes it, as its number says.
func churnOne(url string, b *natskv.Bucket, id string, lifetime time.Duration, live natskv.Option, stop chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natstest.Dial(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer nc.Close()
	srv := natsrpc.NewJSONServer(func(_ context.Context, req echoRequest) (echoResponse, error) {
		return echoResponse{Payload: req.Payload, Instance: id}, nil
	})
	svc, err := natsrpc.NewService(ctx, nc, service, id, map[string]*natsrpc.Server{method: srv})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	reg, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, nil, live)
	if err == nil {
		err = reg.RegisterContext(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = svc.Shutdown(ctx)
		return
	}
	var after <-chan time.Time
	if lifetime >= 0 {
		after = time.After(lifetime)
	}
	select {
	case <-after:
	case <-stop:
	}
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, churn := churnNumber(id); churn && n%3 == 2 {
		reg.Close() // heartbeats stop; the record is left to its TTL
		nc.Close()  // and nothing answers on the instance's subjects
		return
	}
	_ = reg.DeregisterContext(ctx)
	_ = svc.Shutdown(ctx)
	reg.Close()
}

// churnNumber is the number of the churn instance named name.
func churnNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "churn-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// fleet is the child process.
type fleet struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	url    string
	stderr strings.Builder
	done   chan struct{}
}

func startFleet(tb testing.TB, cfg churnConfig) *fleet {
	tb.Helper()
	f := &fleet{done: make(chan struct{})}
	f.cmd = exec.Command(os.Args[0], "-test.run=^TestChurnFleet$", "-test.count=1")
	f.cmd.Env = cfg.env()
	f.cmd.Stderr = &syncWriter{b: &f.stderr}
	var err error
	if f.stdin, err = f.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	urlc := make(chan string, 1)
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "url "); ok {
				urlc <- u
			}
		}
	}()
	select {
	case f.url = <-urlc:
	case <-f.done:
		_ = f.cmd.Wait()
		tb.Fatalf("fleet process ended before it started: %s", f.stderr.String())
	case <-time.After(60 * time.Second):
		f.stop()
		tb.Fatal("fleet process did not start")
	}
	return f
}

// stop ends the churn and waits for the fleet to shut down.
func (f *fleet) stop() {
	_ = f.stdin.Close()
	<-f.done
	_ = f.cmd.Wait()
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<16 {
		w.b.Write(p)
	}
	return len(p), nil
}

// churnProbe watches the client from the inside: the instances its factory
// built (fresh IDs seen), each crashed instance's first "no responders",
// and when the set stopped offering it. Its memory is fixed: a ring of
// slots by ID number.
type churnProbe struct {
	built atomic.Int64 // churn IDs the factory was asked for
	mu    sync.Mutex
	ring  [4096]struct {
		n       int
		first   time.Time // first no responders
		removed bool
	}
	removal   []time.Duration // crashed instances: first no responders → out of the candidates
	unmeasued int             // crashed instances removed without a no responders first
	prev      map[string]struct{}
}

// factory counts the instances built and wraps each endpoint to note its
// first "no responders", beneath every middleware.
func (p *churnProbe) factory(next sd.Factory) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, c, err := next(instance)
		if err != nil {
			return e, c, err
		}
		n, churn := churnNumber(instance)
		if !churn {
			return e, c, nil
		}
		p.built.Add(1)
		return func(ctx context.Context, req any) (any, error) {
			resp, err := e(ctx, req)
			if err != nil && n%3 == 2 && errors.Is(err, nats.ErrNoResponders) {
				p.mu.Lock()
				s := &p.ring[n%len(p.ring)]
				if s.n != n {
					s.n, s.first, s.removed = n, time.Time{}, false
				}
				if s.first.IsZero() {
					s.first = time.Now()
				}
				p.mu.Unlock()
			}
			return resp, err
		}, c, nil
	}
}

// view notes the crashed instances a view no longer offers.
func (p *churnProbe) view(v *lb.View) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := make(map[string]struct{}, v.Len())
	for _, in := range v.Instances() {
		cur[in.Name()] = struct{}{}
	}
	for name := range p.prev {
		if _, ok := cur[name]; ok {
			continue
		}
		n, churn := churnNumber(name)
		if !churn || n%3 != 2 {
			continue
		}
		s := &p.ring[n%len(p.ring)]
		if s.n != n {
			s.n, s.first, s.removed = n, time.Time{}, false
		}
		if s.removed {
			continue // back on a probe and out again: the first removal counts
		}
		s.removed = true
		if s.first.IsZero() {
			p.unmeasued++
			continue
		}
		p.removal = append(p.removal, now.Sub(s.first))
	}
	p.prev = cur
}

// churnResult is what one churn run measured.
type churnResult struct {
	calls, failed int64
	errs          []error         // the first few
	heapFirst     uint64          // median heap after GC over the first thousand IDs
	heapLast      uint64          // … and the last thousand
	gorFirst      int             // median goroutines, first thousand IDs
	gorLast       int             // … last thousand
	removal       []time.Duration // sorted
	unmeasured    int
	ids           int64
	elapsed       time.Duration
}

func (r churnResult) quantile(q float64) time.Duration {
	if len(r.removal) == 0 {
		return 0
	}
	return r.removal[min(len(r.removal)-1, int(q*float64(len(r.removal))))]
}

func (r churnResult) String() string {
	return fmt.Sprintf("%d IDs in %v: %d calls, %d failed; heap after GC %.2f → %.2f MB, goroutines %d → %d; "+
		"crash removal from first no responders (%d crashes, %d without one): p50 %v p99 %v",
		r.ids, r.elapsed.Round(time.Millisecond), r.calls, r.failed, float64(r.heapFirst)/1e6, float64(r.heapLast)/1e6,
		r.gorFirst, r.gorLast, len(r.removal), r.unmeasured, r.quantile(0.5), r.quantile(0.99))
}

// churnClient is a client under test: the endpoint to call, and a
// function to stop it.
type churnClient struct {
	call endpoint.Endpoint
	stop func()
}

// kitnatsClient is the README's chain: natskv → lb.NewEndpointSet with a
// breaker (WithConn) and tracing per instance → least-loaded → hedge →
// retry with a per-attempt timeout, calls idempotent.
func kitnatsClient(tb testing.TB, nc *nats.Conn, b *natskv.Bucket, p *churnProbe, live natskv.Option) churnClient {
	tb.Helper()
	otel := tracing.WithTracerProvider(noop.NewTracerProvider())
	instancer, err := natskv.NewInstancer(b, service, nil, live)
	if err != nil {
		tb.Fatal(err)
	}
	factory := p.factory(natsrpc.JSONFactory[echoResponse](nc, service, method))
	factory = breaker.Factory(factory, breaker.WithConn(nc))
	factory = tracing.Factory(factory, service, method, otel)
	set := lb.NewEndpointSet(instancer, factory, nil)
	cancel := set.Subscribe(p.view)
	hedged, err := hedge.New(lb.New(set, lb.LeastLoaded()), hedge.WithMethod(service, method))
	if err != nil {
		tb.Fatal(err)
	}
	// A request in flight at the instant its instance crashes is never
	// answered: the hedge's backup usually covers it, but not when the hedge
	// budget is spent, and then the call would wait out its whole deadline
	// (1 call in ~55,000 on a loaded CI machine). The attempt timeout is what
	// the README tells churning fleets to add.
	call, err := retry.New(hedged, retry.WithMaxAttempts(4), retry.WithIdempotent(),
		retry.WithAttemptTimeout(time.Second),
		retry.WithObserver(tracing.RetryObserver(service, method, otel)))
	if err != nil {
		tb.Fatal(err)
	}
	call = tracing.Client(service, method, otel)(call)
	waitFor(tb, func() bool { return len(set.Instances()) >= 2 })
	return churnClient{call: call, stop: func() {
		cancel()
		set.Close()
		instancer.Stop()
	}}
}

// gokitClient is what go-kit's own users wire over natskv: sd.NewEndpointer
// with the natsrpc factory, go-kit's round robin and lb.Retry.
func gokitClient(tb testing.TB, nc *nats.Conn, b *natskv.Bucket, p *churnProbe, live natskv.Option) churnClient {
	tb.Helper()
	instancer, err := natskv.NewInstancer(b, service, nil, live)
	if err != nil {
		tb.Fatal(err)
	}
	endpointer := sd.NewEndpointer(instancer, p.factory(natsrpc.JSONFactory[echoResponse](nc, service, method)), nil)
	call := kitlb.Retry(4, 5*time.Second, kitlb.NewRoundRobin(endpointer))
	waitFor(tb, func() bool { e, _ := endpointer.Endpoints(); return len(e) >= 2 })
	return churnClient{call: call, stop: func() {
		endpointer.Close()
		instancer.Stop()
	}}
}

// gokitSetClient is go-kit's round robin and lb.Retry over kitnats'
// lb.EndpointSet, which is an sd.Endpointer too: what the README tells
// go-kit users to put in place of sd.NewEndpointer.
func gokitSetClient(tb testing.TB, nc *nats.Conn, b *natskv.Bucket, p *churnProbe, live natskv.Option) churnClient {
	tb.Helper()
	instancer, err := natskv.NewInstancer(b, service, nil, live)
	if err != nil {
		tb.Fatal(err)
	}
	set := lb.NewEndpointSet(instancer, p.factory(natsrpc.JSONFactory[echoResponse](nc, service, method)), nil)
	cancel := set.Subscribe(p.view)
	call := kitlb.Retry(4, 5*time.Second, kitlb.NewRoundRobin(set))
	waitFor(tb, func() bool { return len(set.Instances()) >= 2 })
	return churnClient{call: call, stop: func() {
		cancel()
		set.Close()
		instancer.Stop()
	}}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runChurn runs the fleet of cfg against the client newClient makes, with
// cfg.workers callers throughout, until the client has seen cfg.ids fresh
// IDs.
func runChurn(tb testing.TB, cfg churnConfig, newClient func(testing.TB, *nats.Conn, *natskv.Bucket, *churnProbe, natskv.Option) churnClient) churnResult {
	tb.Helper()
	f := startFleet(tb, cfg)
	defer func() {
		f.stop()
		if tb.Failed() {
			tb.Logf("fleet stderr: %s", f.stderr.String())
		}
	}()
	nc, err := natstest.Dial(f.url)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	b, err := natskv.BindBucket(ctx, js, "registry")
	cancel()
	if err != nil {
		tb.Fatal(err)
	}
	p := &churnProbe{}
	c := newClient(tb, nc, b, p, cfg.liveness())

	var (
		res   churnResult
		mu    sync.Mutex
		calls atomic.Int64
		fails atomic.Int64
	)
	load, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Go(func() {
			for n := 0; load.Err() == nil; n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := natsrpc.Call[echoResponse](ctx, c.call, echoRequest{Payload: strconv.Itoa(w*1_000_000 + n)})
				cancel()
				calls.Add(1)
				if err != nil {
					fails.Add(1)
					mu.Lock()
					if len(res.errs) < 10 {
						res.errs = append(res.errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}

	// Heap after GC and goroutines, sampled every 100 IDs.
	type sample struct {
		ids  int64
		heap uint64
		gor  int
	}
	var samples []sample
	start := time.Now()
	deadline := start.Add(time.Duration(cfg.ids)*cfg.every*3 + 60*time.Second)
	for next := int64(100); next <= int64(cfg.ids); {
		if time.Now().After(deadline) {
			stopLoad()
			wg.Wait()
			c.stop()
			tb.Fatalf("the client saw only %d of %d IDs", p.built.Load(), cfg.ids)
		}
		if p.built.Load() < next {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, sample{next, ms.HeapAlloc, runtime.NumGoroutine()})
		next += 100
	}
	res.elapsed = time.Since(start)
	stopLoad()
	wg.Wait()
	c.stop()

	res.calls, res.failed, res.ids = calls.Load(), fails.Load(), p.built.Load()
	half := int64(cfg.ids) / 2
	var hf, hl []uint64
	var gf, gl []int
	for _, s := range samples {
		if s.ids <= half {
			hf, gf = append(hf, s.heap), append(gf, s.gor)
		} else {
			hl, gl = append(hl, s.heap), append(gl, s.gor)
		}
	}
	res.heapFirst, res.heapLast = median(hf), median(hl)
	res.gorFirst, res.gorLast = median(gf), median(gl)
	p.mu.Lock()
	res.removal = slices.Clone(p.removal)
	res.unmeasured = p.unmeasued
	p.mu.Unlock()
	slices.Sort(res.removal)
	return res
}

func median[T int | uint64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestChurn: fresh IDs at 40 a second, a third of them crashing, two
// stable instances, callers throughout through the README's chain. No
// call fails; the client's heap after GC and its goroutines stay flat from
// the first thousand IDs to the last.
func TestChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("churns thousands of instances")
	}
	cfg := churnConfig{ids: 2000, every: 25 * time.Millisecond, lifetime: 300 * time.Millisecond, stable: 2, workers: 4}
	r := runChurn(t, cfg, kitnatsClient)
	t.Log(r)
	if r.failed != 0 {
		t.Errorf("%d of %d calls failed; first errors: %v", r.failed, r.calls, r.errs)
	}
	if float64(r.heapLast) > 1.10*float64(r.heapFirst) {
		t.Errorf("heap after GC grew more than 10%%: %d → %d bytes", r.heapFirst, r.heapLast)
	}
	if r.gorLast > r.gorFirst+4 {
		t.Errorf("goroutines grew: %d → %d", r.gorFirst, r.gorLast)
	}
}

// BenchmarkChurn runs churn scenarios for b.N fresh IDs each (-benchtime
// 3000x, say) and reports what the client got: failed calls, the time
// from a crashed instance's first "no responders" to its removal from the
// candidates (p50, p99), heap after GC and goroutines over the first and
// the second half of the IDs. "issue" is the fleet of issue 20 (two stable
// instances, three fresh IDs a second living 300 ms, heartbeat 1 s, TTL
// 3 s); "fast" is TestChurn's. kitnats is the README's chain; gokit is
// go-kit's sd.NewEndpointer, round robin and lb.Retry(4) over natskv;
// gokit-set the same with lb.NewEndpointSet in place of sd.NewEndpointer.
func BenchmarkChurn(b *testing.B) {
	issue := churnConfig{every: 333 * time.Millisecond, lifetime: 300 * time.Millisecond, stable: 2, workers: 4,
		heartbeat: time.Second, ttl: 3 * time.Second}
	fast := churnConfig{every: 25 * time.Millisecond, lifetime: 300 * time.Millisecond, stable: 2, workers: 4}
	for _, sc := range []struct {
		name   string
		cfg    churnConfig
		client func(testing.TB, *nats.Conn, *natskv.Bucket, *churnProbe, natskv.Option) churnClient
	}{
		{"issue/kitnats", issue, kitnatsClient},
		{"issue/gokit", issue, gokitClient},
		{"issue/gokit-set", issue, gokitSetClient},
		{"fast/kitnats", fast, kitnatsClient},
		{"fast/gokit", fast, gokitClient},
		{"fast/gokit-set", fast, gokitSetClient},
	} {
		b.Run(sc.name, func(b *testing.B) {
			cfg := sc.cfg
			cfg.ids = b.N
			if b.N < 100 {
				return // the runner's first run, or -benchtime too short: an op is one fresh instance ID; run with -benchtime Nx, N ≥ 100
			}
			r := runChurn(b, cfg, sc.client)
			b.Log(r)
			b.ReportMetric(float64(r.calls), "calls")
			b.ReportMetric(float64(r.failed), "failed-calls")
			b.ReportMetric(100*float64(r.failed)/float64(max(r.calls, 1)), "%failed")
			b.ReportMetric(float64(r.quantile(0.5).Microseconds())/1e3, "removal-p50-ms")
			b.ReportMetric(float64(r.quantile(0.99).Microseconds())/1e3, "removal-p99-ms")
			b.ReportMetric(float64(r.heapFirst)/1e6, "heap-first-MB")
			b.ReportMetric(float64(r.heapLast)/1e6, "heap-last-MB")
			b.ReportMetric(float64(r.gorFirst), "goroutines-first")
			b.ReportMetric(float64(r.gorLast), "goroutines-last")
		})
	}
}

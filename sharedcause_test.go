package kitnats_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kitlog "github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// When every instance fails for one cause — NATS restarts, or a dependency
// of all of them fails — no instance is blamed for long: the load spreads
// over all of them again, and none is left out as gone or behind an open
// breaker. The known-dead rule must not take panic mode's guard away.

// sharedFleet is four instances, each on its own connection, whose
// handlers fail while down is set, and a client through the README's
// chain counting who served what.
type sharedFleet struct {
	down    atomic.Bool
	marks   atomic.Int64 // instances the set took out as gone
	set     *lb.EndpointSet
	call    func(ctx context.Context) (string, error)
	servedM sync.Mutex
	served  map[string]int
}

func newSharedFleet(t *testing.T, url string) *sharedFleet {
	t.Helper()
	f := &sharedFleet{served: map[string]int{}}
	nc := natstest.Connect(t, url)
	bucket := newBucket(t, nc)
	for i := range 4 {
		id := fmt.Sprintf("shared-%d", i+1)
		inc := natstest.Connect(t, url)
		srv := natsrpc.NewJSONServer(func(_ context.Context, req echoRequest) (echoResponse, error) {
			if f.down.Load() {
				return echoResponse{}, fmt.Errorf("a dependency of every instance failed")
			}
			return echoResponse{Payload: req.Payload, Instance: id}, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		svc, err := natsrpc.NewService(ctx, inc, service, id, map[string]*natsrpc.Server{method: srv})
		if err != nil {
			t.Fatal(err)
		}
		reg, err := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, nil, fastLiveness)
		if err == nil {
			err = reg.RegisterContext(ctx)
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			reg.Close()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = svc.Shutdown(sctx)
		})
	}
	instancer, err := natskv.NewInstancer(bucket, service, nil, fastLiveness)
	if err != nil {
		t.Fatal(err)
	}
	factory := breaker.Factory(natsrpc.JSONFactory[echoResponse](nc, service, method), breaker.WithConn(nc))
	f.set = lb.NewEndpointSet(instancer, factory, kitlog.LoggerFunc(func(kv ...any) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == "gone" && strings.HasPrefix(fmt.Sprint(kv[i+1]), "no responders") {
				f.marks.Add(1)
			}
		}
		return nil
	}))
	t.Cleanup(func() {
		f.set.Close()
		instancer.Stop()
	})
	// Round robin, not least-loaded: the spread asserted below is the guard's
	// (no instance left out), and least-loaded rightly avoids an instance that
	// holds a call stuck across the restart for as long as that call waits.
	hedged, err := hedge.New(lb.New(f.set, lb.RoundRobin()), hedge.WithMethod(service, method))
	if err != nil {
		t.Fatal(err)
	}
	e, err := retry.New(hedged, retry.WithMaxAttempts(4), retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}
	f.call = func(ctx context.Context) (string, error) {
		resp, err := natsrpc.Call[echoResponse](ctx, e, echoRequest{Payload: "x"})
		return resp.Instance, err
	}
	waitFor(t, func() bool { return len(f.set.Instances()) == 4 })
	return f
}

// load calls with workers until stop is called; it counts who served.
func (f *sharedFleet) load(workers int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				who, err := f.call(cctx)
				ccancel()
				if err == nil {
					f.servedM.Lock()
					f.served[who]++
					f.servedM.Unlock()
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// spread waits until n more calls have been served and reports how many
// each instance served of them.
func (f *sharedFleet) spread(t *testing.T, n int) map[string]int {
	t.Helper()
	f.servedM.Lock()
	clear(f.served)
	f.servedM.Unlock()
	waitFor(t, func() bool {
		f.servedM.Lock()
		defer f.servedM.Unlock()
		total := 0
		for _, c := range f.served {
			total += c
		}
		return total >= n
	})
	f.servedM.Lock()
	defer f.servedM.Unlock()
	out := map[string]int{}
	for k, v := range f.served {
		out[k] = v
	}
	return out
}

func assertSpread(t *testing.T, what string, counts map[string]int, n int) {
	t.Helper()
	t.Logf("%s: %v", what, counts)
	for i := range 4 {
		id := fmt.Sprintf("shared-%d", i+1)
		if counts[id] < n/4/3 {
			t.Errorf("%s: %s served %d of %d calls, want the load spread over all four", what, id, counts[id], n)
		}
	}
}

// TestSharedCauseNATSRestart: the server restarts under load. Every
// instance is unreachable for a while, and those that reconnect later than
// others find no responders on their subjects — a shared cause, not a
// crash. Afterwards every instance serves its share again, and none is
// left out.
func TestSharedCauseNATSRestart(t *testing.T) {
	s := natstest.Start(t)
	f := newSharedFleet(t, s.URL())
	stop := f.load(4)
	defer stop()
	assertSpread(t, "before the restart", f.spread(t, 2000), 2000)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	// Instances that reconnect later than others find no responders on
	// their subjects for a moment and may be taken out as gone; each comes
	// back at its first probe, and none is left behind an open breaker.
	waitFor(t, func() bool { return len(f.set.Instances()) == 4 && f.set.View().Unavailable() == 0 })
	waitFor(t, func() bool { c := f.spread(t, 200); return len(c) == 4 })
	waitFor(t, func() bool { return len(f.set.Instances()) == 4 })
	assertSpread(t, "after the restart", f.spread(t, 2000), 2000)
	t.Logf("instances taken out as gone during the restart, and back: %d", f.marks.Load())
}

// TestSharedCauseDependency: a dependency of every instance fails, so
// every call fails with an answer from its instance. None of them is
// gone, and the load stays spread over all four; when the dependency is
// back, so are the calls.
func TestSharedCauseDependency(t *testing.T) {
	s := natstest.Start(t)
	f := newSharedFleet(t, s.URL())
	stop := f.load(4)
	defer stop()
	assertSpread(t, "before", f.spread(t, 1000), 1000)

	f.down.Store(true)
	picked := map[string]int{}
	var mu sync.Mutex
	obs := lb.New(f.set, lb.LeastLoaded())
	for range 2000 {
		p, err := obs.Pick(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = p.Endpoint(context.Background(), echoRequestMsg())
		mu.Lock()
		picked[p.Instance]++
		mu.Unlock()
	}
	if n := len(f.set.Instances()); n != 4 {
		t.Errorf("a shared dependency failed: want all four offered, have %v", f.set.Instances())
	}
	assertSpread(t, "while the dependency fails", picked, 2000)
	f.down.Store(false)
	waitFor(t, func() bool { return f.set.View().Unavailable() == 0 })
	assertSpread(t, "after", f.spread(t, 1000), 1000)
}

// echoRequestMsg is a request as the JSON factory's endpoint takes it.
func echoRequestMsg() any { return echoRequest{Payload: "x"} }

package lb_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
)

func TestEndpointSetReadyOnReturn(t *testing.T) {
	given := []string{"c", "a", "b", "a"}
	f := newFakeFactory()
	set := lb.NewEndpointSet(sd.FixedInstancer(given), f.Factory, nil)
	defer set.Close()

	if want, have := []string{"a", "b", "c"}, set.Instances(); !slices.Equal(want, have) {
		t.Fatalf("instances: want %v, have %v", want, have)
	}
	eps, err := set.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, ep := range eps {
		resp, err := ep(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		have = append(have, resp.(string))
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(want, have) {
		t.Errorf("endpoints sorted by instance: want %v, have %v", want, have)
	}
	if want := []string{"c", "a", "b", "a"}; !slices.Equal(want, given) {
		t.Errorf("caller's slice modified: want %v, have %v", want, given)
	}
	if want, have := 1, f.Calls("a"); want != have {
		t.Errorf("factory calls for a duplicated instance: want %d, have %d", want, have)
	}
}

func TestEndpointSetCallerSliceUnmodified(t *testing.T) {
	inst := newFakeInstancer("b", "a")
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil)
	defer set.Close()

	update := []string{"z", "y", "x", "y"}
	inst.Update(sd.Event{Instances: update})
	eventually(t, "the update", func() bool { return slices.Equal(set.Instances(), []string{"x", "y", "z"}) })
	if want := []string{"z", "y", "x", "y"}; !slices.Equal(want, update) {
		t.Errorf("caller's slice modified: want %v, have %v", want, update)
	}
}

func TestEndpointSetClosesDeparted(t *testing.T) {
	inst := newFakeInstancer("a", "b", "c")
	f := newFakeFactory()
	set := lb.NewEndpointSet(inst, f.Factory, nil)
	defer set.Close()

	b := f.Closer("b")
	inst.Update(sd.Event{Instances: []string{"a", "c", "d"}})
	eventually(t, "b to leave", func() bool { return slices.Equal(set.Instances(), []string{"a", "c", "d"}) })

	if want, have := int32(1), b.closed.Load(); want != have {
		t.Errorf("departed b closed: want %d, have %d", want, have)
	}
	for _, name := range []string{"a", "c"} {
		if want, have := int32(0), f.Closer(name).closed.Load(); want != have {
			t.Errorf("staying %s closed: want %d, have %d", name, want, have)
		}
		if want, have := 1, f.Calls(name); want != have {
			t.Errorf("staying %s rebuilt: want %d factory calls, have %d", name, want, have)
		}
	}

	// Back again: a fresh endpoint.
	inst.Update(sd.Event{Instances: []string{"a", "b"}})
	eventually(t, "b to return", func() bool { return slices.Equal(set.Instances(), []string{"a", "b"}) })
	if want, have := 2, f.Calls("b"); want != have {
		t.Errorf("returning b: want %d factory calls, have %d", want, have)
	}
	if f.Closer("b") == b {
		t.Error("returning b reuses its closed endpoint")
	}
}

func TestEndpointSetRetriesFailedFactoryOnTimer(t *testing.T) {
	f := newFakeFactory()
	f.fail["b"] = 3
	set := lb.NewEndpointSet(sd.FixedInstancer{"a", "b"}, f.Factory, nil,
		lb.WithFactoryRetry(time.Millisecond, 4*time.Millisecond))
	defer set.Close()

	if want, have := []string{"a"}, set.Instances(); !slices.Equal(want, have) {
		t.Fatalf("before retry: want %v, have %v", want, have)
	}
	eventually(t, "b to be retried", func() bool { return slices.Equal(set.Instances(), []string{"a", "b"}) })
	if want, have := 4, f.Calls("b"); want != have {
		t.Errorf("factory calls for b: want %d, have %d", want, have)
	}
	if want, have := 1, f.Calls("a"); want != have {
		t.Errorf("factory calls for a: want %d, have %d", want, have)
	}
}

func TestEndpointSetRetriesFailedFactoryOnEvent(t *testing.T) {
	inst := newFakeInstancer("a", "b")
	f := newFakeFactory()
	f.fail["b"] = 1
	set := lb.NewEndpointSet(inst, f.Factory, nil, lb.WithFactoryRetry(time.Hour, time.Hour))
	defer set.Close()

	if want, have := []string{"a"}, set.Instances(); !slices.Equal(want, have) {
		t.Fatalf("before retry: want %v, have %v", want, have)
	}
	inst.Update(sd.Event{Instances: []string{"a", "b"}})
	eventually(t, "b on the next event", func() bool { return slices.Equal(set.Instances(), []string{"a", "b"}) })
}

func TestEndpointSetKeepsLastSetOnError(t *testing.T) {
	inst := newFakeInstancer("a", "b")
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil)
	defer set.Close()

	inst.Update(sd.Event{Err: errors.New("registry down")})
	inst.Update(sd.Event{Instances: []string{"a", "b", "c"}})
	eventually(t, "c", func() bool { return len(set.Instances()) == 3 })
	inst.Update(sd.Event{Err: errors.New("registry down")})
	// A later good event proves the error event was processed first.
	inst.Update(sd.Event{Instances: []string{"a", "b", "c", "d"}})
	eventually(t, "d", func() bool { return len(set.Instances()) == 4 })
	inst.Update(sd.Event{Err: errors.New("registry down")})
	time.Sleep(20 * time.Millisecond) // nothing must happen; give it the chance
	eps, err := set.Endpoints()
	if err != nil {
		t.Fatalf("Endpoints after an instancer error: %v", err)
	}
	if want, have := 4, len(eps); want != have {
		t.Errorf("endpoints kept: want %d, have %d", want, have)
	}
}

func TestEndpointSetInvalidateOnError(t *testing.T) {
	inst := newFakeInstancer("a", "b")
	f := newFakeFactory()
	set := lb.NewEndpointSet(inst, f.Factory, nil, lb.WithInvalidateOnError(time.Millisecond))
	defer set.Close()
	rr := lb.New(set, lb.RoundRobin())

	errDown := errors.New("registry down")
	inst.Update(sd.Event{Err: errDown})
	eventually(t, "invalidation", func() bool { _, err := set.Endpoints(); return err != nil })

	if _, err := set.Endpoints(); !errors.Is(err, errDown) {
		t.Errorf("Endpoints error: want %v, have %v", errDown, err)
	}
	_, err := rr.Pick(context.Background(), nil)
	if !errors.Is(err, errDown) || !errors.Is(err, lb.ErrNoInstances) || !errors.Is(err, kitlb.ErrNoEndpoints) {
		t.Errorf("Pick error: want one wrapping %v and ErrNoInstances, have %v", errDown, err)
	}
	for _, name := range []string{"a", "b"} {
		if want, have := int32(1), f.Closer(name).closed.Load(); want != have {
			t.Errorf("%s closed on invalidation: want %d, have %d", name, want, have)
		}
	}

	inst.Update(sd.Event{Instances: []string{"a"}})
	eventually(t, "recovery", func() bool { return slices.Equal(set.Instances(), []string{"a"}) })
	if _, err := rr.Pick(context.Background(), nil); err != nil {
		t.Errorf("Pick after recovery: %v", err)
	}
}

func TestEndpointSetClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	inst := newFakeInstancer("a", "b")
	f := newFakeFactory()
	set := lb.NewEndpointSet(inst, f.Factory, nil)
	bals := make([]lb.Balancer, len(balancers))
	for i, bc := range balancers {
		bals[i] = bc.make(set)
	}
	if want, have := 1, inst.Subscribers(); want != have {
		t.Fatalf("subscribers: want %d, have %d", want, have)
	}

	set.Close()
	set.Close()

	if want, have := 0, inst.Subscribers(); want != have {
		t.Errorf("subscribers after Close: want %d, have %d", want, have)
	}
	for _, name := range []string{"a", "b"} {
		if want, have := int32(1), f.Closer(name).closed.Load(); want != have {
			t.Errorf("%s closed: want %d, have %d", name, want, have)
		}
	}
	if _, err := set.Endpoints(); !errors.Is(err, lb.ErrClosed) {
		t.Errorf("Endpoints after Close: want %v, have %v", lb.ErrClosed, err)
	}
	for i, b := range bals {
		_, err := b.Pick(context.Background(), nil)
		if !errors.Is(err, lb.ErrClosed) || !errors.Is(err, kitlb.ErrNoEndpoints) {
			t.Errorf("%s: Pick after Close: want %v, have %v", balancers[i].name, lb.ErrClosed, err)
		}
	}
	set.Refresh() // a no-op, not a panic
}

func TestEndpointSetSlowFactoryDoesNotBlockInstancer(t *testing.T) {
	inst := newFakeInstancer("a")
	release := make(chan struct{})
	var once sync.Once
	f := newFakeFactory()
	factory := f.Factory
	set := lb.NewEndpointSet(inst, func(s string) (endpoint.Endpoint, io.Closer, error) {
		if s == "slow" {
			<-release
		}
		return factory(s)
	}, nil)
	defer set.Close()
	defer once.Do(func() { close(release) })

	updated := make(chan struct{})
	go func() {
		inst.Update(sd.Event{Instances: []string{"a", "slow"}})
		inst.Update(sd.Event{Instances: []string{"a", "slow", "b"}})
		inst.Update(sd.Event{Instances: []string{"a", "slow", "c"}})
		close(updated)
	}()
	select {
	case <-updated:
	case <-time.After(10 * time.Second):
		t.Fatal("the instancer blocked on a slow factory")
	}
	once.Do(func() { close(release) })
	// The newest set wins; the intermediate one may be skipped.
	eventually(t, "the newest set", func() bool { return slices.Equal(set.Instances(), []string{"a", "c", "slow"}) })
}

func TestEndpointSetAttributesAndRefresh(t *testing.T) {
	var mu sync.Mutex
	standby := map[string]bool{"b": true}
	attrs := lb.WithAttributes(func(s string) lb.Attributes {
		mu.Lock()
		defer mu.Unlock()
		return lb.Attributes{Standby: standby[s]}
	})
	set := lb.NewEndpointSet(sd.FixedInstancer{"a", "b"}, newFakeFactory().Factory, nil, attrs)
	defer set.Close()
	rr := lb.New(set, lb.RoundRobin())

	for range 10 {
		p, err := rr.Pick(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if want, have := "a", p.Instance; want != have {
			t.Fatalf("with b STANDBY: want %s, have %s", want, have)
		}
	}
	if want, have := []bool{false, true}, standbys(set); !slices.Equal(want, have) {
		t.Errorf("Stats standby: want %v, have %v", want, have)
	}

	mu.Lock()
	standby = map[string]bool{"a": true}
	mu.Unlock()
	set.Refresh()
	if want, have := []bool{true, false}, standbys(set); !slices.Equal(want, have) {
		t.Errorf("Stats standby after Refresh: want %v, have %v", want, have)
	}
	p, _ := rr.Pick(context.Background(), nil)
	if want, have := "b", p.Instance; want != have {
		t.Errorf("with a STANDBY: want %s, have %s", want, have)
	}
}

func standbys(set *lb.EndpointSet) []bool {
	var s []bool
	for _, in := range set.View().Instances() {
		s = append(s, in.Attributes().Standby)
	}
	return s
}

// TestInstanceLoad: a view's instances report the load on their endpoints,
// live, and what their closers say of their availability.
func TestInstanceLoad(t *testing.T) {
	f := newFakeFactory()
	f.block["a"] = make(chan struct{})
	set := lb.NewEndpointSet(sd.FixedInstancer{"a"}, f.Factory, nil)
	defer set.Close()
	p, err := lb.New(set, lb.RoundRobin()).Pick(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Endpoint(context.Background(), nil)
	}()
	in := set.View().Lookup("a")
	eventually(t, "one call in flight", func() bool { return in.InFlight() == 1 })
	close(f.block["a"])
	<-done

	if want, have := (struct {
		Name      string
		Available bool
		InFlight  int64
	}{"a", true, 0}), (struct {
		Name      string
		Available bool
		InFlight  int64
	}{in.Name(), in.Available(), in.InFlight()}); want != have {
		t.Errorf("instance: want %+v, have %+v", want, have)
	}
	if in.Latency() <= 0 {
		t.Errorf("latency average after one call: want > 0, have %v", in.Latency())
	}
	f.Closer("a").down.Store(true)
	if set.View().Lookup("a").Available() {
		t.Error("an unavailable instance reported available")
	}
}

// TestConcurrentPicksDuringMembershipChanges runs every balancer from several
// goroutines while the membership churns; under -race it checks the
// lock-free view swap, and it checks that every pick's endpoint reaches
// the instance the pick names.
func TestConcurrentPicksDuringMembershipChanges(t *testing.T) {
	inst := newFakeInstancer(names(8)...)
	f := newFakeFactory()
	set := lb.NewEndpointSet(inst, f.Factory, nil)
	defer set.Close()

	universe := names(16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, bc := range balancers {
		b := bc.make(set)
		if bc.name == "sticky" {
			b = lb.New(set, lb.Sticky(lb.WithVirtualNodes(16))) // rings rebuilt on every change
		}
		for g := range 2 {
			wg.Go(func() {
				ctxs := keyContexts(32)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					p, err := b.Pick(ctxs[i%len(ctxs)], universe[g:g+1])
					if err != nil {
						if !errors.Is(err, lb.ErrNoInstances) {
							errs <- err
						}
						continue
					}
					resp, err := p.Endpoint(context.Background(), nil)
					if err != nil {
						errs <- err
						return
					}
					if resp.(string) != p.Instance {
						errs <- errors.New(bc.name + ": pick named " + p.Instance + ", endpoint reached " + resp.(string))
						return
					}
				}
			})
		}
	}
	for i := range 200 {
		lo, hi := i%8, 8+i%8
		inst.Update(sd.Event{Instances: universe[lo:hi]})
		if i%50 == 0 {
			inst.Update(sd.Event{Instances: nil})
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestEndpointSetCoalescesEventsInOrder holds the set's worker in a slow
// factory while an error and then a good set arrive: the good set, being
// newer, must win over the error once the worker catches up.
func TestEndpointSetCoalescesEventsInOrder(t *testing.T) {
	inst := newFakeInstancer("a")
	release := make(chan struct{})
	f := newFakeFactory()
	factory := f.Factory
	set := lb.NewEndpointSet(inst, func(s string) (endpoint.Endpoint, io.Closer, error) {
		if s == "slow" {
			<-release
		}
		return factory(s)
	}, nil, lb.WithInvalidateOnError(time.Millisecond))
	defer set.Close()

	inst.Update(sd.Event{Instances: []string{"a", "slow"}}) // the worker blocks in the factory
	inst.Update(sd.Event{Err: errors.New("registry down")})
	inst.Update(sd.Event{Instances: []string{"b", "slow"}})
	close(release)
	eventually(t, "the newest set", func() bool { return slices.Equal(set.Instances(), []string{"b", "slow"}) })
	time.Sleep(50 * time.Millisecond) // an invalidation, wrongly armed, would fire by now
	if _, err := set.Endpoints(); err != nil {
		t.Errorf("Endpoints: a good set after the error must clear it, have %v", err)
	}
	if want, have := []string{"b", "slow"}, set.Instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
}

package lb_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
)

// What a fleet instance does when called.
const (
	answer int32 = iota
	noResponders
	failure
)

// goneErr is what a transport returns for no responders on an instance's
// own subject (natsrpc's *CallError answers Gone() the same way).
type goneErr struct{}

func (goneErr) Error() string   { return "no responders" }
func (goneErr) Gone() bool      { return true }
func (goneErr) Retryable() bool { return true }

var errDependency = errors.New("a dependency of every instance failed")

// fleet is a factory whose instances answer, find no responders or fail
// as told, and whose calls block while a gate is set.
type fleet struct {
	mu      sync.Mutex
	mode    map[string]*atomic.Int32
	calls   map[string]*atomic.Int64
	closers map[string]*fakeCloser
	gate    map[string]chan struct{}
	built   map[string]int
}

func newFleet() *fleet {
	return &fleet{mode: map[string]*atomic.Int32{}, calls: map[string]*atomic.Int64{},
		closers: map[string]*fakeCloser{}, gate: map[string]chan struct{}{}, built: map[string]int{}}
}

func (f *fleet) state(name string) (*atomic.Int32, *atomic.Int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode[name] == nil {
		f.mode[name], f.calls[name] = &atomic.Int32{}, &atomic.Int64{}
	}
	return f.mode[name], f.calls[name]
}

func (f *fleet) set(mode int32, names ...string) {
	for _, n := range names {
		m, _ := f.state(n)
		m.Store(mode)
	}
}

func (f *fleet) Calls(name string) int64 { _, c := f.state(name); return c.Load() }

func (f *fleet) Built(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.built[name]
}

func (f *fleet) Closer(name string) *fakeCloser {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closers[name]
}

// hold makes the calls of name wait until the returned function is called.
func (f *fleet) hold(name string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.gate[name] = ch
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (f *fleet) Factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	mode, calls := f.state(instance)
	c := &fakeCloser{}
	f.mu.Lock()
	f.closers[instance] = c
	f.built[instance]++
	f.mu.Unlock()
	return func(ctx context.Context, _ any) (any, error) {
		calls.Add(1)
		f.mu.Lock()
		gate := f.gate[instance]
		f.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		switch mode.Load() {
		case noResponders:
			return nil, goneErr{}
		case failure:
			return nil, errDependency
		}
		return instance, nil
	}, c, nil
}

// direct hands out the endpoint of the instance a context prefers, from
// the set's current view.
var directs sync.Map // *lb.EndpointSet → lb.Balancer

func direct(set *lb.EndpointSet) lb.Balancer {
	if b, ok := directs.Load(set); ok {
		return b.(lb.Balancer)
	}
	b := lb.New(set, policyFunc(func(v *lb.View) lb.Picker {
		return pickerFunc(func(ctx context.Context, _ []string) *lb.Instance {
			name, _ := lb.PreferredInstance(ctx)
			return v.Lookup(name)
		})
	}))
	b2, _ := directs.LoadOrStore(set, b)
	return b2.(lb.Balancer)
}

// callEach calls every instance the set offers once.
func callEach(set *lb.EndpointSet) {
	for _, name := range set.Instances() {
		_, _ = endpointOf(set, name)(context.Background(), nil)
	}
}

// endpointOf is the set's endpoint for name, from its current view.
func endpointOf(set *lb.EndpointSet, name string) endpoint.Endpoint {
	p, err := direct(set).Pick(lb.WithPreferredInstance(context.Background(), name), nil)
	if err != nil || p.Endpoint == nil {
		return func(context.Context, any) (any, error) { return nil, errors.New("not offered: " + name) }
	}
	return p.Endpoint
}

func offered(set *lb.EndpointSet, name string) bool {
	return slices.Contains(set.Instances(), name)
}

// TestGoneLeavesAtOnce: an instance whose subject has no responders while
// the others answer leaves every view, even in panic mode, where open
// breakers would not keep it out; a pick made before it left is refused
// without a call, with an error retry treats as free.
func TestGoneLeavesAtOnce(t *testing.T) {
	f := newFleet()
	insts := []string{"a", "b", "c", "d", "e", "x"}
	set := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil)
	defer set.Close()
	for _, bc := range balancers {
		_ = bc.make(set) // every policy follows the set
	}
	b := lb.New(set, lb.Random())

	// Four of six breakers open: panic mode, every instance a candidate.
	for _, n := range []string{"a", "b", "c", "x"} {
		f.Closer(n).down.Store(true)
	}
	pickUntil(t, "panic mode", b, func() bool { return set.View().PanicMode() })
	stale := endpointOf(set, "c") // a pick from before c left

	f.set(noResponders, "c")
	eventually(t, "c out of the candidates", func() bool {
		callEach(set)
		return !offered(set, "c")
	})
	if !set.Gone("c") {
		t.Error("c left the views but is not held gone")
	}
	if want, have := []string{"a", "b", "d", "e", "x"}, set.Instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
	pickUntil(t, "the census of the view without c", b, func() bool { return set.View().Unavailable() == 3 })
	if !set.View().PanicMode() {
		t.Error("3 of 5 down: want panic mode still")
	}
	counts := pickN(t, b, context.Background(), nil, 2000)
	if counts["c"] != 0 || len(counts) != 5 {
		t.Errorf("panic mode after c went: want the five others, c never; have %v", counts)
	}

	before := f.Calls("c")
	_, err := stale(context.Background(), nil)
	var g interface{ Gone() bool }
	var r interface{ Rejected() bool }
	if !errors.As(err, &g) || !g.Gone() || !errors.As(err, &r) || !r.Rejected() {
		t.Errorf("stale pick of a gone instance: want a Gone and Rejected error, have %v", err)
	}
	if f.Calls("c") != before {
		t.Error("stale pick of a gone instance: the endpoint was called")
	}
}

// TestGoneNeedsAnAnswer: with no instance answering — the client's
// connection, or NATS, is down for everyone — no instance is blamed.
func TestGoneNeedsAnAnswer(t *testing.T) {
	f := newFleet()
	insts := []string{"a", "b", "c"}
	set := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil)
	defer set.Close()
	f.set(noResponders, insts...)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		callEach(set)
		time.Sleep(time.Millisecond)
	}
	if have := set.Instances(); !slices.Equal(insts, have) {
		t.Errorf("nobody answers: want all offered, have %v", have)
	}
	// Verdicts too old to be corroborated are dropped: a later answer
	// does not blame the instances that failed before it.
	time.Sleep(1200 * time.Millisecond)
	f.set(answer, "a")
	for range 50 {
		callEach(set)
		if len(set.Instances()) != 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if have := set.Instances(); !slices.Equal(insts, have) {
		t.Errorf("an answer after old verdicts: want all offered, have %v", have)
	}
}

// TestGoneNotWhenMostFail: most instances finding no responders at once is
// a shared cause — their servers reconnecting, interest not yet
// propagated — and blames none of them, even while one answers; an
// instance marked before the others failed comes back.
func TestGoneNotWhenMostFail(t *testing.T) {
	f := newFleet()
	insts := []string{"a", "b", "c", "d", "e"}
	set := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil)
	defer set.Close()
	callEach(set) // everyone has answered once
	f.set(noResponders, "b", "c", "d", "e")
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		callEach(set)
		_, _ = endpointOf(set, "a")(context.Background(), nil)
		time.Sleep(time.Millisecond)
	}
	eventually(t, "all five offered", func() bool {
		callEach(set)
		return len(set.Instances()) == 5
	})
}

// TestGoneComesBack: a gone instance is offered again when the registry
// shows a new write of it (its Revision), when the instancer reports it
// anew, and, failing those, once its probe is due.
func TestGoneComesBack(t *testing.T) {
	markGone := func(t *testing.T, f *fleet, set *lb.EndpointSet, name string) {
		t.Helper()
		f.set(noResponders, name)
		eventually(t, name+" gone", func() bool {
			callEach(set)
			return !offered(set, name)
		})
	}

	t.Run("revision", func(t *testing.T) {
		f := newFleet()
		var rev atomic.Uint64
		rev.Store(1)
		set := lb.NewEndpointSet(sd.FixedInstancer([]string{"a", "b"}), f.Factory, nil,
			lb.WithAttributes(func(string) lb.Attributes { return lb.Attributes{Revision: rev.Load()} }))
		defer set.Close()
		markGone(t, f, set, "b")
		f.set(answer, "b")
		rev.Add(1) // b registered again
		eventually(t, "b back", func() bool { return offered(set, "b") })
		if _, err := endpointOf(set, "b")(context.Background(), nil); err != nil {
			t.Errorf("b back: %v", err)
		}
	})

	t.Run("re-registered", func(t *testing.T) {
		f := newFleet()
		inst := newFakeInstancer("a", "b")
		set := lb.NewEndpointSet(inst, f.Factory, nil)
		defer set.Close()
		markGone(t, f, set, "b")
		f.set(answer, "b")
		inst.Update(sd.Event{Instances: []string{"a"}})
		eventually(t, "b removed", func() bool { return f.Closer("b").closed.Load() == 1 })
		inst.Update(sd.Event{Instances: []string{"a", "b"}})
		eventually(t, "b back", func() bool { return offered(set, "b") })
		if set.Gone("b") || f.Built("b") != 2 {
			t.Errorf("re-registered b: want a new endpoint, not gone; have gone %v, built %d times", set.Gone("b"), f.Built("b"))
		}
	})

	t.Run("probe", func(t *testing.T) {
		f := newFleet()
		set := lb.NewEndpointSet(sd.FixedInstancer([]string{"a", "b"}), f.Factory, nil)
		defer set.Close()
		markGone(t, f, set, "b")
		// Still dead at its first probe: out again.
		n := f.Calls("b")
		eventually(t, "b probed and out again", func() bool {
			callEach(set)
			return f.Calls("b") > n && !offered(set, "b")
		})
		f.set(answer, "b")
		eventually(t, "b back", func() bool {
			callEach(set)
			return offered(set, "b") && !set.Gone("b")
		})
	})

	t.Run("probe waits for the breaker", func(t *testing.T) {
		f := newFleet()
		set := lb.NewEndpointSet(sd.FixedInstancer([]string{"a", "b"}), f.Factory, nil)
		defer set.Close()
		markGone(t, f, set, "b")
		f.set(answer, "b")
		f.Closer("b").down.Store(true) // its breaker opened before it went
		time.Sleep(1500 * time.Millisecond)
		if offered(set, "b") {
			t.Error("b offered at its probe while its breaker is open")
		}
		f.Closer("b").down.Store(false)
		eventually(t, "b back", func() bool { return offered(set, "b") })
	})
}

// TestDepartedInstanceDrains: an instance that leaves is offered no more at
// once, but its closer (a grpc.ClientConn, say, which cancels its calls)
// is closed only when its calls in flight have returned — or after the
// drain timeout, when one is stuck.
func TestDepartedInstanceDrains(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []lb.EndpointSetOption
		stuck bool
	}{
		{"calls return", nil, false},
		{"a call is stuck", []lb.EndpointSetOption{lb.WithDrainTimeout(50 * time.Millisecond)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet()
			inst := newFakeInstancer("a", "b")
			set := lb.NewEndpointSet(inst, f.Factory, nil, tc.opts...)
			defer set.Close()
			ep := endpointOf(set, "b")
			release := f.hold("b")
			defer release()
			done := make(chan error, 1)
			go func() {
				_, err := ep(context.Background(), nil)
				done <- err
			}()
			eventually(t, "the call in flight", func() bool { return f.Calls("b") == 1 })
			inst.Update(sd.Event{Instances: []string{"a"}})
			eventually(t, "b no longer offered", func() bool { return !offered(set, "b") })
			if tc.stuck {
				eventually(t, "the closer closed after the drain timeout", func() bool { return f.Closer("b").closed.Load() == 1 })
				release()
				<-done
				return
			}
			time.Sleep(20 * time.Millisecond)
			if f.Closer("b").closed.Load() != 0 {
				t.Fatal("the closer was closed with a call in flight")
			}
			release()
			if err := <-done; err != nil {
				t.Errorf("the call in flight: %v", err)
			}
			eventually(t, "the closer closed", func() bool { return f.Closer("b").closed.Load() == 1 })
			if f.Closer("a").closed.Load() != 0 {
				t.Error("a's closer closed")
			}
		})
	}
}

// TestCloseClosesDraining: Close does not wait for a departed instance's
// calls; it closes every closer, once.
func TestCloseClosesDraining(t *testing.T) {
	f := newFleet()
	inst := newFakeInstancer("a", "b")
	set := lb.NewEndpointSet(inst, f.Factory, nil)
	ep := endpointOf(set, "b")
	release := f.hold("b")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = ep(context.Background(), nil)
	}()
	eventually(t, "the call in flight", func() bool { return f.Calls("b") == 1 })
	inst.Update(sd.Event{Instances: []string{"a"}})
	set.Close()
	if f.Closer("b").closed.Load() != 1 || f.Closer("a").closed.Load() != 1 {
		t.Errorf("after Close: want both closers closed once, have a %d, b %d", f.Closer("a").closed.Load(), f.Closer("b").closed.Load())
	}
	release()
	<-done
	if f.Closer("b").closed.Load() != 1 {
		t.Error("b's closer closed twice")
	}
}

// TestPanicModeSharedFailure: breakers open for a cause every instance
// shares — a dependency of all of them fails — and the instances still
// answer (errors, not "no responders"): none is gone, panic mode engages
// and spreads the load over all of them rather than piling it onto the
// one whose breaker is still closed.
func TestPanicModeSharedFailure(t *testing.T) {
	f := newFleet()
	insts := names(6)
	set := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil)
	defer set.Close()
	b := lb.New(set, lb.LeastLoaded())
	f.set(failure, insts...)
	for _, n := range insts[:5] {
		f.Closer(n).down.Store(true) // their breakers saw the failures first
	}
	pickUntil(t, "panic mode", b, func() bool { return set.View().PanicMode() })
	counts := map[string]int{}
	for range 3000 {
		p, err := b.Pick(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Instance]++
		_, _ = p.Endpoint(context.Background(), nil)
	}
	t.Logf("shared failure, 5 of 6 breakers open: %v", counts)
	for _, n := range insts {
		if counts[n] < 3000/len(insts)/2 {
			t.Errorf("%s picked %d of 3000 times: want the load spread", n, counts[n])
		}
		if set.Gone(n) {
			t.Errorf("%s held gone for a failure that answered", n)
		}
	}
}

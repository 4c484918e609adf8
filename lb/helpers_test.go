package lb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/weighted"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeInstancer is a minimal sd.Instancer. Unlike go-kit's instance cache it
// hands every subscriber the very slice it was given, so tests can check that
// nobody modifies it.
type fakeInstancer struct {
	mu    sync.Mutex
	chans map[chan<- sd.Event]struct{}
	state sd.Event
}

func newFakeInstancer(instances ...string) *fakeInstancer {
	return &fakeInstancer{chans: map[chan<- sd.Event]struct{}{}, state: sd.Event{Instances: instances}}
}

func (f *fakeInstancer) Register(ch chan<- sd.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chans[ch] = struct{}{}
	ch <- f.state
}

func (f *fakeInstancer) Deregister(ch chan<- sd.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.chans, ch)
}

func (f *fakeInstancer) Stop() {}

func (f *fakeInstancer) Update(ev sd.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = ev
	for ch := range f.chans {
		ch <- ev
	}
}

func (f *fakeInstancer) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.chans)
}

// fakeCloser is what fakeFactory returns per instance: it counts Close calls
// and reports Available like a per-instance breaker.
type fakeCloser struct {
	closed atomic.Int32
	down   atomic.Bool
}

func (c *fakeCloser) Close() error    { c.closed.Add(1); return nil }
func (c *fakeCloser) Available() bool { return !c.down.Load() }

var _ lb.Available = (*fakeCloser)(nil)

// fakeFactory builds endpoints that answer with their instance's name.
type fakeFactory struct {
	mu      sync.Mutex
	fail    map[string]int // instance → failures left
	calls   map[string]int // factory calls per instance
	closers map[string]*fakeCloser
	block   map[string]chan struct{} // endpoint waits on it when set
	delay   map[string]time.Duration
}

func newFakeFactory() *fakeFactory {
	return &fakeFactory{
		fail:    map[string]int{},
		calls:   map[string]int{},
		closers: map[string]*fakeCloser{},
		block:   map[string]chan struct{}{},
		delay:   map[string]time.Duration{},
	}
}

var errFactory = errors.New("factory failed")

func (f *fakeFactory) Factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[instance]++
	if f.fail[instance] > 0 {
		f.fail[instance]--
		return nil, nil, fmt.Errorf("%s: %w", instance, errFactory)
	}
	c := &fakeCloser{}
	f.closers[instance] = c
	block, delay := f.block[instance], f.delay[instance]
	ep := func(ctx context.Context, _ any) (any, error) {
		if block != nil {
			select {
			case <-block:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		return instance, nil
	}
	return ep, c, nil
}

func (f *fakeFactory) Calls(instance string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[instance]
}

func (f *fakeFactory) Closer(instance string) *fakeCloser {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closers[instance]
}

// eventually waits for cond with a generous deadline; it never asserts a
// duration, only that the outcome arrives.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func names(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("inst-%04d", i)
	}
	return s
}

// call invokes a pick's endpoint and returns the name it answers with.
func call(t *testing.T, p lb.Pick) string {
	t.Helper()
	resp, err := p.Endpoint(context.Background(), nil)
	if err != nil {
		t.Fatalf("endpoint of %s: %v", p.Instance, err)
	}
	return resp.(string)
}

// balancerCase builds one of the package's balancers over a set; given a
// seed, one whose random choices repeat from run to run.
type balancerCase struct {
	name string
	make func(set *lb.EndpointSet, seed ...uint64) lb.Balancer
}

// seeded picks the seeded or the production policy.
func seeded(seed []uint64, production func() lb.Policy, withSeed func(uint64) lb.Policy) lb.Policy {
	if len(seed) == 0 {
		return production()
	}
	return withSeed(seed[0])
}

var balancers = []balancerCase{
	{"roundrobin", func(s *lb.EndpointSet, seed ...uint64) lb.Balancer {
		return lb.New(s, seeded(seed, lb.RoundRobin, lb.SeededRoundRobin))
	}},
	{"random", func(s *lb.EndpointSet, seed ...uint64) lb.Balancer {
		return lb.New(s, seeded(seed, lb.Random, lb.SeededRandom))
	}},
	{"sticky", func(s *lb.EndpointSet, seed ...uint64) lb.Balancer {
		return lb.New(s, seeded(seed, func() lb.Policy { return lb.Sticky() }, func(n uint64) lb.Policy { return lb.SeededSticky(n) }))
	}},
	{"leastloaded", func(s *lb.EndpointSet, seed ...uint64) lb.Balancer {
		return lb.New(s, seeded(seed, func() lb.Policy { return lb.LeastLoaded() }, func(n uint64) lb.Policy { return lb.SeededLeastLoaded(n) }))
	}},
	// The weighted policy lives outside lb, on the exported seam only; it
	// must keep the same rules. Its seed is its own.
	{"weighted", func(s *lb.EndpointSet, _ ...uint64) lb.Balancer { return lb.New(s, weighted.Policy()) }},
}

// policyFunc and pickerFunc let tests write a policy as functions.
type policyFunc func(v *lb.View) lb.Picker

func (f policyFunc) Build(v *lb.View) lb.Picker { return f(v) }

type pickerFunc func(ctx context.Context, tried []string) *lb.Instance

func (f pickerFunc) Pick(ctx context.Context, tried []string) *lb.Instance { return f(ctx, tried) }

// contexts a test picks with: sticky balancers see keys, the others ignore them.
func keyContexts(n int) []context.Context {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		if i%4 == 0 {
			ctxs[i] = context.Background() // no key: the round robin fallback
			continue
		}
		ctxs[i] = lb.WithStickyKey(context.Background(), fmt.Sprintf("key-%d", i))
	}
	return ctxs
}

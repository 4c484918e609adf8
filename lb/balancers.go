package lb

import (
	"context"
	"sync/atomic"
)

// The policies of this package: round robin, random, least loaded (power of
// two choices) and sticky (sticky.go). Each is a Policy, and a NewX(set)
// shorthand runs it in a PolicyBalancer. A policy's state that must outlive
// one view (the round robin's counter, the random source) lives in the
// policy, so a new view does not restart the rotation.

// BalancerOption configures a balancer.
type BalancerOption func(*balancerOptions)

type balancerOptions struct {
	seed    uint64
	seeded  bool
	latency bool
}

// WithSeed makes a balancer's random choices (the round robin's starting
// offset, random and least-loaded picks) repeat from run to run, for tests.
// Without it they come from math/rand/v2's runtime source. A seeded source
// is one atomic counter shared by all goroutines, so prefer the default in
// production.
func WithSeed(seed uint64) BalancerOption {
	return func(o *balancerOptions) { o.seed, o.seeded = seed, true }
}

// WithLatencyWeighting makes the least-loaded balancer compare instances by
// (requests in flight + 1) × moving-average latency instead of by requests in
// flight alone, so a slow instance gets fewer requests even when nothing
// queues on it. Other balancers ignore it.
func WithLatencyWeighting() BalancerOption {
	return func(o *balancerOptions) { o.latency = true }
}

func newBalancerOptions(opts []BalancerOption) balancerOptions {
	var o balancerOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// counter sits on its own cache line: every round robin pick writes it.
type counter struct {
	_ [64]byte
	n atomic.Uint64
	_ [56]byte
}

// next returns the counter's value before the increment.
func (c *counter) next() uint64 { return c.n.Add(1) - 1 }

func newCounter(o balancerOptions) *counter {
	c := &counter{}
	// A random start, so that many clients started together do not all
	// hit the first instance.
	c.n.Store(newSource(o.seed, o.seeded).uint64())
	return c
}

// RoundRobinPolicy hands out instances in turn, starting at a random offset
// so that many clients started together do not all hit the first instance
// (go-kit's round robin starts at 0). An instance that is skipped (not
// eligible) hands its turn to the next one.
func RoundRobinPolicy(opts ...BalancerOption) Policy {
	return &roundRobin{next: newCounter(newBalancerOptions(opts))}
}

// NewRoundRobin returns a round robin balancer over set (RoundRobinPolicy).
func NewRoundRobin(set *EndpointSet, opts ...BalancerOption) *PolicyBalancer {
	return NewPolicyBalancer(set, RoundRobinPolicy(opts...))
}

type roundRobin struct{ next *counter }

func (r *roundRobin) Build(v *View) Picker {
	return &roundRobinPicker{view: v, next: r.next}
}

type roundRobinPicker struct {
	view *View
	next *counter
}

func (p *roundRobinPicker) Pick(_ context.Context, tried []string) *Instance {
	return roundRobinPick(p.view, p.next.next(), tried)
}

func roundRobinPick(v *View, n uint64, tried []string) *Instance {
	if tier := v.tiers[0]; len(tier) > 0 {
		if in := tier[n%uint64(len(tier))]; in.score(tried) == 0 {
			return in
		}
	}
	return v.Fallback(n, tried)
}

// RandomPolicy picks uniformly at random. Unlike go-kit's NewRandom it is
// safe for concurrent use, and it neither locks nor allocates.
func RandomPolicy(opts ...BalancerOption) Policy {
	o := newBalancerOptions(opts)
	return &random{rnd: newSource(o.seed, o.seeded)}
}

// NewRandom returns a random balancer over set (RandomPolicy).
func NewRandom(set *EndpointSet, opts ...BalancerOption) *PolicyBalancer {
	return NewPolicyBalancer(set, RandomPolicy(opts...))
}

type random struct{ rnd *source }

func (r *random) Build(v *View) Picker { return &randomPicker{view: v, rnd: r.rnd} }

type randomPicker struct {
	view *View
	rnd  *source
}

// randomDraws is how many uniform draws a random pick tries before it falls
// back from the last one: a few draws keep the choice uniform among the
// eligible instances when some are skipped, the fallback bounds the cost.
const randomDraws = 3

func (p *randomPicker) Pick(_ context.Context, tried []string) *Instance {
	x := p.rnd.uint64()
	if tier := p.view.tiers[0]; len(tier) > 0 {
		for i := 0; ; i++ {
			if in := tier[bounded(x, len(tier))]; in.score(tried) == 0 {
				return in
			}
			if i == randomDraws-1 {
				break
			}
			x = p.rnd.uint64()
		}
	}
	return p.view.Fallback(x, tried)
}

// LeastLoadedPolicy picks by the power of two random choices, the default
// of Finagle and Envoy: it draws two distinct instances at random and takes
// the one with fewer requests in flight (with WithLatencyWeighting, the
// lower (in-flight + 1) × latency average). It approaches the balance of a
// full least-loaded search at the cost of two reads, and it does not herd
// every client onto the single least-loaded instance.
func LeastLoadedPolicy(opts ...BalancerOption) Policy {
	o := newBalancerOptions(opts)
	return &leastLoaded{rnd: newSource(o.seed, o.seeded), latency: o.latency}
}

// NewLeastLoaded returns a power-of-two-choices balancer over set
// (LeastLoadedPolicy).
func NewLeastLoaded(set *EndpointSet, opts ...BalancerOption) *PolicyBalancer {
	return NewPolicyBalancer(set, LeastLoadedPolicy(opts...))
}

type leastLoaded struct {
	rnd     *source
	latency bool
}

func (l *leastLoaded) Build(v *View) Picker { return &leastLoadedPicker{view: v, leastLoaded: l} }

type leastLoadedPicker struct {
	view *View
	*leastLoaded
}

func (p *leastLoadedPicker) Pick(_ context.Context, tried []string) *Instance {
	x := p.rnd.uint64()
	tier := p.view.tiers[0]
	switch n := len(tier); {
	case n == 1:
		if in := tier[0]; in.score(tried) == 0 {
			return in
		}
	case n > 1:
		// One draw gives both choices: the high half picks i, the low
		// half picks j ≠ i.
		i := bounded(x&0xffffffff00000000, n)
		j := bounded(x<<32, n-1)
		if j >= i {
			j++
		}
		a, b := tier[i], tier[j]
		sa, sb := a.score(tried), b.score(tried)
		if sb < sa || (sb == sa && p.cost(b) < p.cost(a)) {
			a, sa = b, sb
		}
		if sa == 0 {
			return a
		}
	}
	return p.view.Fallback(x, tried)
}

func (l *leastLoaded) cost(in *Instance) uint64 {
	n := uint64(max(in.m.inflight.Load(), 0))
	if !l.latency {
		return n
	}
	return (n + 1) * uint64(max(in.m.ewma.Load(), 1))
}

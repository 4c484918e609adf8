package lb

import (
	"context"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	kitlb "github.com/go-kit/kit/sd/lb"
)

// The rules every balancer here follows, in order of precedence:
//
//  1. An instance whose closer reports Available() == false (an open circuit
//     breaker) is never picked while an available one exists. When every
//     instance is unavailable one of them is picked anyway, so the caller gets
//     the breaker's own error at once rather than a generic ErrNoInstances.
//  2. Instances in tried are passed over while an available untried one
//     exists; an available tried instance beats an unavailable untried one.
//  3. ACTIVE instances are preferred over STANDBY ones (Attributes.Standby).
//
// Within the best class each balancer applies its own policy. Picks load the
// set's current snapshot with one atomic read: they neither lock nor
// allocate, and they may run concurrently with membership changes.

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

// RoundRobin hands out instances in turn, starting at a random offset so
// that many clients started together do not all hit the first instance
// (go-kit's round robin starts at 0). An instance that is skipped (rules
// above) hands its turn to the next one.
type RoundRobin struct {
	set  *EndpointSet
	next roundRobinCounter
}

// roundRobinCounter sits on its own cache line: every pick writes it.
type roundRobinCounter struct {
	_ [64]byte
	n atomic.Uint64
	_ [56]byte
}

// NewRoundRobin returns a round robin balancer over set.
func NewRoundRobin(set *EndpointSet, opts ...BalancerOption) *RoundRobin {
	o := newBalancerOptions(opts)
	r := &RoundRobin{set: set}
	r.next.n.Store(newSource(o.seed, o.seeded).uint64())
	return r
}

// Endpoint satisfies go-kit's lb.Balancer.
func (r *RoundRobin) Endpoint() (endpoint.Endpoint, error) {
	p, err := r.Pick(context.Background(), nil)
	return p.Endpoint, err
}

// Pick returns the next instance in turn.
func (r *RoundRobin) Pick(_ context.Context, tried []string) (Pick, error) {
	snap := r.set.snap.Load()
	if len(snap.insts) == 0 {
		return Pick{}, snap.err
	}
	return roundRobinPick(snap, r.next.n.Add(1)-1, tried), nil
}

func roundRobinPick(snap *snapshot, n uint64, tried []string) Pick {
	if tier := snap.tiers[0]; len(tier) > 0 {
		if in := tier[n%uint64(len(tier))]; in.score(tried) == 0 {
			return in.pick()
		}
	}
	return snap.scan(n, tried).pick()
}

// Random picks uniformly at random. Unlike go-kit's NewRandom it is safe for
// concurrent use, and it neither locks nor allocates.
type Random struct {
	set *EndpointSet
	rnd *source
}

// NewRandom returns a random balancer over set.
func NewRandom(set *EndpointSet, opts ...BalancerOption) *Random {
	o := newBalancerOptions(opts)
	return &Random{set: set, rnd: newSource(o.seed, o.seeded)}
}

// Endpoint satisfies go-kit's lb.Balancer.
func (r *Random) Endpoint() (endpoint.Endpoint, error) {
	p, err := r.Pick(context.Background(), nil)
	return p.Endpoint, err
}

// randomDraws is how many uniform draws a random pick tries before it scans
// from the last one: a few draws keep the choice uniform among the healthy
// instances when some are skipped, the scan bounds the cost.
const randomDraws = 3

// Pick returns a random instance.
func (r *Random) Pick(_ context.Context, tried []string) (Pick, error) {
	snap := r.set.snap.Load()
	if len(snap.insts) == 0 {
		return Pick{}, snap.err
	}
	x := r.rnd.uint64()
	if tier := snap.tiers[0]; len(tier) > 0 {
		for i := 0; ; i++ {
			if in := tier[bounded(x, len(tier))]; in.score(tried) == 0 {
				return in.pick(), nil
			}
			if i == randomDraws-1 {
				break
			}
			x = r.rnd.uint64()
		}
	}
	return snap.scan(x, tried).pick(), nil
}

// LeastLoaded picks by the power of two random choices, the default of
// Finagle and Envoy: it draws two distinct instances at random and takes the
// one with fewer requests in flight (with WithLatencyWeighting, the lower
// (in-flight + 1) × latency average). It approaches the balance of a full
// least-loaded search at the cost of two reads, and it does not herd every
// client onto the single least-loaded instance.
type LeastLoaded struct {
	set     *EndpointSet
	rnd     *source
	latency bool
}

// NewLeastLoaded returns a power-of-two-choices balancer over set.
func NewLeastLoaded(set *EndpointSet, opts ...BalancerOption) *LeastLoaded {
	o := newBalancerOptions(opts)
	return &LeastLoaded{set: set, rnd: newSource(o.seed, o.seeded), latency: o.latency}
}

// Endpoint satisfies go-kit's lb.Balancer.
func (l *LeastLoaded) Endpoint() (endpoint.Endpoint, error) {
	p, err := l.Pick(context.Background(), nil)
	return p.Endpoint, err
}

// Pick returns the less loaded of two random instances.
func (l *LeastLoaded) Pick(_ context.Context, tried []string) (Pick, error) {
	snap := l.set.snap.Load()
	if len(snap.insts) == 0 {
		return Pick{}, snap.err
	}
	x := l.rnd.uint64()
	tier := snap.tiers[0]
	switch n := len(tier); {
	case n == 1:
		if in := tier[0]; in.score(tried) == 0 {
			return in.pick(), nil
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
		if sb < sa || (sb == sa && l.cost(b) < l.cost(a)) {
			a, sa = b, sb
		}
		if sa == 0 {
			return a.pick(), nil
		}
	}
	return snap.scan(x, tried).pick(), nil
}

func (l *LeastLoaded) cost(in *instance) uint64 {
	n := uint64(max(in.inflight.Load(), 0))
	if !l.latency {
		return n
	}
	return (n + 1) * uint64(max(in.ewma.Load(), 1))
}

// Sticky sends requests with the same key (WithStickyKey) to the same
// instance while it can take them: a cache-friendly or session-affine
// balancer.
//
// Keys map to instances by consistent hashing on a ring with a fixed number
// of points per instance (WithVirtualNodes, default 100), built when the
// snapshot is built; a pick is one hash and one binary search, O(log N·V)
// with no allocation. Adding or removing one of N instances moves only the
// keys that the ring assigns to or from it, about 1/N of them (the test
// measures it), and every client maps a key to the same instance. Rendezvous
// hashing would move the same share but costs O(N) per pick, too slow for
// thousands of instances; jump hash cannot remove an arbitrary instance
// without remapping others.
//
// When the key's instance cannot be picked (unavailable or tried), the pick
// walks the ring to the next instance that can, so one instance's keys spread
// over the others rather than piling onto a neighbour. ACTIVE instances have
// their own ring; the STANDBY ring is used only when no ACTIVE instance can
// be picked. A preferred instance (WithPreferredInstance) wins over the key
// while it is available and untried, ACTIVE or STANDBY. A request with no
// key is balanced round robin.
type Sticky struct {
	set  *EndpointSet
	next roundRobinCounter
}

// NewSticky returns a sticky balancer over set.
func NewSticky(set *EndpointSet, opts ...BalancerOption) *Sticky {
	o := newBalancerOptions(opts)
	s := &Sticky{set: set}
	s.next.n.Store(newSource(o.seed, o.seeded).uint64())
	set.useRings()
	return s
}

// Endpoint satisfies go-kit's lb.Balancer. With no context there is no key,
// so it is round robin.
func (s *Sticky) Endpoint() (endpoint.Endpoint, error) {
	p, err := s.Pick(context.Background(), nil)
	return p.Endpoint, err
}

// Pick returns the preferred instance, else the key's instance, else the
// next one round robin.
func (s *Sticky) Pick(ctx context.Context, tried []string) (Pick, error) {
	snap := s.set.snap.Load()
	if len(snap.insts) == 0 {
		return Pick{}, snap.err
	}
	if name, ok := PreferredInstance(ctx); ok {
		if in := snap.byName[name]; in != nil && in.score(tried) == 0 {
			return in.pick(), nil
		}
	}
	key, ok := StickyKey(ctx)
	if !ok {
		return roundRobinPick(snap, s.next.n.Add(1)-1, tried), nil
	}
	return stickyPick(snap, hashString(key), tried).pick(), nil
}

// stickyPick walks each tier's ring from the key's point.
func stickyPick(snap *snapshot, h uint64, tried []string) *instance {
	rings := snap.getRings()
	var best *instance
	bestScore := scoreWorst
	for t := range rings {
		if bestScore <= t {
			break
		}
		r, tier := rings[t], snap.tiers[t]
		if len(tier) == 0 {
			continue
		}
		first := 0
		if len(r) > 0 {
			p := r.search(h)
			first = r.owner(p)
			last := -1
			for range min(maxRingWalk, len(r)) {
				if o := r.owner(p); o != last {
					last = o
					in := tier[o]
					if sc := t + in.score(tried); sc < bestScore {
						best, bestScore = in, sc
						if sc == t {
							return best
						}
					}
				}
				if p++; p == len(r) {
					p = 0
				}
			}
		}
		// Mostly unpickable instances: finish with a scan of the tier,
		// from the key's instance so the choice is still the key's.
		for i := range tier {
			in := tier[(first+i)%len(tier)]
			if sc := t + in.score(tried); sc < bestScore {
				best, bestScore = in, sc
				if sc == t {
					return best
				}
			}
		}
	}
	return best
}

var (
	_ Balancer       = (*RoundRobin)(nil)
	_ Balancer       = (*Random)(nil)
	_ Balancer       = (*LeastLoaded)(nil)
	_ Balancer       = (*Sticky)(nil)
	_ kitlb.Balancer = (*Sticky)(nil)
)

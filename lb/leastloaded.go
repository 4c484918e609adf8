package lb

import "context"

// LeastLoaded picks by the power of two random choices, the default of
// Finagle and Envoy: it draws two distinct instances at random and takes
// the one with fewer requests in flight (with WithLatencyWeighting, the
// lower (in-flight + 1) × latency average). It approaches the balance of a
// full least-loaded search at the cost of two reads, and it does not herd
// every client onto the single least-loaded instance. Run it with New.
func LeastLoaded(opts ...LeastLoadedOption) Policy { return newLeastLoaded(seed{}, opts) }

func newLeastLoaded(s seed, opts []LeastLoadedOption) Policy {
	l := &leastLoaded{rnd: newSource(s)}
	for _, o := range opts {
		if o != nil {
			must(o.applyLeastLoaded(l))
		}
	}
	return l
}

// LeastLoadedOption configures LeastLoaded.
type LeastLoadedOption interface {
	applyLeastLoaded(*leastLoaded) error
}

type leastLoadedOption func(*leastLoaded) error

func (f leastLoadedOption) applyLeastLoaded(l *leastLoaded) error { return f(l) }

// WithLatencyWeighting makes LeastLoaded compare instances by (requests in
// flight + 1) × moving-average latency instead of by requests in flight
// alone, so a slow instance gets fewer requests even when nothing queues on
// it.
func WithLatencyWeighting() LeastLoadedOption {
	return leastLoadedOption(func(l *leastLoaded) error {
		l.latency = true
		return nil
	})
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

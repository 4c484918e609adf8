package weighted

import (
	"context"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/aegis-sdk/kitnats/lb"
)

// Key is the metadata key an instance's weight is read from.
const Key = "weight"

// DefaultWeight is the weight of an instance whose metadata has no valid
// weight.
const DefaultWeight = 1

// Weight reads an instance's weight from its metadata: a decimal integer
// from 0 to 4294967295 under Key. A missing, negative, fractional or
// otherwise unreadable value counts as DefaultWeight, so a typo in one
// instance's registration neither drains it nor floods it; ok is false
// then, for callers who want to report it.
func Weight(attrs lb.Attributes) (w uint32, ok bool) {
	s, found := attrs.Metadata[Key]
	if !found {
		return DefaultWeight, true
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return DefaultWeight, false
	}
	return uint32(n), true
}

// Option configures the weighted policy.
type Option func(*options)

type options struct {
	seed   uint64
	seeded bool
}

// WithSeed makes the policy's random draws repeat from run to run, for
// tests. Without it they come from math/rand/v2's runtime source, which
// scales across goroutines; a seeded source is one atomic counter that all
// of them share.
func WithSeed(seed uint64) Option {
	return func(o *options) { o.seed, o.seeded = seed, true }
}

// NewPolicy returns the weighted random policy. Run it with
// lb.NewPolicyBalancer, or use New.
func NewPolicy(opts ...Option) lb.Policy {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	p := &policy{seeded: o.seeded}
	p.state.Store(o.seed)
	return p
}

// New returns a weighted balancer over set: lb.NewPolicyBalancer(set,
// NewPolicy(opts...)).
func New(set *lb.EndpointSet, opts ...Option) *lb.PolicyBalancer {
	return lb.NewPolicyBalancer(set, NewPolicy(opts...))
}

// policy is also the random source its pickers share, so that the draws of
// a seeded policy continue across views.
type policy struct {
	seeded bool
	state  atomic.Uint64
}

const golden = 0x9e3779b97f4a7c15

func (p *policy) rand() uint64 {
	if !p.seeded {
		return rand.Uint64()
	}
	// splitmix64 over an atomic counter: lock-free and allocation-free,
	// and one goroutine's sequence repeats exactly.
	z := p.state.Add(golden)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Build lays out, per tier, the instances of positive weight and the
// running sums of their weights: a pick is then one draw and one binary
// search.
func (p *policy) Build(v *lb.View) lb.Picker {
	return &picker{
		policy: p,
		view:   v,
		tiers:  [2]table{newTable(v.Active()), newTable(v.Standby())},
	}
}

// table is one tier's instances of positive weight, in view order, with
// cum[i] the sum of the weights of insts[0..i].
type table struct {
	insts []*lb.Instance
	cum   []uint64
}

func newTable(tier []*lb.Instance) table {
	var t table
	var sum uint64
	for _, in := range tier {
		w, _ := Weight(in.Attributes())
		if w == 0 {
			continue
		}
		sum += uint64(w)
		t.insts = append(t.insts, in)
		t.cum = append(t.cum, sum)
	}
	return t
}

func (t *table) total() uint64 {
	if len(t.cum) == 0 {
		return 0
	}
	return t.cum[len(t.cum)-1]
}

// at returns the instance that owns point x·total/2⁶⁴ of the weight line:
// instance i with probability weight(i)/total.
func (t *table) at(x uint64) *lb.Instance {
	r, _ := bits.Mul64(x, t.total())
	// The first running sum above r. The halving search has no
	// data-dependent branch (the compiler turns the if into a conditional
	// move): random draws would mispredict half of them, which costs more
	// than the search itself.
	cum := t.cum
	base, n := 0, len(cum)
	for n > 1 {
		half := n >> 1
		if cum[base+half-1] <= r {
			base += half
		}
		n -= half
	}
	return t.insts[base]
}

func (t *table) weight(i int) uint64 {
	if i == 0 {
		return t.cum[0]
	}
	return t.cum[i] - t.cum[i-1]
}

// draws is how many weighted draws a pick makes before it turns to an
// exact search. Each draw that lands on an ineligible instance is rejected,
// which keeps the choice exactly proportional among the eligible ones; a
// few draws cover the common case of one or two tried instances, and the
// search bounds the cost when most of the weight is ineligible.
const draws = 4

// pick chooses among the table's eligible instances in proportion to their
// weights, or returns nil when none is eligible.
func (t *table) pick(p *policy, x uint64, tried []string) *lb.Instance {
	if len(t.insts) == 0 {
		return nil
	}
	for i := 0; ; i++ {
		if in := t.at(x); in.Eligible(tried) {
			return in
		}
		if i == draws-1 {
			break
		}
		x = p.rand()
	}
	// Exact, in two passes: the eligible weight, then the instance that
	// owns a point of it. An instance whose availability flips between the
	// passes may leave nothing to find; the caller falls back then.
	var eligible uint64
	for i, in := range t.insts {
		if in.Eligible(tried) {
			eligible += t.weight(i)
		}
	}
	if eligible == 0 {
		return nil
	}
	r, _ := bits.Mul64(x, eligible)
	for i, in := range t.insts {
		if !in.Eligible(tried) {
			continue
		}
		w := t.weight(i)
		if r < w {
			return in
		}
		r -= w
	}
	return nil
}

type picker struct {
	*policy
	view  *lb.View
	tiers [2]table // ACTIVE, STANDBY
}

// Pick keeps the shared rules and applies weights within them: an eligible
// ACTIVE instance of positive weight, by weight; else an eligible ACTIVE one
// of weight 0; else an eligible STANDBY one (by weight again, weight 0
// last); else the best-ranked of the rest, as every policy does.
func (p *picker) Pick(_ context.Context, tried []string) *lb.Instance {
	x := p.rand()
	if in := p.tiers[0].pick(p.policy, x, tried); in != nil {
		return in
	}
	best := p.view.Fallback(x, tried)
	if best.Standby() && best.Eligible(tried) {
		if in := p.tiers[1].pick(p.policy, p.rand(), tried); in != nil {
			return in
		}
	}
	return best
}

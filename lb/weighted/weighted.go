package weighted

import (
	"context"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/wire"
)

// defaultWeight is the weight of an instance whose metadata has no valid
// weight.
const defaultWeight = 1

// weight reads an instance's weight from its metadata: a decimal integer
// from 0 to 4294967295 under wire.MetadataWeight. A missing, negative,
// fractional or otherwise unreadable value counts as defaultWeight, so a
// typo in one instance's registration neither drains it nor floods it; ok
// is false then.
func weight(attrs lb.Attributes) (w uint32, ok bool) {
	s, found := attrs.Metadata[wire.MetadataWeight]
	if !found {
		return defaultWeight, true
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return defaultWeight, false
	}
	return uint32(n), true
}

// Policy returns the weighted random policy. Run it with lb.New.
func Policy() lb.Policy { return newPolicy(0, false) }

func newPolicy(seed uint64, seeded bool) lb.Policy {
	p := &policy{seeded: seeded}
	p.state.Store(seed)
	return p
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

// Build lays out, per tier, an alias table of the instances of positive
// weight: a pick is then one draw and two loads, whatever the number of
// instances.
func (p *policy) Build(v *lb.View) lb.Picker {
	return &picker{
		policy: p,
		view:   v,
		tiers:  [2]table{newTable(v.Active()), newTable(v.Standby())},
	}
}

// table is one tier's instances of positive weight, in view order, as
// Walker's alias table (built by Vose's method, in integers so that it is
// exact): n columns of capacity total, column i holding prob[i] of
// instance i's weight and the rest of alias[i]'s. A uniform column and a
// uniform point within it land on instance i with probability
// weight(i)/total.
type table struct {
	insts   []*lb.Instance
	weights []uint64 // for the exact search
	prob    []uint64 // in [0, total]
	alias   []uint32
	total   uint64
}

func newTable(tier []*lb.Instance) table {
	var t table
	for _, in := range tier {
		if w, _ := weight(in.Attributes()); w > 0 {
			t.insts = append(t.insts, in)
			t.weights = append(t.weights, uint64(w))
			t.total += uint64(w)
		}
	}
	n := len(t.insts)
	t.prob = make([]uint64, n)
	t.alias = make([]uint32, n)
	// Each weight scaled by n: the n columns hold n·total in all. Columns
	// under capacity (small) are topped up from one over it (large). With
	// integers nothing is lost to rounding, so both lists run out together.
	scaled := make([]uint64, n)
	var small, large []uint32
	for i, w := range t.weights {
		scaled[i] = w * uint64(n)
		if scaled[i] < t.total {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		t.prob[s], t.alias[s] = scaled[s], l
		scaled[l] -= t.total - scaled[s]
		if scaled[l] < t.total {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range append(small, large...) {
		t.prob[i], t.alias[i] = t.total, i // full: the column is its own
	}
	return t
}

// at maps a uniform draw to an instance by weight. The high half of x·n
// picks the column; the low half, uniform given the column, picks the point
// within it.
func (t *table) at(x uint64) *lb.Instance {
	col, frac := bits.Mul64(x, uint64(len(t.prob)))
	if point, _ := bits.Mul64(frac, t.total); point < t.prob[col] {
		return t.insts[col]
	}
	return t.insts[t.alias[col]]
}

// draws is how many weighted draws a pick makes before it turns to an
// exact search. Each draw that lands on an ineligible instance is rejected,
// which keeps the choice exactly proportional among the eligible ones; a
// few draws cover the common case of one or two tried instances, and the
// search bounds the cost when most of the weight is ineligible.
const draws = 4

// pick chooses among the table's eligible instances in proportion to their
// weights, or returns nil when none is eligible.
func (t *table) pick(p *policy, tried []string) *lb.Instance {
	if len(t.insts) == 0 {
		return nil
	}
	// Every draw is fresh: a rejected one is known to land on ineligible
	// weight, and reusing any of its bits would skew the next choice.
	for range draws {
		if in := t.at(p.rand()); in.Eligible(tried) {
			return in
		}
	}
	// Exact, in two passes: the eligible weight, then the instance that
	// owns a point of it. An instance whose availability flips between the
	// passes may leave nothing to find; the caller falls back then.
	var eligible uint64
	for i, in := range t.insts {
		if in.Eligible(tried) {
			eligible += t.weights[i]
		}
	}
	if eligible == 0 {
		return nil
	}
	r, _ := bits.Mul64(p.rand(), eligible)
	for i, in := range t.insts {
		if !in.Eligible(tried) {
			continue
		}
		w := t.weights[i]
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
	if in := p.tiers[0].pick(p.policy, tried); in != nil {
		return in
	}
	best := p.view.Fallback(p.rand(), tried)
	if best.Attributes().Standby && best.Eligible(tried) {
		if in := p.tiers[1].pick(p.policy, tried); in != nil {
			return in
		}
	}
	return best
}

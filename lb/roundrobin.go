package lb

import (
	"context"
	"sync/atomic"
)

// RoundRobin hands out instances in turn, starting at a random offset so
// that many clients started together do not all hit the first instance
// (go-kit's round robin starts at 0). An instance that is skipped (not
// eligible) hands its turn to the next one. Run it with New.
func RoundRobin() Policy { return newRoundRobin(seed{}) }

func newRoundRobin(s seed) Policy { return &roundRobin{next: newCounter(s)} }

// The counter lives in the policy, not the picker, so a new view does not
// restart the rotation.
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

// counter sits on its own cache line: every round robin pick writes it.
type counter struct {
	_ [64]byte
	n atomic.Uint64
	_ [56]byte
}

// next returns the counter's value before the increment.
func (c *counter) next() uint64 { return c.n.Add(1) - 1 }

func newCounter(s seed) *counter {
	c := &counter{}
	// A random start, so that many clients started together do not all
	// hit the first instance.
	c.n.Store(newSource(s).uint64())
	return c
}

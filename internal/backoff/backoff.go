// Package backoff is the one exponential backoff kitnats uses wherever it
// waits before trying again: retries across instances, rebuilding a failed
// endpoint, re-creating a lost registry watch.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy grows a delay from Base by doubling per step, up to Cap.
type Policy struct {
	Base time.Duration // the delay of step 0
	Cap  time.Duration // no delay exceeds it; 0 means Base never grows
}

// Ceiling is Base·2^step, capped at Cap (at Base when Cap < Base), without
// overflow. It is 0 when Base is not positive.
func (p Policy) Ceiling(step int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	limit := max(p.Cap, p.Base)
	if step < 0 {
		step = 0
	}
	if step >= 62 || p.Base > limit>>step {
		return limit
	}
	return p.Base << step
}

// Full is the "full jitter" delay of AWS's backoff study: uniform in
// [0, Ceiling(step)). It spreads retries of many clients the most.
func (p Policy) Full(step int) time.Duration {
	c := p.Ceiling(step)
	if c <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(c)))
}

// Equal is Ceiling(step) ±50%: uniform in [c/2, 3c/2). It keeps a floor under
// the delay, for retries that must not come at once.
func (p Policy) Equal(step int) time.Duration {
	c := p.Ceiling(step)
	if c <= 0 {
		return 0
	}
	return c/2 + time.Duration(rand.Int64N(int64(c)))
}

package hedge

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Budget bounds the backup requests of one or more hedging balancers to a
// fraction of their calls: a token bucket that every call fills by ratio of a
// token, up to burst tokens, and every backup request empties by one. Over
// any stretch of calls, backups ≤ burst + ratio × calls, exactly: unlike the
// retry package's time-windowed Budget, nothing here depends on the clock,
// so the bound holds for a quiet client as for a busy one and tests can
// check it by counting.
//
// A Budget is safe for concurrent use and lock-free: the tokens are one
// atomic word, in millionths of a token, changed by compare-and-swap, so
// racing withdrawals never overdraw it. Share one Budget between the
// balancers of a client to bound the client's extra load as a whole.
type Budget struct {
	perCall int64 // micro-tokens a call deposits
	max     int64 // micro-tokens the bucket holds at most
	tokens  atomic.Int64
}

const unit = 1_000_000 // micro-tokens in a token

// NewBudget returns a budget that allows ratio backup requests per call
// (0.1: one call in ten may be hedged), and burst backups at once beyond
// that — the bucket starts full, so a client's first calls can be hedged. A
// ratio and a burst of 0 forbid hedging.
func NewBudget(ratio float64, burst int) (*Budget, error) {
	switch {
	case math.IsNaN(ratio) || ratio < 0 || ratio > 1:
		return nil, fmt.Errorf("%w: budget ratio %v not in [0, 1]", ErrInvalidOption, ratio)
	case burst < 0 || burst > 1<<20:
		return nil, fmt.Errorf("%w: budget burst %d not in [0, %d]", ErrInvalidOption, burst, 1<<20)
	}
	b := &Budget{perCall: int64(math.Round(ratio * unit)), max: int64(burst) * unit}
	if b.max < unit {
		// A bucket smaller than one token would never allow a backup, however
		// many calls filled it: let it hold one.
		b.max = unit
		if b.perCall == 0 {
			b.max = 0
		}
	}
	b.tokens.Store(int64(burst) * unit)
	return b, nil
}

// deposit records one call. A hedging balancer calls it once per call it may
// hedge.
func (b *Budget) deposit() { b.add(b.perCall) }

// tryWithdraw takes one backup request from the budget and reports whether
// there was one to take.
func (b *Budget) tryWithdraw() bool {
	for {
		old := b.tokens.Load()
		if old < unit {
			return false
		}
		if b.tokens.CompareAndSwap(old, old-unit) {
			return true
		}
	}
}

// refund returns a withdrawn backup that was not sent after all.
func (b *Budget) refund() { b.add(unit) }

func (b *Budget) add(n int64) {
	for {
		old := b.tokens.Load()
		v := min(old+n, b.max)
		if v <= old || b.tokens.CompareAndSwap(old, v) {
			return
		}
	}
}

package retry

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// Budget caps retries at a fraction of calls over a sliding window, plus a
// small reserve so that a quiet client can still retry, as Finagle's
// RetryBudget and Envoy's retry budgets do. Per-call attempt limits alone let
// a fleet of clients multiply its load by the attempt count exactly when the
// servers are failing; a budget keeps the extra load to the configured ratio.
//
// A Budget is safe for concurrent use and lock-free: the window is a ring of
// buckets, each one atomic word holding the bucket's epoch, calls and
// retries. Share one Budget between the endpoints of a client to budget the
// client as a whole.
type Budget struct {
	ratio   float64       // retries allowed per call
	reserve float64       // retries always allowed in a window (minPerSec × window)
	width   time.Duration // one bucket's span
	buckets []atomic.Uint64
	now     func() time.Time
	origin  time.Time
}

// Bucket word layout: epoch (16 bits) | calls (24 bits) | retries (24 bits).
// Counts saturate; the epoch is the bucket's sequence number modulo 2^16.
const (
	countBits  = 24
	countMask  = 1<<countBits - 1
	epochShift = 2 * countBits
	epochMask  = 1<<16 - 1
	numBuckets = 10
)

// NewBudget returns a budget that allows, within any window, retries up to
// ratio × calls plus minPerSec × window. Finagle's defaults are ratio 0.2,
// minPerSec 10 and window 10s. A ratio of 0 and minPerSec of 0 forbid retries.
func NewBudget(ratio float64, minPerSec float64, window time.Duration) (*Budget, error) {
	switch {
	case math.IsNaN(ratio) || ratio < 0 || ratio > 1000:
		return nil, fmt.Errorf("%w: budget ratio %v not in [0, 1000]", ErrInvalidOption, ratio)
	case math.IsNaN(minPerSec) || minPerSec < 0:
		return nil, fmt.Errorf("%w: budget minimum %v retries/s is negative", ErrInvalidOption, minPerSec)
	case window < numBuckets*time.Millisecond:
		return nil, fmt.Errorf("%w: budget window %v shorter than %v", ErrInvalidOption, window, numBuckets*time.Millisecond)
	}
	return &Budget{
		ratio:   ratio,
		reserve: minPerSec * window.Seconds(),
		width:   window / numBuckets,
		buckets: make([]atomic.Uint64, numBuckets),
		now:     time.Now,
		origin:  time.Now(),
	}, nil
}

func (b *Budget) epoch() uint64 {
	return uint64(b.now().Sub(b.origin) / b.width)
}

// add records calls and retries in the current bucket, starting the bucket
// afresh when it still holds an older epoch.
func (b *Budget) add(calls, retries uint64) {
	e := b.epoch()
	slot := &b.buckets[e%numBuckets]
	tag := e & epochMask
	for {
		old := slot.Load()
		var c, r uint64
		if old>>epochShift == tag {
			c, r = old>>countBits&countMask, old&countMask
		}
		c = min(c+calls, countMask)
		r = min(r+retries, countMask)
		if slot.CompareAndSwap(old, tag<<epochShift|c<<countBits|r) {
			return
		}
	}
}

// sums returns calls and retries recorded within the window.
func (b *Budget) sums() (calls, retries uint64) {
	e := b.epoch()
	for i := range b.buckets {
		w := b.buckets[i].Load()
		if (e-w>>epochShift)&epochMask < numBuckets {
			calls += w >> countBits & countMask
			retries += w & countMask
		}
	}
	return calls, retries
}

// deposit records one call. The retry endpoint calls it once per call.
func (b *Budget) deposit() { b.add(1, 0) }

// tryWithdraw reports whether one more retry fits the budget and, if it
// does, records it. Concurrent withdrawals may overshoot the cap by the
// number of racing callers; the budget bounds load, it is not a lock.
func (b *Budget) tryWithdraw() bool {
	calls, retries := b.sums()
	if float64(retries)+1 > b.reserve+b.ratio*float64(calls) {
		return false
	}
	b.add(0, 1)
	return true
}

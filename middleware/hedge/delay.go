package hedge

import (
	"math"
	"sync/atomic"
	"time"
)

// The latency tracker keeps the last windowSize latencies of first attempts
// that succeeded, in a ring of atomic words, and every recomputeEvery
// samples recomputes the quantile into one atomic word that the call path
// reads. Recording is two atomic operations; the quantile costs a copy and a
// selection over the ring (a few microseconds) once in recomputeEvery
// samples, on the goroutine that recorded the sample, never under a lock.
// Until minSamples have been seen the delay is the initial one.
//
// Why a ring rather than a histogram: the window is the last windowSize
// requests, whatever their rate, so the delay follows a change of the
// service's latency within a thousand calls, and the quantile is exact for
// the window; a decaying histogram needs a clock and bucket bounds.
const (
	windowSize     = 1024
	recomputeEvery = 32
	minSamples     = 64
)

// tracker estimates the hedge delay. A fixed delay is a tracker that never
// records.
type tracker struct {
	fixed   bool
	q       float64
	floor   int64 // ns
	current atomic.Int64
	n       atomic.Uint64
	busy    atomic.Bool
	ring    [windowSize]atomic.Int64
	scratch []int64 // guarded by busy
}

func newFixed(d time.Duration) *tracker {
	t := &tracker{fixed: true}
	t.current.Store(int64(d))
	return t
}

func newTracker(q float64, floor, initial time.Duration) *tracker {
	t := &tracker{q: q, floor: int64(floor), scratch: make([]int64, windowSize)}
	t.current.Store(int64(max(initial, floor)))
	return t
}

// delay is how long to wait for the first attempt before sending a backup.
func (t *tracker) delay() time.Duration { return time.Duration(t.current.Load()) }

// observe records the latency of a first attempt that succeeded.
func (t *tracker) observe(d time.Duration) {
	if t.fixed {
		return
	}
	i := t.n.Add(1)
	t.ring[(i-1)%windowSize].Store(int64(d))
	if i < minSamples || i%recomputeEvery != 0 {
		return
	}
	if !t.busy.CompareAndSwap(false, true) {
		return // another goroutine is at it; the next round will catch up
	}
	k := int(min(i, windowSize))
	s := t.scratch[:k]
	for j := range s {
		s[j] = t.ring[j].Load()
	}
	rank := int(math.Ceil(t.q*float64(k))) - 1
	v := selectKth(s, max(0, min(rank, k-1)))
	t.current.Store(max(v, t.floor))
	t.busy.Store(false)
}

// selectKth returns the k-th smallest element of s (from 0), reordering s:
// Hoare's quickselect with a median-of-three pivot, O(len(s)) expected.
func selectKth(s []int64, k int) int64 {
	lo, hi := 0, len(s)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if s[mid] < s[lo] {
			s[mid], s[lo] = s[lo], s[mid]
		}
		if s[hi] < s[lo] {
			s[hi], s[lo] = s[lo], s[hi]
		}
		if s[hi] < s[mid] {
			s[hi], s[mid] = s[mid], s[hi]
		}
		pivot := s[mid]
		i, j := lo, hi
		for i <= j {
			for s[i] < pivot {
				i++
			}
			for s[j] > pivot {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return s[k]
		}
	}
	return s[k]
}

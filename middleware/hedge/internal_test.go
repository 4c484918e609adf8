package hedge

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestSelectKth(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 7, 64, 1000, 1024} {
		for _, spread := range []int64{1, 3, 1 << 40} { // many duplicates, some, none
			s := make([]int64, n)
			for i := range s {
				s[i] = r.Int64N(spread)
			}
			sorted := slices.Sorted(slices.Values(s))
			for _, k := range []int{0, n / 2, n * 95 / 100, n - 1} {
				c := slices.Clone(s)
				if have, want := selectKth(c, k), sorted[k]; have != want {
					t.Fatalf("n %d spread %d k %d: want %d, have %d", n, spread, k, want, have)
				}
			}
		}
	}
}

func TestTrackerQuantile(t *testing.T) {
	tr := newTracker(0.95, time.Millisecond, 7*time.Millisecond)
	if have := tr.delay(); have != 7*time.Millisecond {
		t.Fatalf("initial delay: want 7ms, have %v", have)
	}
	// Fewer samples than minSamples: still the initial delay.
	for i := range minSamples - 1 {
		tr.observe(time.Duration(i+1) * 10 * time.Millisecond)
	}
	if have := tr.delay(); have != 7*time.Millisecond {
		t.Fatalf("delay before %d samples: want 7ms, have %v", minSamples, have)
	}
	// A full window of 1..1024 ms, in shuffled order: p95 is the 973rd.
	tr = newTracker(0.95, time.Millisecond, 7*time.Millisecond)
	lat := make([]time.Duration, windowSize)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(lat), func(i, j int) { lat[i], lat[j] = lat[j], lat[i] })
	for _, d := range lat {
		tr.observe(d)
	}
	if have, want := tr.delay(), 973*time.Millisecond; have != want {
		t.Errorf("p95 of 1..1024 ms: want %v, have %v", want, have)
	}
	// The window moves on: a thousand fast calls bring the delay down to
	// the floor.
	for range windowSize {
		tr.observe(10 * time.Microsecond)
	}
	if have, want := tr.delay(), time.Millisecond; have != want {
		t.Errorf("after fast calls: want the floor %v, have %v", want, have)
	}
}

func TestTrackerFixed(t *testing.T) {
	tr := newFixed(3 * time.Millisecond)
	for range 2 * windowSize {
		tr.observe(time.Second)
	}
	if have := tr.delay(); have != 3*time.Millisecond {
		t.Errorf("fixed delay: want 3ms, have %v", have)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := newTracker(0.5, 0, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 4 * windowSize {
				tr.observe(time.Duration(g+1) * time.Millisecond)
				_ = tr.delay()
			}
		})
	}
	wg.Wait()
	if d := tr.delay(); d < time.Millisecond || d > 8*time.Millisecond {
		t.Errorf("median of 1..8 ms: have %v", d)
	}
}

func TestBudgetRefund(t *testing.T) {
	b, err := NewBudget(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !b.TryWithdraw() || b.TryWithdraw() {
		t.Fatal("want one backup from a burst of 1")
	}
	b.refund()
	if !b.TryWithdraw() {
		t.Fatal("a refunded backup is available again")
	}
}

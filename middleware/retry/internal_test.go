package retry

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestBudget(t *testing.T, ratio, minPerSec float64, window time.Duration) (*Budget, *fakeClock) {
	t.Helper()
	b, err := NewBudget(ratio, minPerSec, window)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: time.Unix(1_000_000, 0)}
	b.origin, b.now = c.t, c.now
	return b, c
}

func withdrawAll(b *Budget) (n int) {
	for b.TryWithdraw() {
		n++
		if n > 1e6 {
			break
		}
	}
	return n
}

func TestBudgetSlidingWindow(t *testing.T) {
	b, clock := newTestBudget(t, 0.2, 0, 10*time.Second)
	for range 50 {
		b.Deposit()
	}
	if want, have := 10, withdrawAll(b); want != have {
		t.Fatalf("retries for 50 calls at 20%%: want %d, have %d", want, have)
	}
	// Half the window later the old calls still count, and so do the
	// retries already spent.
	clock.advance(5 * time.Second)
	for range 10 {
		b.Deposit()
	}
	if want, have := 2, withdrawAll(b); want != have {
		t.Fatalf("retries after 10 more calls: want %d, have %d", want, have)
	}
	// Once the first 50 calls and 10 retries leave the window, only the
	// later 10 calls and their 2 retries remain.
	clock.advance(5*time.Second + time.Millisecond)
	if want, have := 0, withdrawAll(b); want != have {
		t.Fatalf("retries once the early calls expired: want %d, have %d", want, have)
	}
	clock.advance(10 * time.Second)
	if want, have := 0, withdrawAll(b); want != have {
		t.Fatalf("retries in an empty window: want %d, have %d", want, have)
	}
}

func TestBudgetReserve(t *testing.T) {
	b, clock := newTestBudget(t, 0, 1, 10*time.Second)
	if want, have := 10, withdrawAll(b); want != have {
		t.Fatalf("reserve of 1/s over 10s: want %d, have %d", want, have)
	}
	clock.advance(11 * time.Second)
	if want, have := 10, withdrawAll(b); want != have {
		t.Fatalf("reserve after the window moved: want %d, have %d", want, have)
	}
}

func TestBudgetEpochWraps(t *testing.T) {
	b, clock := newTestBudget(t, 1, 0, 10*time.Second)
	// Far beyond 2^16 buckets, the ring still counts the window only.
	clock.advance(70000 * time.Second)
	b.Deposit()
	b.Deposit()
	if want, have := 2, withdrawAll(b); want != have {
		t.Fatalf("want %d, have %d", want, have)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b, _ := newTestBudget(t, 0.5, 0, 10*time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Deposit()
			}
		})
	}
	wg.Wait()
	if calls, _ := b.sums(); calls != 8000 {
		t.Fatalf("calls: want 8000, have %d", calls)
	}
	if want, have := 4000, withdrawAll(b); want != have {
		t.Fatalf("retries: want %d, have %d", want, have)
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	o := options{base: 10 * time.Millisecond, cap: 80 * time.Millisecond}
	if err := WithSeed(42).apply(&o); err != nil {
		t.Fatal(err)
	}
	r := &retrier{o: o}
	for k := range 100 {
		ceil := min(80*time.Millisecond, 10*time.Millisecond<<min(k, 20))
		for range 50 {
			if d := r.backoff(k); d < 0 || d >= ceil {
				t.Fatalf("backoff(%d) = %v, want in [0, %v)", k, d, ceil)
			}
		}
	}
	// The same seed gives the same delays.
	seq := func() []time.Duration {
		o := options{base: time.Millisecond, cap: time.Second}
		_ = WithSeed(9).apply(&o)
		r := &retrier{o: o}
		var s []time.Duration
		for k := range 8 {
			s = append(s, r.backoff(k))
		}
		return s
	}
	a, b := seq(), seq()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seeded delays differ: %v vs %v", a, b)
		}
	}
	if (&retrier{o: options{}}).backoff(3) != 0 {
		t.Fatal("zero base must not sleep")
	}
}

package retry

import (
	"math/rand/v2"
	"sync"
)

// WithSeed makes the backoff jitter a deterministic sequence.
func WithSeed(seed uint64) Option {
	return option(func(o *options) error {
		var mu sync.Mutex
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		o.jitter = func(n int64) int64 {
			mu.Lock()
			defer mu.Unlock()
			return r.Int64N(n)
		}
		return nil
	})
}

// The budget's bookkeeping, for its tests and benchmark.
func (b *Budget) Deposit()          { b.deposit() }
func (b *Budget) TryWithdraw() bool { return b.tryWithdraw() }

const MaxFree = maxFree

package retry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrInvalidOption is wrapped by every error New returns for a bad option.
var ErrInvalidOption = errors.New("kitnats/retry: invalid option")

// Option configures New, in the style of nats.go jetstream's options: each
// one validates its input and New reports the first error.
type Option func(*options) error

type options struct {
	maxAttempts    int
	attemptTimeout time.Duration
	minAttempt     time.Duration
	base, cap      time.Duration
	budget         *Budget
	classify       Classifier
	idempotent     bool
	observer       Observer
	jitter         func(n int64) int64 // uniform in [0, n)
}

// Defaults, chosen after Envoy's retry policy: 3 attempts, 25ms base and
// 250ms cap of the backoff, a budget of 20% of calls plus 10 retries per
// second over 10s (Finagle's).
const (
	DefaultMaxAttempts = 3
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffCap  = 250 * time.Millisecond
	DefaultMinAttempt  = time.Millisecond
)

// WithMaxAttempts bounds the attempts of one call, the first included.
// 1 disables retries.
func WithMaxAttempts(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max attempts %d < 1", ErrInvalidOption, n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithAttemptTimeout bounds every attempt so that one hung instance does not
// use up the caller's whole deadline: the next attempt goes elsewhere. The
// attempt's context never outlives the caller's. 0 (the default) means
// attempts are bounded by the caller's deadline only. An attempt that times
// out is retried only for idempotent calls (see WithIdempotent).
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: attempt timeout %v < 0", ErrInvalidOption, d)
		}
		o.attemptTimeout = d
		return nil
	}
}

// WithMinAttemptTime is the least time an attempt needs to be worth
// starting: when the caller's deadline leaves less than this after the
// backoff, the call stops at once with ErrNoTimeLeft instead of sleeping
// into the deadline. Default DefaultMinAttempt.
func WithMinAttemptTime(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: min attempt time %v < 0", ErrInvalidOption, d)
		}
		o.minAttempt = d
		return nil
	}
}

// WithBackoff sets exponential backoff with full jitter: before the k-th
// backoff of a call (k from 0) the endpoint sleeps a uniformly random
// duration in [0, min(cap, base×2^k)). Full jitter spreads the retries of
// many clients (AWS's "Exponential Backoff and Jitter"). A base of 0
// disables sleeping.
func WithBackoff(base, cap time.Duration) Option {
	return func(o *options) error {
		if base < 0 || cap < base {
			return fmt.Errorf("%w: backoff base %v, cap %v", ErrInvalidOption, base, cap)
		}
		o.base, o.cap = base, cap
		return nil
	}
}

// WithSeed makes the backoff jitter a deterministic sequence, for tests and
// simulations. By default jitter comes from math/rand/v2's global source.
func WithSeed(seed uint64) Option {
	return func(o *options) error {
		var mu sync.Mutex
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		o.jitter = func(n int64) int64 {
			mu.Lock()
			defer mu.Unlock()
			return r.Int64N(n)
		}
		return nil
	}
}

// WithBudget shares b between endpoints, or replaces the default budget
// (20% of calls plus 10 retries/s over 10s, per endpoint). A nil b disables
// the budget: only WithMaxAttempts bounds retries.
func WithBudget(b *Budget) Option {
	return func(o *options) error {
		o.budget = b
		return nil
	}
}

// WithClassifier replaces DefaultClassifier.
func WithClassifier(c Classifier) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil classifier", ErrInvalidOption)
		}
		o.classify = c
		return nil
	}
}

// WithIdempotent declares every call through the endpoint idempotent, so
// that attempts which timed out — and may have been processed — are retried.
// The endpoint marks the context it passes down as Idempotent does, so the
// balancer and the endpoints beneath see the same declaration (IsIdempotent):
// the hedge package sends backup requests for such calls. Use Idempotent to
// declare single calls.
func WithIdempotent() Option {
	return func(o *options) error {
		o.idempotent = true
		return nil
	}
}

// WithObserver calls fn after every attempt, for metrics and tracing (see
// the tracing package's RetryObserver).
func WithObserver(fn Observer) Option {
	return func(o *options) error {
		o.observer = fn
		return nil
	}
}

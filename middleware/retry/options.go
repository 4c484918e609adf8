package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrInvalidOption is wrapped by every error New returns for a bad option.
var ErrInvalidOption = errors.New("kitnats/retry: invalid option")

// Option configures New, in the style of nats.go jetstream's options: each
// one validates its input, and New reports the first error.
type Option interface {
	apply(*options) error
}

type option func(*options) error

func (f option) apply(o *options) error { return f(o) }

func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidOption, option, fmt.Sprintf(format, args...))
}

type options struct {
	maxAttempts    int
	attemptTimeout time.Duration
	minAttempt     time.Duration
	base, cap      time.Duration
	budget         *Budget
	classify       func(err error, idempotent bool) Action
	idempotent     bool
	observer       func(ctx context.Context, attempt int, instance string, delay time.Duration, err error)
	jitter         func(n int64) int64 // uniform in [0, n)
}

// Defaults, after Envoy's retry policy, and Finagle's budget.
const (
	defaultMaxAttempts = 3
	defaultBackoffBase = 25 * time.Millisecond
	defaultBackoffCap  = 250 * time.Millisecond
	defaultMinAttempt  = time.Millisecond
)

// WithMaxAttempts bounds the attempts of one call, the first included
// (default 3). 1 disables retries.
func WithMaxAttempts(n int) Option {
	return option(func(o *options) error {
		if n < 1 {
			return invalidOption("WithMaxAttempts", "%d < 1", n)
		}
		o.maxAttempts = n
		return nil
	})
}

// WithAttemptTimeout bounds every attempt so that one hung instance does not
// use up the caller's whole deadline: the next attempt goes elsewhere. The
// attempt's context never outlives the caller's. 0 (the default) means
// attempts are bounded by the caller's deadline only. An attempt that times
// out is retried only for idempotent calls (see WithIdempotent).
func WithAttemptTimeout(d time.Duration) Option {
	return option(func(o *options) error {
		if d < 0 {
			return invalidOption("WithAttemptTimeout", "%v < 0", d)
		}
		o.attemptTimeout = d
		return nil
	})
}

// WithMinAttemptTime is the least time an attempt needs to be worth
// starting (default 1ms): when the caller's deadline leaves less than this
// after the backoff, the call stops at once with ErrNoTimeLeft instead of
// sleeping into the deadline.
func WithMinAttemptTime(d time.Duration) Option {
	return option(func(o *options) error {
		if d < 0 {
			return invalidOption("WithMinAttemptTime", "%v < 0", d)
		}
		o.minAttempt = d
		return nil
	})
}

// WithBackoff sets exponential backoff with full jitter: before the k-th
// backoff of a call (k from 0) the endpoint sleeps a uniformly random
// duration in [0, min(cap, base×2^k)). Full jitter spreads the retries of
// many clients (AWS's "Exponential Backoff and Jitter"). The default is
// 25ms and 250ms; a base of 0 disables sleeping.
func WithBackoff(base, cap time.Duration) Option {
	return option(func(o *options) error {
		if base < 0 || cap < base {
			return invalidOption("WithBackoff", "base %v, cap %v: want 0 ≤ base ≤ cap", base, cap)
		}
		o.base, o.cap = base, cap
		return nil
	})
}

// WithBudget shares b between endpoints, or replaces the default budget
// (20% of calls plus 10 retries/s over 10s, per endpoint). A nil b disables
// the budget: only WithMaxAttempts bounds retries.
func WithBudget(b *Budget) Option {
	return option(func(o *options) error {
		o.budget = b
		return nil
	})
}

// WithClassifier replaces DefaultClassifier: c decides whether a failed
// attempt is retried; idempotent tells whether the call was declared
// idempotent (WithIdempotent, Idempotent). A classifier that refines the
// default calls DefaultClassifier for the errors it does not know.
func WithClassifier(c func(err error, idempotent bool) Action) Option {
	return option(func(o *options) error {
		if c == nil {
			return invalidOption("WithClassifier", "nil classifier")
		}
		o.classify = c
		return nil
	})
}

// WithIdempotent declares every call through the endpoint idempotent, so
// that attempts which timed out — and may have been processed — are retried.
// The endpoint marks the context it passes down as Idempotent does, so the
// balancer and the endpoints beneath see the same declaration (IsIdempotent):
// the hedge package sends backup requests for such calls. Use Idempotent to
// declare single calls.
func WithIdempotent() Option {
	return option(func(o *options) error {
		o.idempotent = true
		return nil
	})
}

// WithObserver calls fn after every attempt of a call, with the caller's
// context: the attempt's number (1 for the first), the instance picked
// (empty when the pick failed), the backoff slept before it, and its error
// (nil on success). fn runs on the call path and must not block. The
// tracing package's RetryObserver is one.
func WithObserver(fn func(ctx context.Context, attempt int, instance string, delay time.Duration, err error)) Option {
	return option(func(o *options) error {
		o.observer = fn
		return nil
	})
}

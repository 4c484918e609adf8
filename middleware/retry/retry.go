package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/backoff"
	"github.com/aegis-sdk/kitnats/internal/unsent"
	"github.com/aegis-sdk/kitnats/lb"
)

// Reasons a call stopped retrying. The *Error of such a call matches one of
// them under errors.Is.
var (
	// ErrMaxAttempts: every allowed attempt failed.
	ErrMaxAttempts = errors.New("kitnats/retry: max attempts reached")
	// ErrBudgetExhausted: a retry was due but the retry budget had none left.
	ErrBudgetExhausted = errors.New("kitnats/retry: retry budget exhausted")
	// ErrNoTimeLeft: the caller's deadline could not fit another attempt.
	ErrNoTimeLeft = errors.New("kitnats/retry: deadline leaves no time for another attempt")
)

// ErrAttemptTimeout wraps the error of an attempt whose own timeout (see
// WithAttemptTimeout) expired while the caller's context was still live.
var ErrAttemptTimeout = errors.New("kitnats/retry: attempt timed out")

// Action is a classifier's verdict on a failed attempt.
type Action int

const (
	// Stop returns the error to the caller.
	Stop Action = iota
	// Retry tries another instance at once: the failure belonged to the
	// instance (no responders, open breaker, draining). When the balancer
	// has no untried instance left, the endpoint backs off first.
	Retry
	// RetryAfterBackoff backs off before the next attempt: the failure is
	// not tied to one instance (no instances at all, a timeout).
	RetryAfterBackoff
)

// DefaultClassifier is the classifier New uses unless WithClassifier says
// otherwise. It retries what proves that the request was not processed
// and never business errors:
//
//   - an error with a Retryable() bool method (found by errors.As) is retried
//     on another instance when it returns true, and stopped when it returns
//     false — the transport's word is final, but for timeouts; a circuit
//     breaker's refusal (breaker.RejectedError) is such an error;
//   - nats.ErrNoResponders is retried on another instance;
//   - lb.ErrNoInstances is retried after a backoff, never in a spin;
//   - an attempt timeout (ErrAttemptTimeout) is retried after a backoff only
//     when the call is idempotent: the instance may have processed it;
//   - HTTP and gRPC clients' failures are read as their transports define
//     them: a connection refused, HTTP 503, 429 or 408 (an error with
//     go-kit's StatusCode() int), gRPC UNAVAILABLE or RESOURCE_EXHAUSTED are
//     retried on another instance; a connection cut mid-call or HTTP 502
//     likewise, and HTTP 504 or gRPC DEADLINE_EXCEEDED after a backoff, for
//     idempotent calls only; other statuses stop;
//   - everything else stops.
func DefaultClassifier(err error, idempotent bool) Action {
	var r interface{ Retryable() bool }
	known := errors.As(err, &r)
	switch {
	case known && r.Retryable():
		return Retry
	case errors.Is(err, ErrAttemptTimeout):
		if idempotent {
			return RetryAfterBackoff
		}
		return Stop
	case known:
		return Stop
	case errors.Is(err, nats.ErrNoResponders):
		return Retry
	case errors.Is(err, lb.ErrNoInstances):
		return RetryAfterBackoff
	}
	a, _ := classifyTransport(err, idempotent)
	return a
}

// Attempt describes one try of a call. AttemptFromContext returns it, Err
// unset, to the endpoints the attempt runs through; Error lists them all,
// each with its outcome.
type Attempt struct {
	Number   int           // 1 for the first try
	Instance string        // the instance picked; empty when the pick failed
	Delay    time.Duration // backoff slept before this attempt
	Err      error         // nil on success
}

type ctxKey int

const (
	attemptKey ctxKey = iota
	idempotentKey
)

// attemptNumberKey is the context key under which the attempt contexts of
// this package answer the attempt's number (an int) to middleware that does
// not import this package: tracing labels attempt spans with it. A string,
// because a key of a type of this package could not be named there.
const attemptNumberKey = "kitnats.attempt"

// AttemptFromContext returns the attempt an endpoint is serving when it runs
// beneath a retry endpoint: per-instance middleware (logging, say) reads
// the attempt number and the instance from it.
func AttemptFromContext(ctx context.Context) (Attempt, bool) {
	a, ok := ctx.Value(attemptKey).(*Attempt)
	if !ok {
		return Attempt{}, false
	}
	return *a, true
}

// Reroute returns a context of the same attempt as ctx, sent to instance:
// AttemptFromContext answers it with that instance. It is for a balancer
// beneath retry that sends an attempt's request to a second instance, as
// package hedge does with its backup requests. Outside a retry endpoint it
// returns ctx.
func Reroute(ctx context.Context, instance string) context.Context {
	a, ok := ctx.Value(attemptKey).(*Attempt)
	if !ok {
		return ctx
	}
	c := &attemptCtx{Context: ctx, a: *a}
	c.a.Instance = instance
	return c
}

// Idempotent declares the call made with the returned context idempotent:
// attempts that timed out are retried. See WithIdempotent.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey, true)
}

// IsIdempotent reports whether ctx was marked by Idempotent, or is the
// context a retry endpoint built WithIdempotent passes to its balancer and
// attempts.
func IsIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey).(bool)
	return v
}

// Error is returned when retrying gave up. It unwraps to every attempt's
// error and to the reason retrying stopped (ErrMaxAttempts,
// ErrBudgetExhausted, ErrNoTimeLeft), so errors.Is and errors.As reach each.
type Error struct {
	Attempts []Attempt // every attempt in order, each with its error
	Reason   error     // why retrying stopped; nil when the last error was not retryable
}

// Last returns the error of the last attempt.
func (e *Error) Last() error {
	if len(e.Attempts) == 0 {
		return e.Reason
	}
	return e.Attempts[len(e.Attempts)-1].Err
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kitnats/retry: %d attempt", len(e.Attempts))
	if len(e.Attempts) != 1 {
		b.WriteByte('s')
	}
	b.WriteString(" failed (instances ")
	for i, a := range e.Attempts {
		if i > 0 {
			b.WriteString(", ")
		}
		if a.Instance == "" {
			b.WriteString("<none>")
		} else {
			b.WriteString(a.Instance)
		}
	}
	b.WriteString(")")
	if e.Reason != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Reason.Error(), "kitnats/retry: "))
	}
	if last := e.Last(); last != nil && last != e.Reason {
		b.WriteString(": last error: ")
		b.WriteString(last.Error())
	}
	return b.String()
}

// Unwrap returns the reason, if any, then every attempt's error.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, len(e.Attempts)+1)
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	for _, a := range e.Attempts {
		if a.Err != nil {
			errs = append(errs, a.Err)
		}
	}
	return errs
}

type attemptTimeoutError struct{ err error }

func (e *attemptTimeoutError) Error() string   { return ErrAttemptTimeout.Error() + ": " + e.err.Error() }
func (e *attemptTimeoutError) Unwrap() []error { return []error{ErrAttemptTimeout, e.err} }

// New returns an endpoint that makes every call through b, retrying failed
// attempts on other instances: up to WithMaxAttempts attempts, each within
// WithAttemptTimeout and the caller's deadline, with exponential backoff and
// full jitter between them (WithBackoff), within a retry budget (WithBudget),
// on an instance not tried yet while one remains, for errors the classifier
// deems safe to retry (DefaultClassifier).
//
// An attempt on a fresh instance that cost no instance anything is free: it
// counts against neither WithMaxAttempts nor the budget. Such an attempt
// was refused at the client before it was sent (an error with a
// Rejected() bool method that returns true: an open breaker's
// breaker.RejectedError, an instance lb holds gone) or found no process to
// take it (Gone() bool: natsrpc's no responders on an instance's own
// subject). So while healthy instances remain, a call's attempts reach them
// however many dead or ejected ones the balancer offers first; free
// attempts are bounded by the instances the balancer can offer, at most
// maxFree per call.
//
// Unlike go-kit's lb.Retry, which retries at once on the same balancer and
// spins when it has no endpoints, New knows which instance served each
// attempt, sleeps between attempts that cannot move to a fresh instance, and
// never extends the caller's deadline.
//
// The endpoint returns the response of the first attempt that succeeds.
// When the caller's context ends it returns ctx.Err() as is. When the first
// attempt fails with an error that is not retried, that error is returned
// unchanged. Otherwise it returns an *Error.
func New(b lb.Balancer, opts ...Option) (endpoint.Endpoint, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil balancer", ErrInvalidOption)
	}
	o := options{
		maxAttempts: defaultMaxAttempts,
		minAttempt:  defaultMinAttempt,
		base:        defaultBackoffBase,
		cap:         defaultBackoffCap,
		classify:    DefaultClassifier,
		jitter:      rand.Int64N,
	}
	var err error
	if o.budget, err = NewBudget(0.2, 10, 10*time.Second); err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.apply(&o); err != nil {
			return nil, err
		}
	}
	r := &retrier{b: b, o: o}
	return r.call, nil
}

type retrier struct {
	b lb.Balancer
	o options
}

// backoff returns the k-th (from 0) backoff delay: full jitter under the
// shared exponential ceiling, drawn from the injectable jitter source.
func (r *retrier) backoff(k int) time.Duration {
	ceil := backoff.Policy{Base: r.o.base, Cap: r.o.cap}.Ceiling(k)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(r.o.jitter(int64(ceil)))
}

func (r *retrier) call(ctx context.Context, request any) (any, error) {
	if r.o.idempotent && !IsIdempotent(ctx) {
		// Say so to everything beneath — the balancer's Pick, the endpoints
		// of every attempt — so that they agree with retry on what may be
		// sent twice (the hedge package hedges only such calls).
		ctx = Idempotent(ctx)
	}
	if r.o.budget != nil {
		r.o.budget.deposit()
	}
	var (
		tried    []string // allocated at the first failure
		attempts []Attempt
		action   Action
		backoffs int
		used     int  // attempts that count against maxAttempts
		frees    int  // attempts that did not
		free     bool // the last attempt cost no instance anything
	)
	fail := func(reason error) error {
		if reason == nil && len(attempts) == 1 {
			return attempts[0].Err
		}
		return &Error{Attempts: attempts, Reason: reason}
	}

	for n := 1; ; n++ {
		var (
			pick   lb.Pick
			perr   error
			picked bool
			delay  time.Duration
		)
		if n > 1 {
			if used >= r.o.maxAttempts {
				return nil, fail(ErrMaxAttempts)
			}
			if action == Retry {
				// Move to a fresh instance at once when there is one.
				pick, perr = r.b.Pick(ctx, tried)
				picked = perr == nil && !slices.Contains(tried, pick.Instance)
				if !picked {
					action = RetryAfterBackoff
				}
			}
			if action == RetryAfterBackoff {
				delay = r.backoff(backoffs)
				backoffs++
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl)-delay < r.o.minAttempt {
				return nil, fail(ErrNoTimeLeft)
			}
			if r.o.budget != nil && !free && !r.o.budget.tryWithdraw() {
				return nil, fail(ErrBudgetExhausted)
			}
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				case <-t.C:
				}
			}
		}
		if !picked {
			pick, perr = r.b.Pick(ctx, tried)
		}
		if perr != nil {
			a := Attempt{Number: n, Delay: delay, Err: perr}
			attempts = append(attempts, a)
			r.observe(ctx, a)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			free = false
			used++
			if action = r.o.classify(perr, r.idempotent(ctx)); action == Stop {
				return nil, fail(nil)
			}
			continue
		}

		ac := &attemptCtx{Context: ctx, a: Attempt{Number: n, Instance: pick.Instance, Delay: delay}}
		var actx context.Context = ac
		var cancel context.CancelFunc
		if r.o.attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(actx, r.o.attemptTimeout)
		}
		resp, err := pick.Endpoint(actx, request)
		if err != nil && cancel != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
			err = &attemptTimeoutError{err: err}
		}
		if cancel != nil {
			cancel()
		}
		done := ac.a
		done.Err = err
		r.observe(ctx, done)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		attempts = append(attempts, done)
		if tried == nil {
			tried = make([]string, 0, min(r.o.maxAttempts, 8))
		}
		fresh := !slices.Contains(tried, pick.Instance)
		if fresh {
			tried = append(tried, pick.Instance)
		}
		free = fresh && frees < maxFree && unsent.Is(err)
		if free {
			frees++
		} else {
			used++
		}
		if action = r.o.classify(err, r.idempotent(ctx)); action == Stop {
			return nil, fail(nil)
		}
	}
}

// maxFree bounds the free attempts of one call (see New), whatever the size
// of the set.
const maxFree = 64

func (r *retrier) idempotent(ctx context.Context) bool {
	return r.o.idempotent || IsIdempotent(ctx)
}

// attemptCtx carries the attempt to the endpoints beneath retry: one
// allocation for the context and its value.
type attemptCtx struct {
	context.Context
	a Attempt
}

func (c *attemptCtx) Value(key any) any {
	switch key {
	case any(attemptKey):
		return &c.a
	case any(attemptNumberKey):
		return c.a.Number
	}
	return c.Context.Value(key)
}

func (r *retrier) observe(ctx context.Context, a Attempt) {
	if r.o.observer != nil {
		r.o.observer(ctx, a.Number, a.Instance, a.Delay, a.Err)
	}
}

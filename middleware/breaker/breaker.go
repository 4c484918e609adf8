package breaker

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/lb"
)

// defaultTimeout is gobreaker's open period when Settings.Timeout is not set.
const defaultTimeout = 60 * time.Second

// Option configures New and Factory.
type Option func(*config)

type config struct {
	settings gobreaker.Settings
	business func(error) bool
	hook     StateHook
}

// StateHook is told of every state change of a breaker, with the breaker's
// name — the instance, for breakers made by Factory. Its signature is
// gobreaker's Settings.OnStateChange, so the tracing package's
// BreakerStateHook fits both. It runs under the breaker's lock: it must not
// block or call the breaker.
type StateHook = func(name string, from, to gobreaker.State)

// WithSettings sets gobreaker's settings: trip policy (ReadyToTrip), the
// open period before a half-open probe (Timeout) and how many probes pass
// (MaxRequests). Name is overridden by New's name and by Factory's instance.
// IsExcluded and IsSuccessful, when set, are consulted after this
// package's own rules; OnStateChange is called before WithStateChange's hook.
func WithSettings(st gobreaker.Settings) Option {
	return func(c *config) { c.settings = st }
}

// WithBusinessErrors sets the predicate that tells business errors — answers
// the server gave deliberately, which prove the instance healthy — from
// failures. Business errors count as successes. The default is
// IsBusinessError; nil counts every error as a failure.
func WithBusinessErrors(pred func(error) bool) Option {
	return func(c *config) { c.business = pred }
}

// WithStateChange calls hook on every state change (for metrics and logs).
func WithStateChange(hook StateHook) Option {
	return func(c *config) { c.hook = hook }
}

// IsBusinessError reports whether err is an answer the server returned
// deliberately. By the transport contract such an error implements
// interface{ Retryable() bool } returning false, while errors proving the
// request was never processed return true. Timeouts are never business
// errors: a hung instance must trip its breaker.
func IsBusinessError(err error) bool {
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || r.Retryable() {
		return false
	}
	return !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout)
}

// excluded marks an error that must not move the breaker: the caller gave
// up, the instance did nothing wrong.
type excluded struct{ err error }

func (e *excluded) Error() string { return e.err.Error() }
func (e *excluded) Unwrap() error { return e.err }

func newConfig(opts []Option) config {
	c := config{business: IsBusinessError}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// settings returns the gobreaker settings for the breaker called name.
// settingsFor returns the gobreaker settings for the breaker called name;
// own, when set, hears state changes first.
func (c config) settingsFor(name string, own StateHook) gobreaker.Settings {
	st := c.settings
	st.Name = name
	userExcluded, userSuccessful, userHook := st.IsExcluded, st.IsSuccessful, st.OnStateChange
	st.IsExcluded = func(err error) bool {
		if err == nil {
			return false
		}
		var x *excluded
		if errors.As(err, &x) || errors.Is(err, context.Canceled) {
			return true
		}
		return userExcluded != nil && userExcluded(err)
	}
	business := c.business
	st.IsSuccessful = func(err error) bool {
		if err == nil || business != nil && business(err) {
			return true
		}
		return userSuccessful != nil && userSuccessful(err)
	}
	if hook := c.hook; hook != nil || userHook != nil || own != nil {
		st.OnStateChange = func(name string, from, to gobreaker.State) {
			if own != nil {
				own(name, from, to)
			}
			if userHook != nil {
				userHook(name, from, to)
			}
			if hook != nil {
				hook(name, from, to)
			}
		}
	}
	return st
}

// New returns a circuit breaker for Middleware. Its settings exclude the
// caller's cancellation (gobreaker's IsExcluded: neither success nor
// failure) and count business errors as successes, so a breaker opens only
// for an instance that fails, not for callers that give up or requests that
// are refused on their merits.
func New(name string, opts ...Option) *gobreaker.CircuitBreaker[any] {
	c := newConfig(opts)
	return gobreaker.NewCircuitBreaker[any](c.settingsFor(name, nil))
}

// RejectedError is returned when the breaker refuses a request: it is open,
// or half-open with its probes in flight. The request never left, so it is
// Retryable, and it matches gobreaker.ErrOpenState or ErrTooManyRequests
// under errors.Is.
type RejectedError struct {
	Name string // the breaker's name: the instance, for Factory's breakers
	Err  error  // gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests
}

func (e *RejectedError) Error() string {
	return "kitnats/breaker: " + e.Name + ": " + e.Err.Error()
}

// Unwrap returns the gobreaker error.
func (e *RejectedError) Unwrap() error { return e.Err }

// Retryable reports true: a rejected request was never sent.
func (e *RejectedError) Retryable() bool { return true }

// Middleware guards the next endpoint with cb, as go-kit's
// circuitbreaker.Gobreaker does, but for gobreaker v2 and with two fixes:
//
//   - a request the caller canceled is not counted against the instance
//     (with a cb built by New or Factory; a cb built elsewhere counts it
//     unless its own IsExcluded says otherwise), while a request that ran
//     out of time is a failure: a hung instance must trip its breaker;
//   - refusals come back as *RejectedError, which the retry middleware
//     retries on another instance.
func Middleware(cb *gobreaker.CircuitBreaker[any]) endpoint.Middleware {
	open := &RejectedError{Name: cb.Name(), Err: gobreaker.ErrOpenState}
	tooMany := &RejectedError{Name: cb.Name(), Err: gobreaker.ErrTooManyRequests}
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, request any) (any, error) {
			resp, err := cb.Execute(func() (any, error) {
				resp, err := next(ctx, request)
				if err != nil && errors.Is(ctx.Err(), context.Canceled) {
					return resp, &excluded{err}
				}
				return resp, err
			})
			if err == nil {
				return resp, nil
			}
			switch err {
			case gobreaker.ErrOpenState:
				return nil, open
			case gobreaker.ErrTooManyRequests:
				return nil, tooMany
			}
			if x, ok := err.(*excluded); ok {
				err = x.err
			}
			return resp, err
		}
	}
}

// Closer is the io.Closer Factory returns for an instance. It implements
// lb.Available, so balancers pass over an instance whose breaker is open,
// until the breaker's Timeout lets a half-open probe through.
type Closer struct {
	cb        *gobreaker.CircuitBreaker[any]
	timeout   time.Duration
	openUntil atomic.Int64 // unix nanoseconds; 0 while not open
	inner     io.Closer
	once      sync.Once
	err       error
}

var (
	_ lb.Available = (*Closer)(nil)
	_ io.Closer    = (*Closer)(nil)
)

// Available reports whether the instance's breaker lets requests through:
// closed, half-open, or open with its Timeout passed (the next request is
// the half-open probe).
// It is lock-free: balancers may ask on every pick.
func (c *Closer) Available() bool {
	until := c.openUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// stateChanged keeps Available in step with the breaker, under its lock.
func (c *Closer) stateChanged(_ string, _, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		c.openUntil.Store(time.Now().Add(c.timeout).UnixNano())
	} else {
		c.openUntil.Store(0)
	}
}

// Breaker returns the instance's breaker, for state and counts.
func (c *Closer) Breaker() *gobreaker.CircuitBreaker[any] { return c.cb }

// Close closes the closer of the wrapped factory, once.
func (c *Closer) Close() error {
	c.once.Do(func() {
		if c.inner != nil {
			c.err = c.inner.Close()
		}
	})
	return c.err
}

// Factory wraps f so that every instance gets its own breaker, named after
// the instance: an instance that keeps failing is ejected (its breaker
// opens, its Closer reports not Available, and picks go elsewhere) and, once
// the breaker's Timeout passes, probed with MaxRequests half-open requests
// before it takes full traffic again. This is outlier ejection at the
// client, as Envoy does it. The options are New's.
func Factory(f sd.Factory, opts ...Option) sd.Factory {
	c := newConfig(opts)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := f(instance)
		if err != nil {
			return nil, nil, err
		}
		cl := &Closer{inner: closer, timeout: c.settings.Timeout}
		if cl.timeout <= 0 {
			cl.timeout = defaultTimeout
		}
		cl.cb = gobreaker.NewCircuitBreaker[any](c.settingsFor(instance, cl.stateChanged))
		return Middleware(cl.cb)(e), cl, nil
	}
}

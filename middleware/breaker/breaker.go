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
)

// Defaults for RPC over NATS, used for every Settings field WithSettings
// leaves zero. gobreaker's own (never clear the counts, trip on six
// consecutive failures, stay open a minute) fit a remote service called a
// few times a minute; an RPC client makes hundreds of calls a second to a
// handful of instances, and an instance that came back should take traffic
// again within seconds. The run of consecutive failures is gobreaker's own
// (more than five), so the trip point of a steadily failing instance stays
// where gobreaker's users expect it.
const (
	defaultTimeout             = 5 * time.Second
	defaultMaxRequests         = 3
	defaultInterval            = 10 * time.Second
	defaultBucketPeriod        = time.Second
	defaultConsecutiveFailures = 6
	defaultMinRequests         = 10
	defaultFailureRatio        = 0.5
)

// readyToTrip opens a breaker when, within the rolling window,
// defaultConsecutiveFailures calls in a row failed, or at least
// defaultFailureRatio of at least defaultMinRequests counted calls did. The
// minimum keeps a single unlucky call from ejecting an instance; the ratio
// catches an instance that fails every other call, which a run of
// consecutive failures would miss.
func readyToTrip(c gobreaker.Counts) bool {
	if c.ConsecutiveFailures >= defaultConsecutiveFailures {
		return true
	}
	counted := c.TotalSuccesses + c.TotalFailures
	return counted >= defaultMinRequests && float64(c.TotalFailures) >= defaultFailureRatio*float64(counted)
}

// withDefaults fills the zero fields of st with this package's defaults.
// A negative Interval keeps gobreaker's meaning: counts never cleared.
func withDefaults(st gobreaker.Settings) gobreaker.Settings {
	if st.Timeout <= 0 {
		st.Timeout = defaultTimeout
	}
	if st.MaxRequests == 0 {
		st.MaxRequests = defaultMaxRequests
	}
	if st.Interval == 0 {
		st.Interval, st.BucketPeriod = defaultInterval, defaultBucketPeriod
	}
	if st.ReadyToTrip == nil {
		st.ReadyToTrip = readyToTrip
	}
	return st
}

// IsBusinessError reports whether err is an answer the server returned
// deliberately. By the transport contract such an error implements
// interface{ Retryable() bool } returning false, while errors proving the
// request was never processed return true. Timeouts are never business
// errors: a hung instance must trip its breaker. Errors without the method
// are read as HTTP or gRPC answers: an HTTP 4xx but 408 and 429 (an error
// with go-kit's StatusCode() int) and a gRPC verdict on the request
// (INVALID_ARGUMENT, NOT_FOUND...) are business errors.
func IsBusinessError(err error) bool {
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) {
		return answered(err) // HTTP and gRPC clients' errors (transport.go)
	}
	if r.Retryable() {
		return false
	}
	return !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout)
}

// failure carries a failed attempt's error to the breaker's IsExcluded with
// what the rules need to judge it. Middleware unwraps it before returning.
type failure struct {
	err      error
	epoch    uint64 // transportEpoch when the attempt started
	canceled bool   // the caller canceled the attempt's context
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func newConfig() config {
	return config{
		business: IsBusinessError,
		grace:    defaultReconnectGrace,
		share:    defaultCorrelationShare,
		window:   defaultCorrelationWindow,
	}
}

// rules are what a breaker's IsExcluded consults besides the user's.
type rules struct {
	conn   *connWatch // nil without WithConn
	grace  time.Duration
	corr   *detector // nil for New's breakers, or when disabled
	slot   *slot
	isSucc func(error) bool
	isExcl func(error) bool // the user's, or nil
}

// excluded reports whether the failure err must not count: the caller
// canceled it, it proves a transport fault, the user says so, the
// connection was not up throughout, or it is correlated with the failures
// of the other instances.
func (r *rules) excluded(err error) bool {
	if err == nil {
		return false
	}
	f, known := err.(*failure)
	if known {
		err = f.err
		if f.canceled {
			return true
		}
	}
	if errors.Is(err, context.Canceled) || isTransportError(err) || r.isExcl != nil && r.isExcl(err) {
		return true
	}
	if r.isSucc(err) {
		return false // counted as a success
	}
	at := now()
	// Record the failure even when the connection rule excuses it: after a
	// reconnection the instances' connections come back one by one, and
	// their failures then are correlated with the ones just before.
	correlated := r.corr != nil && r.corr.failed(r.slot, kindOf(err), at)
	if r.conn != nil {
		var epoch uint64
		if known {
			epoch = f.epoch
		}
		if r.conn.excuses(epoch, known, r.grace, at) {
			return true
		}
	}
	return correlated
}

// settingsFor returns the gobreaker settings for the breaker called name
// with rules r (conn, grace and corr set); own, when set, hears state
// changes first.
func (c config) settingsFor(name string, r *rules, own func(name string, from, to gobreaker.State)) gobreaker.Settings {
	st := c.settings
	st.Name = name
	userSuccessful, userHook := st.IsSuccessful, st.OnStateChange
	r.isExcl = st.IsExcluded
	business := c.business
	r.isSucc = func(err error) bool {
		if f, ok := err.(*failure); ok {
			err = f.err
		}
		if err == nil || business != nil && business(err) {
			return true
		}
		return userSuccessful != nil && userSuccessful(err)
	}
	st.IsExcluded = r.excluded
	st.IsSuccessful = r.isSucc
	if hook := c.hook; hook != nil || userHook != nil || own != nil {
		st.OnStateChange = func(name string, from, to gobreaker.State) {
			if own != nil {
				own(name, from, to)
			}
			if userHook != nil {
				userHook(name, from, to)
			}
			if hook != nil {
				hook(name, from.String(), to.String())
			}
		}
	}
	return st
}

// rules returns the rules of one breaker, without correlation.
func (c config) rules() *rules {
	r := &rules{grace: c.grace}
	if c.conn != nil {
		r.conn = watch(c.conn)
	}
	return r
}

// New returns a circuit breaker for Middleware, with this package's
// defaults unless WithSettings says otherwise. Its settings exclude the
// caller's cancellation and transport faults (gobreaker's IsExcluded:
// neither success nor failure, see WithConn), and count business errors as
// successes, so a breaker opens only for an instance that fails, not for
// callers that give up, a connection that dropped, or requests that are
// refused on their merits. A bad option panics (see FactoryOption).
func New(name string, opts ...Option) *gobreaker.CircuitBreaker[any] {
	c := newConfig()
	for _, o := range opts {
		if o != nil {
			must(o.applyNew(&c))
		}
	}
	c.settings = withDefaults(c.settings)
	return gobreaker.NewCircuitBreaker[any](c.settingsFor(name, c.rules(), nil))
}

// must panics with a refused option's error: New and Factory keep go-kit's
// shape, which has no error to return.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// RejectedError is returned when the breaker refuses a request: it is open,
// or half-open with its probes in flight. The request never left, so it is
// Retryable — the retry middleware moves on to another instance, and,
// seeing Rejected, takes nothing from its budget — and it matches
// gobreaker.ErrOpenState or ErrTooManyRequests under errors.Is. Middleware
// outside this package find its methods through errors.As with
// interface{ Retryable() bool }, interface{ Rejected() bool } and
// interface{ ErrorType() string }, without importing this package or
// gobreaker.
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

// Rejected reports true: the request was refused at the client, before it
// was sent, so retrying it adds no load to any instance.
func (e *RejectedError) Rejected() bool { return true }

// ErrorType is the error.type tracing records: circuit_open, or
// too_many_requests for a half-open breaker whose probes are all out.
func (e *RejectedError) ErrorType() string {
	if e.Err == gobreaker.ErrTooManyRequests {
		return "too_many_requests"
	}
	return "circuit_open"
}

// Middleware guards the next endpoint with cb, as go-kit's
// circuitbreaker.Gobreaker does, but for gobreaker v2 and with two fixes:
//
//   - a request the caller canceled is not counted against the instance
//     (with a cb built by New or Factory; a cb built elsewhere counts it
//     unless its own IsExcluded says otherwise), while a request that ran
//     out of time is a failure: a hung instance must trip its breaker;
//   - refusals come back as *RejectedError, which the retry middleware
//     retries on another instance.
//
// With a cb built by New or Factory, the rules of WithConn and
// WithCorrelation apply too. A cb built elsewhere sees failures wrapped in a
// type of this package; errors.Is and errors.As reach the endpoint's error.
// The endpoint's own error is what the caller gets.
func Middleware(cb *gobreaker.CircuitBreaker[any]) endpoint.Middleware {
	open := &RejectedError{Name: cb.Name(), Err: gobreaker.ErrOpenState}
	tooMany := &RejectedError{Name: cb.Name(), Err: gobreaker.ErrTooManyRequests}
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, request any) (any, error) {
			resp, err := cb.Execute(func() (any, error) {
				epoch := transportEpoch.Load()
				resp, err := next(ctx, request)
				if err != nil {
					return resp, &failure{err: err, epoch: epoch, canceled: errors.Is(ctx.Err(), context.Canceled)}
				}
				return resp, nil
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
			if f, ok := err.(*failure); ok {
				err = f.err
			}
			return resp, err
		}
	}
}

// closer is the io.Closer Factory returns for an instance. Its Available
// method (lb.Available's) lets balancers pass over an instance whose breaker
// is open, until the breaker's Timeout lets a half-open probe through.
type closer struct {
	cb        *gobreaker.CircuitBreaker[any]
	timeout   time.Duration
	openUntil atomic.Int64 // unix nanoseconds; 0 while not open
	inner     io.Closer
	corr      *detector
	slot      *slot
	once      sync.Once
	err       error
}

var (
	_ interface{ Available() bool } = (*closer)(nil)
	_ io.Closer                     = (*closer)(nil)
)

// Available reports whether the instance's breaker lets requests through:
// closed, half-open, or open with its Timeout passed (the next request is
// the half-open probe).
// It is lock-free: balancers may ask on every pick.
func (c *closer) Available() bool {
	until := c.openUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// stateChanged keeps Available in step with the breaker, under its lock.
func (c *closer) stateChanged(_ string, _, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		c.openUntil.Store(time.Now().Add(c.timeout).UnixNano())
	} else {
		c.openUntil.Store(0)
	}
	if c.slot != nil {
		c.slot.open.Store(to == gobreaker.StateOpen)
	}
}

// Close takes the instance out of the correlation rule's count and closes
// the closer of the wrapped factory, once.
func (c *closer) Close() error {
	c.once.Do(func() {
		if c.corr != nil {
			c.corr.remove(c.slot)
		}
		if c.inner != nil {
			c.err = c.inner.Close()
		}
	})
	return c.err
}

// Factory wraps f so that every instance gets its own breaker, named after
// the instance: an instance that keeps failing is ejected (its breaker
// opens, its io.Closer reports Available() false, and lb's balancers pick
// elsewhere) and, once the breaker's Timeout passes, probed with
// MaxRequests half-open requests before it takes full traffic again. This
// is outlier ejection at the client, as Envoy does it. The options are
// New's and WithCorrelation, with this package's defaults unless
// WithSettings says otherwise. A bad option panics (see FactoryOption).
//
// Only failures that are the instance's own count. Besides New's rules, the
// breakers of one Factory share a correlation rule (WithCorrelation): when
// most instances fail the same way at once, none of them is blamed. Pass
// WithConn so that the outages of the client's NATS connection are not
// blamed either.
func Factory(f sd.Factory, opts ...FactoryOption) sd.Factory {
	c := newConfig()
	for _, o := range opts {
		if o != nil {
			must(o.applyFactory(&c))
		}
	}
	c.settings = withDefaults(c.settings)
	corr := newDetector(c.share, c.window)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, inner, err := f(instance)
		if err != nil {
			return nil, nil, err
		}
		cl := &closer{inner: inner, timeout: c.settings.Timeout, corr: corr}
		r := c.rules()
		if corr != nil {
			cl.slot = corr.add()
			r.corr, r.slot = corr, cl.slot
		}
		cl.cb = gobreaker.NewCircuitBreaker[any](c.settingsFor(instance, r, cl.stateChanged))
		return Middleware(cl.cb)(e), cl, nil
	}
}

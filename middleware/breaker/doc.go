// Package breaker stops calls to an instance that keeps failing and probes it
// until it recovers, with sony/gobreaker v2.
//
// Middleware is an endpoint.Middleware over a gobreaker.CircuitBreaker, like
// go-kit's circuitbreaker.Gobreaker but for gobreaker v2. Breakers built by
// New do not count a caller's cancellation against the instance (gobreaker's
// IsExcluded) and, by default, count business errors — answers the server
// gave on purpose, see IsBusinessError — as successes, so only an instance
// that fails trips its breaker. Refusals come back as *RejectedError, which
// matches gobreaker.ErrOpenState or ErrTooManyRequests under errors.Is and is
// Retryable, so the retry middleware moves on to another instance.
//
// Factory wraps an sd.Factory so that every instance gets its own breaker:
// client-side outlier ejection. The io.Closer it returns, a *Closer,
// implements lb.Available — not available while the breaker is open — so the
// balancers of package lb pass over an ejected instance while any other can
// take the request. After the breaker's Timeout the instance is available
// again, half-open, and MaxRequests successful probes close its breaker.
// WithStateChange reports every transition with the instance's name (the
// tracing package's BreakerStateHook turns them into metrics).
package breaker

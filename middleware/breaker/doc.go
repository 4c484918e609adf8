// Package breaker stops calls to an instance that keeps failing and probes it
// until it recovers, with sony/gobreaker v2.
//
// Middleware is an endpoint.Middleware over a gobreaker.CircuitBreaker, like
// go-kit's circuitbreaker.Gobreaker but for gobreaker v2. Refusals come back
// as *RejectedError, which matches gobreaker.ErrOpenState or
// ErrTooManyRequests under errors.Is and is Retryable, so the retry
// middleware moves on to another instance without importing gobreaker.
//
// Factory wraps an sd.Factory so that every instance gets its own breaker:
// client-side outlier ejection. The io.Closer it returns, a *Closer,
// implements lb.Available — not available while the breaker is open — so the
// balancers of package lb pass over an ejected instance while any other can
// take the request. After the breaker's Timeout the instance is available
// again, half-open, and MaxRequests successful probes close its breaker.
// WithStateChange reports every transition with the instance's name (the
// tracing package's BreakerStateHook turns them into metrics).
//
// # Blaming the right thing
//
// A breaker ejects an instance for the instance's own faults. The breakers
// built by New and Factory count neither success nor failure (gobreaker's
// IsExcluded) for:
//
//   - a call the caller canceled;
//   - an error that by itself proves a fault of the client's connection
//     (IsTransportError: closed, disconnected, reconnecting, draining);
//   - with WithConn, any failure while the client's NATS connection is not
//     connected, of a call that was in flight when the connection went down
//     or came back, or within the reconnect grace after it came back
//     (WithReconnectGrace, default 3 s) — the instances' connections may
//     come back after the client's, up to nats.go's reconnect wait later;
//   - with Factory, correlated failures (WithCorrelation): when, within a
//     second, at least three quarters of the instances not ejected — and at
//     least two — fail the same way (time out, find no responders, answer
//     with an error status), the fault is what they have in common — the
//     client, the network, a dependency they share — and ejecting them
//     would leave nothing to call. The first failures of such a fault count
//     until enough instances have failed; one failing instance, or two of
//     three, still trip.
//
// Business errors (IsBusinessError: answers the server gave on purpose) count
// as successes. Timeouts of a connected client count as failures: a hung
// instance must trip its breaker.
//
// Without WithConn a NATS outage looks like every instance timing out at once,
// which the correlation rule catches, but the instances' staggered return
// after it does not: pass the client's connection.
//
// The rules cost a call that succeeds one atomic load; they run on failures
// only, without locks.
//
// # Defaults
//
// gobreaker's defaults (counts never cleared, trip after six consecutive
// failures, one minute open) suit a remote dependency called now and then;
// for RPC over NATS a two-second outage would become a minute of refusals.
// New and Factory use DefaultSettings for every field WithSettings leaves
// zero:
//
//   - trip (DefaultReadyToTrip) after 6 consecutive failures, gobreaker's own
//     count, or when at least half of at least 10 counted calls failed;
//   - counts over a rolling window of 10 s, in buckets of 1 s;
//   - open for 5 s, then half-open: 3 probes pass, 3 successes in a row
//     close the breaker, a failure opens it again.
package breaker

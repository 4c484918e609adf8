// Package breaker stops calls to an instance that keeps failing and probes it
// until it recovers, with sony/gobreaker v2.
//
// Factory wraps an sd.Factory so that every instance gets its own breaker:
// client-side outlier ejection. The io.Closer it returns reports
// Available() false while the breaker is open, so lb's balancers pass over
// the instance while any other can take the request; after the breaker's
// Timeout it is probed again. Middleware is an endpoint.Middleware over one
// gobreaker.CircuitBreaker built by New, like go-kit's
// circuitbreaker.Gobreaker but for gobreaker v2:
//
//	factory := breaker.Factory(natsrpc.Factory(nc, "echo", "say", enc, dec), breaker.WithConn(nc))
//	set := lb.NewEndpointSet(instancer, factory, logger)
//
// Refusals come back as *RejectedError, which is Retryable, so the retry
// middleware moves on to another instance. WithStateChange reports every
// transition with the instance's name (the tracing package's
// BreakerStateHook turns them into metrics).
//
// A breaker ejects an instance for the instance's own faults only. Neither
// success nor failure are: a call the caller canceled; an error that proves
// a fault of the client's connection (closed, disconnected, draining); with
// WithConn, any failure while the client's NATS connection is down or
// within a grace after it came back (WithReconnectGrace, 3 s); with
// Factory, failures shared by most instances at once (WithCorrelation: at
// least three quarters of them, and two, within a second), whose fault is
// what they have in common. Business errors (IsBusinessError) count as
// successes; timeouts of a connected client count as failures. The rules
// cost a call that succeeds one atomic load.
//
// Defaults, for every field WithSettings leaves zero: trip after 6
// consecutive failures, or when at least half of at least 10 counted calls
// failed; counts over a rolling window of 10 s in buckets of 1 s; open for
// 5 s, then half-open: 3 probes pass, 3 successes in a row close the
// breaker, a failure opens it again.
package breaker

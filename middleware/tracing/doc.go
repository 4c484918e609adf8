// Package tracing instruments go-kit endpoints with OpenTelemetry spans and
// metrics that follow the RPC semantic conventions: rpc.system.name "nats",
// rpc.method "{service}/{method}", span kinds CLIENT and SERVER, error.type
// on failure, and the rpc.client.call.duration and rpc.server.call.duration
// histograms.
//
// On the client, Client goes outermost, its span covering the whole call;
// Factory goes on every instance's endpoint beneath retry, so each attempt
// is a child span carrying the instance (kitnats.instance) and the attempt
// number (kitnats.attempt), and the server's span hangs under the attempt
// that reached it. RetryObserver counts attempts, retries and picks per
// instance (kitnats.rpc.client.attempts, kitnats.rpc.client.retries,
// kitnats.lb.picks) and adds a kitnats.attempt event per attempt to the
// call's span; BreakerStateHook counts circuit breaker state changes
// (kitnats.breaker.state_changes) and open breakers (kitnats.breaker.open):
//
//	tracing.Client ─► retry (RetryObserver) ─► balancer ─► tracing.Factory ─► breaker.Factory ─► transport
//
// On the server, Server starts a SERVER span as a child of the span context
// the transport extracted from the request.
//
// The package imports the OpenTelemetry API and go-kit only: it learns what
// it records from the errors and contexts it meets — an error's ErrorType()
// string, retry's attempt number — not from the packages that made them.
// Spans and metrics go to the global providers unless WithTracerProvider
// and WithMeterProvider say otherwise; with no SDK installed they cost next
// to nothing.
package tracing

// Package retry makes calls survive the failure of an instance by trying
// another one.
//
// New builds an endpoint over an lb.Balancer. Every attempt asks the
// balancer for an instance not tried yet (lb.Balancer's Pick with the tried
// list), so a call that met a dead instance moves to a live one at once;
// when only tried instances remain, or none at all, it backs off with
// exponential backoff and full jitter, interrupted by the caller's context.
// Attempts run within the caller's deadline, never beyond it, each one
// optionally bounded by its own timeout, and the endpoint stops early when
// the deadline cannot fit another attempt. A Budget caps retries at a
// fraction of calls over a sliding window, as Finagle and Envoy do, so that
// retries cannot multiply the load on a failing service.
//
// What is retried is a Classifier's call. DefaultClassifier retries only
// what proves the request was not processed — errors whose Retryable()
// method says so (the natsrpc transport's no-responders, closed-connection
// and draining errors), nats.ErrNoResponders, open circuit breakers, and
// lb.ErrNoInstances after a backoff — never business errors, and attempt
// timeouts only for calls declared idempotent (WithIdempotent, Idempotent).
//
// When retrying gives up, the *Error returned unwraps to every attempt's
// error, so errors.Is and errors.As reach each of them. The caller's own
// cancellation comes back as ctx.Err(), as is.
//
// An Observer sees every attempt (for metrics: the tracing package's
// RetryObserver), and AttemptFromContext tells the middleware beneath retry
// which attempt and instance it serves (the tracing package's Attempt spans).
//
// go-kit's sd/lb.Retry, which this replaces, retries at once on whatever the
// balancer returns, spinning on an empty set, and cannot avoid the instance
// that just failed.
package retry

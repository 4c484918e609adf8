// Package retry makes calls survive the failure of an instance by trying
// another one.
//
// New builds an endpoint over an lb.Balancer:
//
//	call, err := retry.New(lb.New(set, lb.LeastLoaded()),
//		retry.WithMaxAttempts(3), retry.WithAttemptTimeout(500*time.Millisecond))
//
// Every attempt asks the balancer for an instance not tried yet (lb.Balancer's
// Pick with the tried list), so a call that met a dead instance moves to a
// live one at once; when only tried instances remain, or none at all, it
// backs off with exponential backoff and full jitter, interrupted by the
// caller's context. Attempts run within the caller's deadline, never beyond
// it, each one optionally bounded by its own timeout, and the endpoint stops
// early when the deadline cannot fit another attempt. A Budget caps retries
// at a fraction of calls over a sliding window, as Finagle and Envoy do, so
// that retries cannot multiply the load on a failing service.
//
// What is retried is the classifier's call (DefaultClassifier, or
// WithClassifier). By default only what proves the request was not
// processed is retried — errors whose Retryable() method says so, no
// responders, open circuit breakers, refused connections — never business
// errors, and timeouts only for calls declared idempotent (WithIdempotent,
// Idempotent). Attempts that cost no instance anything — refused by an open
// breaker or by lb for an instance it holds gone, or finding no responders
// on an instance's own subject — count against neither WithMaxAttempts nor
// the budget, so dead instances offered first cannot starve a call.
//
// When retrying gives up, the *Error returned unwraps to every attempt's
// error, so errors.Is and errors.As reach each of them. The caller's own
// cancellation comes back as ctx.Err(), as is.
//
// WithObserver sees every attempt (the tracing package's RetryObserver
// counts them), and AttemptFromContext tells the middleware beneath retry
// which attempt and instance it serves.
package retry

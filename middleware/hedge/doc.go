// Package hedge cuts tail latency with hedged (backup) requests: when an
// instance has not answered a call after a delay, the same request goes to
// a second instance, and the first success is the call's answer. The
// slowest few percent of calls — a garbage-collecting instance, a full
// socket buffer, an instance that crashed with the request in flight —
// then take about the delay plus a normal call, instead of their own
// latency or a whole timeout (Dean and Barroso's "The Tail at Scale").
//
// New decorates an lb.Balancer, beneath retry:
//
//	tracing.Client ─► retry ─► hedge ─► balancer ─► tracing.Factory ─► breaker.Factory ─► natsrpc
//
//	balancer, _ := hedge.New(lb.New(set, lb.LeastLoaded()), hedge.WithMethod("greeter", "hello"))
//	call, _ := retry.New(balancer, retry.WithIdempotent(), retry.WithAttemptTimeout(500*time.Millisecond))
//
// The backup is picked from the balancer beneath, passing over the first
// instance and whatever retry has tried, so it follows the same policy and
// skips open breakers. The hedged pair is one retry attempt: when both
// sides fail, retry moves on as it would for one. The backup's context
// answers retry.AttemptFromContext with the backup's instance, and
// IsBackup.
//
// Only calls marked idempotent are hedged — retry.Idempotent(ctx) for one
// call, retry.WithIdempotent for every call of a retry endpoint — since a
// backup may be processed as well as the first request. The first success
// wins; the other attempt's context is cancelled with ErrLost as its cause,
// which the breaker package does not count against the instance. Endpoints
// must honour their context.
//
// The delay is fixed (WithDelay) or, by default, the 95th percentile of the
// latencies of recent first attempts (WithQuantile), never below 1 ms, and
// 10 ms until 64 latencies have been seen. A Budget bounds the backups to a
// tenth of the calls plus a burst of 10 (WithBudget), so hedging cannot
// multiply the load on a service that is slow because it is overloaded; a
// call the budget refused asks again after twice the wait, and again.
//
// The counters kitnats.hedge.sent, kitnats.hedge.won and
// kitnats.hedge.budget_exhausted go through OpenTelemetry's metric API
// (WithMeterProvider, WithMethod); Balancer.Stats has the same counts.
package hedge

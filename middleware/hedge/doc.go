// Package hedge cuts tail latency with hedged (backup) requests: when an
// instance has not answered a call after a delay, the same request goes to
// a second instance, and the first success is the call's answer. The
// slowest few percent of calls — a garbage-collecting instance, a full
// socket buffer, an instance that crashed with the request in flight and
// will never answer — then take about the delay plus a normal call, instead
// of their own latency or a whole timeout. This is Finagle's backup-request
// filter, Envoy's hedging on per-try timeout and gRPC's hedging policy,
// after Dean and Barroso's "The Tail at Scale".
//
// # Where it sits
//
// New decorates an lb.Balancer, and retry goes over it:
//
//	tracing.Client ─► retry ─► hedge ─► balancer ─► tracing.Factory ─► breaker.Factory ─► natsrpc
//
//	balancer, _ := hedge.New(lb.NewLeastLoaded(set), hedge.WithMethod("greeter", "hello"))
//	call, _ := retry.New(balancer, retry.WithIdempotent(), retry.WithAttemptTimeout(500*time.Millisecond))
//
// A balancer decorator rather than an endpoint.Middleware, because a backup
// request must go to a different instance, and only the balancer's Pick
// knows instances: the backup is picked from the balancer beneath with the
// first instance (and whatever retry has tried) passed over, so it follows
// the same policy, skips open breakers the same way, and never lands on the
// instance it is meant to back up. Each attempt runs through its own
// instance's endpoint — its breaker, its span (tracing.Factory), its
// in-flight count in the least-loaded balancer. And beneath retry rather
// than over it, because the two answer different failures: retry reacts to
// an attempt that failed, hedging to one that is merely slow (or silent);
// the hedged pair is one retry attempt, within retry's per-attempt timeout
// and budget, and when both sides fail retry moves on as it would for one.
// The backup's context answers retry.AttemptFromContext with the backup's
// instance, so its span is labelled with the instance it went to; IsBackup
// tells middleware that the request is a backup.
//
// # What is hedged
//
// Only calls whose context is marked idempotent — the mark the retry
// package uses: retry.Idempotent(ctx) for one call, retry.WithIdempotent for
// every call of a retry endpoint (which marks the context it passes down).
// A backup request may be processed as well as the first one, so a call
// that must not run twice is never hedged; Endpoint, which has no context,
// never hedges either. Pick decides, and allocates only for the calls it
// hedges.
//
// # The race
//
// The first attempt runs on the caller's goroutine, so a call that is not
// hedged costs a timer and a context, not a goroutine. When the delay
// passes first, the backup is picked and, if the budget allows, sent from
// the timer's goroutine. The first success wins and the other attempt's
// context is cancelled, with ErrLost as its cause: the natsrpc client stops
// waiting for the reply at once, its span ends with error.type "canceled",
// and the breaker package does not count the cancellation against the
// instance. NATS request-reply has no cancel message, so the server's
// handler sees its context end at the deadline the request carried (the
// Kitnats-Timeout header), not at once. When the first attempt to finish
// fails while the other is still running, the call waits for the other;
// when both fail, it returns an *Error that unwraps to both errors. A first
// attempt that fails before the delay is not hedged: that is retry's job.
//
// The endpoints must honour their context: when the backup wins, the call
// returns once the first attempt, cancelled, has returned. (A losing backup
// is not waited for.)
//
// # The delay
//
// Fixed (WithDelay), or by default a quantile of the latencies of recent
// first attempts (WithQuantile; p95 of the last 1,024 that succeeded), never
// below a floor (1 ms by default, so that a sub-millisecond service is not
// hedged on scheduler noise), and a fixed initial delay until 64 latencies
// have been seen. The ring of latencies is lock-free; the quantile is
// recomputed once in 32 calls, off any lock, and read with one atomic load.
// One Balancer serves one method, so the delay is per method. Attempts that
// lost the race are not recorded: their latency is unknown, and recording
// the time they had taken when cancelled — about the delay — would drag the
// delay up after itself while an instance is silent.
//
// # The budget
//
// A Budget bounds the backup requests to a fraction of calls, 10 % plus a
// burst of 10 by default (WithBudget), so that hedging cannot multiply the
// load on a service that is slow because it is overloaded: delay at p95 and
// budget at 10 % leave room for a failing instance's share. It is a token
// bucket counted in calls, not time — backups ≤ burst + ratio × calls,
// exactly — unlike the retry package's time-windowed Budget: the bound a
// report promises is the bound that holds, and tests can count it.
//
// A call the budget refuses a backup asks again after twice the wait, then
// four times… (at d, 3d, 7d… from its start), while other calls fill the
// budget. Without that, a spell
// of slowness that empties the budget — a stalled machine makes every call
// pass the delay at once — would leave the calls in flight to an instance
// that crashes just then to wait out their whole timeout; with it, the
// budget goes to the calls that have waited longest, which are the likeliest
// to be stuck for good.
//
// # Metrics
//
// Counters through the OpenTelemetry metric API (SentMetric, WonMetric,
// BudgetExhaustedMetric; WithMeterProvider, WithMethod), and the same counts
// from Stats for reports.
//
// # Costs and limits
//
// A call that may be hedged costs about a microsecond and six allocations
// more than one that may not (the pick's endpoint, the race's state, a
// context and a timer: BenchmarkOverhead); a call not marked idempotent
// costs one context lookup.
// Retry learns only the first attempt's instance of a hedged pair: when both
// sides fail, its next attempt passes over the first instance but not
// necessarily the backup's.
package hedge

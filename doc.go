// Package kitnats is client-side service discovery, load balancing and
// resilient RPC over NATS, built as a go-kit plugin.
//
// Instances register in a NATS JetStream KV bucket; clients watch the bucket
// and hold an always-current set of healthy instances in memory, so the call
// path never queries the registry. go-kit endpoints are built per instance,
// picked by a balancer that knows which instance it picks, and wrapped in
// retry, per-instance circuit breakers and OpenTelemetry tracing:
//
//	tracing ─► retry ─► [pick] ─► breaker(per instance) ─► natsrpc client ─► NATS
//
// One package per concern:
//
//   - [github.com/aegis-sdk/kitnats/sd/natskv]: the registry — Registrar
//     (register, heartbeat, TTL lease, deregister) and Instancer (a go-kit
//     sd.Instancer over a KV watch, or polling with a TTL cache).
//   - [github.com/aegis-sdk/kitnats/lb]: an instance-aware endpoint set and
//     balancers (round robin, random, sticky, least-loaded), all go-kit
//     lb.Balancers, and the policy seam to write your own;
//     [github.com/aegis-sdk/kitnats/lb/weighted] is one, by weights the
//     instances register.
//   - [github.com/aegis-sdk/kitnats/middleware/retry],
//     [github.com/aegis-sdk/kitnats/middleware/hedge],
//     [github.com/aegis-sdk/kitnats/middleware/breaker],
//     [github.com/aegis-sdk/kitnats/middleware/tracing]: endpoint middleware.
//   - [github.com/aegis-sdk/kitnats/transport/natsrpc]: go-kit client and
//     server over NATS request-reply with deadlines, trace context and error
//     status in headers.
//
// The pieces need no glue: an lb.EndpointSet over a natskv.Instancer learns
// from it which instances are STANDBY and what metadata they registered
// (natskv's Instancer is an lb.Describer), so the registry and the
// balancers meet in one call, lb.NewEndpointSet(instancer, factory, logger).
// This package holds no code: only this overview, the runnable Example of
// the whole wiring, and the tests and benchmark of the whole chain.
//
// examples/quickstart shows the whole job on an embedded NATS server:
// `make demo`.
package kitnats

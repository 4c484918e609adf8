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
//     lb.Balancers.
//   - [github.com/aegis-sdk/kitnats/middleware/retry],
//     [github.com/aegis-sdk/kitnats/middleware/breaker],
//     [github.com/aegis-sdk/kitnats/middleware/tracing]: endpoint middleware.
//   - [github.com/aegis-sdk/kitnats/transport/natsrpc]: go-kit client and
//     server over NATS request-reply with deadlines, trace context and error
//     status in headers.
//
// This package itself is the glue for the common case where registry and
// balancers are both kitnats': [NewEndpointSet] builds an lb.EndpointSet over
// a natskv.Instancer that tells balancers which instances are STANDBY.
//
// examples/quickstart shows the whole job on an embedded NATS server:
// `make demo`.
package kitnats

// Package natsrpc is a go-kit transport over NATS request-reply that carries
// what a production RPC needs and go-kit's own transport/nats drops: request
// headers, the caller's deadline, W3C trace context, and typed error status.
//
// # Subjects
//
// A Service answers every method on two subjects:
//
//	rpc.{service}.{method}             queue group rpc.{service}: any instance (AegisSDK convention)
//	rpc.{service}.{method}.{instance}  no queue group: this instance only (client-side balancing)
//
// Factory builds a go-kit sd.Factory whose endpoints call the instance
// subject of each instance an sd.Instancer publishes; NewServiceClient calls
// the service-wide subject when there is no discovery, or as a fallback.
// Every name that becomes a subject token is validated first (ValidateService,
// ValidateMethod, ValidateInstance): nothing a caller passes can become a
// wildcard or an extra token. The rules, the limits (64 bytes for services
// and methods, 128 for instance IDs) and the error (*NameError, matching
// ErrInvalidName) are the registry's own, so every instance it accepts is
// callable.
//
// # Headers
//
//	Kitnats-Timeout          request: the caller's remaining time in whole milliseconds ("1500"),
//	                         relative so clock skew does not matter; the handler's context gets
//	                         deadline = receive time + value. Under 1 ms left, the client does not send.
//	traceparent, tracestate  request: W3C trace context, lower-case keys, written and read with an
//	                         OpenTelemetry propagator over HeaderCarrier (never via http.Header,
//	                         which would canonicalise the keys).
//	Nats-Service-Error       reply: error message (the NATS micro convention)
//	Nats-Service-Error-Code  reply: status code, three digits (400 undecodable request,
//	                         422 business error, 500 failure or panic, 503 not serving, 504 deadline)
//	Kitnats-Error-Kind       reply: "business" when the error came from endpoint.Failer
//
// Tracing here is propagation only; spans belong to tracing middleware.
//
// # Errors a client endpoint returns
//
//   - *CallError with ErrNoResponders (also nats.ErrNoResponders), ErrConnClosed or
//     ErrClientClosed: the request reached no handler, Retryable() is true.
//   - *CallError with context.DeadlineExceeded or context.Canceled: not retryable.
//   - *Error: the remote side's code and message; Business for endpoint.Failer
//     errors (errors.Is(err, ErrBusiness)); Retryable() only for 503; a 504
//     matches context.DeadlineExceeded.
//   - *PayloadError (ErrPayloadTooLarge): over the connection's max payload, not sent.
//
// Retry middleware finds Retryable through errors.As with
// interface{ Retryable() bool } without importing this package.
//
// # Server
//
// A Service is a NATS micro service (nats.go/micro): `nats micro ls|info|stats`
// see it, the instance ID is in its metadata (MetadataInstance), and each
// endpoint's stats data is an EndpointStats (errors, panics, malformed
// headers, refused requests: micro's own counters only see the hand-off to a
// worker). micro serves the instance subject with a per-endpoint disabled
// queue group (WithEndpointQueueGroupDisabled), and costs nothing measurable
// by itself: BenchmarkRequestReply's bare micro endpoint runs level with a
// plain subscription (micro vs raw-bytes), and a variant of this server on
// channel subscriptions without micro measured within noise of it.
//
// Requests run on at most ServiceMaxConcurrent workers (started on demand,
// reused, no goroutine per request), so a slow handler does not hold up the
// others; a panic becomes a 500 reply. micro's handler never waits for a
// worker: it stamps each request's arrival and deadline (the caller's
// Kitnats-Timeout, or ServiceDefaultTimeout for callers that send none) and
// the pool runs it, queues it, or refuses it at once with a retryable 503
// when the method's queue (ServiceMaxPending) is full or would outlast the
// deadline at the method's measured service time. A queued request whose
// deadline passes is dropped unrun (EndpointStats.Expired). Each method
// keeps a reserve of the workers (a quarter of the pool shared equally, at
// least one each) that no other method can take, so one flooded method
// cannot starve its siblings.
//
// Shutdown unsubscribes the queue group first, so the NATS server routes
// new requests to other instances at once, serves every request already
// delivered, and returns when they are replied.
package natsrpc

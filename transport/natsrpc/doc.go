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
//	                         relative so clock skew does not matter; the request's deadline is
//	                         arrival time + value, ServiceDefaultTimeout after arrival without
//	                         it. Under 1 ms left, the client does not send.
//	traceparent, tracestate  request: W3C trace context, lower-case keys, written and read with an
//	                         OpenTelemetry propagator over HeaderCarrier (never via http.Header,
//	                         which would canonicalise the keys).
//	Nats-Service-Error       reply: error message (the NATS micro convention)
//	Nats-Service-Error-Code  reply: status code, three digits (400 undecodable request,
//	                         422 business error, 500 failure or panic, 503 not served: shutting
//	                         down or overloaded, retry elsewhere; 504 deadline)
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
//   - *CallError with a *natserr.PermissionError (ErrPermission): the server refused the
//     request's subject or the reply's inbox for lack of a permission, not retryable
//     (found until a call of the client has had a reply, at once rather than at the
//     deadline).
//   - *EnvelopeError (errors.Is(err, ErrRemote)): an AegisSDK envelope reply with
//     success false and its message, not retryable; or a standby's NOT_ACTIVE answer
//     (errors.Is(err, ErrNotActive)), Retryable.
//
// A reply that cannot be decoded is a *CallError (and ErrMalformedEnvelope for
// an envelope), never a success.
//
// Retry middleware finds Retryable through errors.As with
// interface{ Retryable() bool } without importing this package.
//
// # AegisSDK and go-kit peers
//
// A Service tells its callers apart per request. With Kitnats-Timeout, the
// headers protocol above. Without it, a request whose body is an AegisSDK
// envelope (a JSON object or msgpack map, told by the first byte, with
// message_id and method among its keys; see RequestEnvelope for the format) is
// answered in an envelope of its format: the handler's decoder gets the
// params as JSON, the envelope's timeout is the deadline, the encoder's JSON
// becomes the result, and every failure — business error, panic, params or
// an envelope that do not decode — is success false with the message (a
// 503, "NOT_ACTIVE: …", which AegisSDK clients retry elsewhere). Any other
// request without the header (go-kit's transport/nats Publisher, nats req)
// is served as usual under ServiceDefaultTimeout, and its error replies
// carry go-kit's body {"err": "…"} beside the status headers.
//
// A client speaks envelopes with ClientEnvelope. Factory with
// ClientMetadata calls kitnats instances (registry metadata MetadataRPC =
// RPCInstance) on their instance subjects and the others on the
// service-wide subject in envelopes. DecodeJSONResponse reads go-kit's error
// body, and has go-kit's DecodeResponseFunc type, as EncodeJSONRequest has
// its EncodeRequestFunc type.
//
// # Server
//
// A Service answers NATS micro discovery ($SRV PING, INFO, STATS, in
// nats.go/micro's types): `nats micro ls|info|stats` see it as a micro
// service whose endpoints are its subjects, the instance ID is in its
// metadata (MetadataInstance), and each endpoint's stats data is an
// EndpointStats (errors, panics, malformed headers, requests refused,
// expired, or dropped by a full buffer). It does not run on micro's
// endpoints, which deliver every request through a goroutine of micro's:
// both subjects of a method deliver into one channel (nats.go's channel
// subscriptions, filled by the connection's read loop), and the method's
// reader takes requests from it and runs them inline, back to back, as a
// plain nats.go subscription does, so requests that arrive together leave
// with their replies in one write and none is handed between goroutines. A
// watchdog looks every millisecond: a channel holding requests while its
// readers are all busy in handlers gets another reader, so a request waits
// behind a slow one for two ticks at most.
//
// Admission. A reader stamps each request's arrival and deadline (the
// caller's Kitnats-Timeout, or ServiceDefaultTimeout for callers that send
// none, such as go-kit's transport/nats; the handler's context ends there)
// and the pool runs it, queues it, or refuses it at once with a retryable
// 503: when the method's queue (ServiceMaxPending) is full, or when, at the
// method's measured service time, the queue ahead of it and its own
// service would outlast its deadline. So the caller retries elsewhere while
// it still has time, and a client-side balancer learns. A request whose
// deadline passes before it can start is dropped unrun and counted
// (EndpointStats.Expired): one with the caller's deadline gets no reply
// (the caller has gone), one with the default deadline a 504.
//
// Isolation. Requests run on at most ServiceMaxConcurrent workers at once,
// over all methods. Each method keeps a reserve of them that no other
// method can take (a quarter of the pool shared equally, at least one per
// method; none when the pool has fewer workers than methods): a method
// starts a request when it holds fewer workers than its reserve, or when a
// worker is free beyond the reserves the other methods are not using. A
// flooded method therefore takes at most the pool less the others'
// reserves, and a sibling always starts its reserve's worth at once. A
// worker freed goes to its own method if that fell under its reserve,
// otherwise round robin to the methods with requests waiting.
//
// Memory. Per method, the server holds at most its channel (256 messages,
// or as many of the largest the NATS server accepts as fit in 64 MiB, up
// to 4096; beyond it nats.go drops and counts), its queue
// (ServiceMaxPending), and the requests running (ServiceMaxConcurrent in
// all); goroutines are the running handlers plus an idle reader per method
// and the watchdog. A panic becomes a 500 reply.
//
// Shutdown unsubscribes the queue group first, so the NATS server routes
// new requests to other instances at once, serves every request already
// delivered, and returns when they are replied.
//
// Replies. A caller chooses the subject a reply goes to. A request whose
// reply subject starts with '$' — reserved to NATS's own APIs: $JS, $KV,
// $O, $SRV, $SYS — is neither run nor answered (EndpointStats.Rejected),
// and neither is such a $SRV discovery request: no inbox starts with '$',
// and a reply there would be a write chosen by the caller, made with the
// service's permissions (on a connection that may write the instance's
// registry key, over its record). Package permissions has the NATS
// permissions a Service needs; NewService fails with a *PermissionError
// when the server refuses one of its subscriptions.
package natsrpc

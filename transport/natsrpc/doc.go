// Package natsrpc is a go-kit transport over NATS request-reply that
// carries what go-kit's transport/nats drops: the caller's deadline, W3C
// trace context and typed error status, in NATS headers.
//
// A Service serves the methods of one service instance, each a Server
// (go-kit's endpoint, decoder and encoder), on two subjects (package wire
// spells them): rpc.{service}.{method} in queue group rpc.{service}, which
// any instance answers, and rpc.{service}.{method}.{instance}, which only
// this one does. It bounds concurrency with a reserve per method, refuses
// with a retryable 503 what would outlast its deadline, answers NATS micro
// discovery, replies only to inboxes, and drains on Shutdown.
//
// A Client calls one subject. Factory turns the instances a go-kit
// sd.Instancer publishes into endpoints on their instance subjects, for
// go-kit's sd.NewEndpointer and balancers:
//
//	factory := natsrpc.JSONFactory[HelloReply](nc, "greeter", "hello")
//	endpointer := sd.NewEndpointer(instancer, factory, logger)
//
// A failed call's error says what happened: *CallError (no reply: no
// responders, a closed connection, the deadline, a refused permission),
// *Error (the remote side's status; Business for endpoint.Failer errors),
// *PayloadError, or *EnvelopeError. Each answers Retryable() for retry
// middleware, and the sentinels match with errors.Is.
//
// A Service also answers AegisSDK envelopes (JSON or msgpack) and go-kit's
// transport/nats callers, each in its own protocol. WithEnvelope makes a
// Client speak envelopes to AegisSDK services; WithRegistryMetadata lets
// Factory choose per instance.
//
// Options are WithX functions: a ClientOption, ServerOption or
// ServiceOption configures one constructor, an Option a Client and a
// Service alike, a HookOption a Client and a Server. A bad value is an
// error matching ErrInvalidOption, or a panic from the constructors that
// return no error. Every byte from the network is read in time linear in
// its size, with bounded nesting and bounded error text.
package natsrpc

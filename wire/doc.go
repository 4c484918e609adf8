// Package wire is kitnats' wire contract: the names, subjects and registry
// metadata keys that the registry (sd/natskv), the transport
// (transport/natsrpc), the permission templates and the kitnats command all
// spell the same way. It has no dependencies, so anything may import it.
//
// Every name becomes a single NATS subject token, so the name rules exclude
// '.', '*', '>', white space and anything outside ASCII letters, digits, '_'
// and '-'; a name that passes can be registered, discovered and called, and
// one that does not is refused with a *NameError before anything is sent.
//
//	subj, err := wire.InstanceSubject("greeter", "hello", "greeter-1")
//	// "rpc.greeter.hello.greeter-1"
package wire

// Package lb balances requests over the instances of a service while keeping
// track of which instance each request goes to.
//
// go-kit's sd.Endpointer hands a balancer bare endpoints, so a go-kit
// balancer cannot tell a retry which instance it just tried, cannot keep a
// user on the same instance, and cannot skip an instance whose circuit
// breaker is open. This package keeps instance identity from discovery to
// pick:
//
//   - EndpointSet subscribes to any go-kit sd.Instancer (kitnats' natskv
//     Instancer, or consul, etcd, DNS SRV...) and builds one endpoint per
//     instance with an sd.Factory. It is also a go-kit sd.Endpointer. On every
//     membership change it publishes an immutable snapshot, as grpc-go's
//     balancers publish pickers, so picks take no lock and allocate nothing.
//   - RoundRobin, Random, Sticky (consistent hashing on a key from the
//     request context) and LeastLoaded (power of two choices over requests in
//     flight) pick from a set. Each is a go-kit lb.Balancer through Endpoint,
//     and a Balancer through Pick, which returns the instance with its
//     endpoint and passes over the instances a retry has already tried.
//
// All balancers share three rules: an instance whose factory-returned closer
// reports Available() == false (an open per-instance breaker) is not picked
// while another is available; tried instances are passed over while an
// untried available one remains; ACTIVE instances are preferred over STANDBY
// ones (Attributes, from WithAttributes).
//
// Wiring, with kitnats' registry, transport and middleware (error handling
// left out):
//
//	instancer, _ := natskv.NewInstancer(bucket, "echo", logger)
//	factory := breaker.Factory(natsrpc.Factory(nc, "echo", "say", enc, dec))
//	set := lb.NewEndpointSet(instancer, factory, logger,
//		lb.WithAttributes(func(s string) lb.Attributes {
//			in, _ := instancer.Lookup(s)
//			return lb.Attributes{Standby: in.Status == "STANDBY"}
//		}))
//	defer set.Close()
//	call, _ := retry.New(lb.NewLeastLoaded(set), retry.WithMaxAttempts(3))
//
// kitnats.NewEndpointSet (the module's root package) is that NewEndpointSet
// call with the attributes wired in.
package lb

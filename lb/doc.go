// Package lb balances requests over the instances of a service while keeping
// track of which instance each request goes to, and is the place to plug in
// a balancing policy of your own.
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
//     change it publishes an immutable View of its instances. An instancer
//     that implements Describer (natskv's does) tells it which instances are
//     STANDBY and what metadata they registered; WithAttributes overrides it.
//   - A Policy turns each View into a Picker, once per view, as grpc-go's
//     balancer/base turns ready SubConns into a picker. PolicyBalancer runs a
//     policy over a set: it rebuilds its picker as soon as the set publishes
//     a view, and picks with one atomic load, no lock and no allocation. It
//     is a go-kit lb.Balancer through Endpoint, and a Balancer through Pick,
//     which returns the instance with its endpoint and passes over the
//     instances a retry has already tried.
//   - RoundRobinPolicy, RandomPolicy, LeastLoadedPolicy (power of two
//     choices over requests in flight) and StickyPolicy (consistent hashing
//     on a key from the request context) are the policies this package
//     provides; NewRoundRobin, NewRandom, NewLeastLoaded and NewSticky run
//     one over a set. Package weighted, beside this one, adds weights read
//     from instance metadata; package zone keeps requests in the caller's
//     zone, over any policy, and spills them to other zones when the local
//     instances cannot carry them.
//
// # Shared rules
//
// Every policy follows the same rules, so a retry or a breaker behaves the
// same whatever balances: an instance whose factory-returned closer reports
// Available() == false (an open per-instance breaker) is not picked while
// another is available; tried instances are passed over while an untried
// available one remains; ACTIVE instances are preferred over STANDBY ones.
// Instance.Rank orders instances by them, Instance.Eligible says whether an
// instance may be picked now, and View.Fallback returns the best-ranked
// instance; a policy makes its own choice among eligible ACTIVE instances
// and leaves the rest to Fallback.
//
// # Panic mode
//
// When more than half of a set's instances are unavailable at once
// (WithPanicThreshold; Envoy's panic threshold), the breakers are more
// likely wrong than the instances — a shared dependency failed, or the
// network — and keeping only the survivors would pile every request onto
// them. The set then enters panic mode: the shared rules count every
// instance as available, so picks spread over all of them, tried and
// STANDBY still ranked last. Availability is polled, not pushed, so the set
// counts its unavailable instances (View.Unavailable) off the pick path: on
// every view it publishes, soon after a pick meets an unavailable instance
// (at most every 10 ms), and every 100 ms while one is. A pick pays nothing
// for it while the instances it meets are available. The set logs when it
// enters and leaves panic mode and records it (MetricPanicMode,
// MetricPanicEngaged, MetricUnavailable) through OpenTelemetry's metric
// API (WithMeterProvider).
//
// # Adding a policy
//
// Write a Policy whose Build precomputes what the picks need from the view
// (a table, a ring, the instances in some zone) and returns a Picker that
// chooses among View.Active with that, returns its choice if it is
// Eligible, and View.Fallback otherwise. A policy that works on part of a
// view builds it with View.Filter, whose unavailable instances the set
// counts as it counts the view's; a policy over policies builds theirs
// over such parts, as package zone does. Build runs once per view, off the
// pick path; Pick runs on every request and must neither lock nor allocate.
// State that must outlive a view (a counter, a random source) belongs to the
// Policy, not the Picker. Run it with NewPolicyBalancer; PolicyFunc and
// PickerFunc save declaring types. The example of NewPolicyBalancer is a
// complete policy in a few lines, and packages weighted and zone larger
// ones; they use nothing but the exported API, and the tests of this
// package run weighted through the same rule tests as the built-in
// policies.
//
// Wiring, with kitnats' registry, transport and middleware (error handling
// left out):
//
//	instancer, _ := natskv.NewInstancer(bucket, "echo", logger)
//	factory := breaker.Factory(natsrpc.Factory(nc, "echo", "say", enc, dec))
//	set := lb.NewEndpointSet(instancer, factory, logger) // STANDBY from the registry
//	defer set.Close()
//	call, _ := retry.New(lb.NewLeastLoaded(set), retry.WithMaxAttempts(3))
package lb

// Package lb balances requests over the instances of a service, knowing
// which instance each request goes to; plug your own balancing policy in.
//
// An EndpointSet subscribes to any go-kit sd.Instancer (natskv's, Consul,
// etcd, DNS...) and keeps one endpoint per instance, built by an sd.Factory;
// it is a go-kit sd.Endpointer too. On every change it publishes an
// immutable View of its instances, with what the instancer says of them
// when it is a Describer (STANDBY, metadata) and what their closers say
// when they implement Available (an open breaker).
//
// New runs a Policy over a set: RoundRobin, Random, LeastLoaded (power of
// two choices) and Sticky (consistent hashing on WithStickyKey) here,
// packages weighted and zone beside it, or yours. The balancer is a go-kit
// lb.Balancer, and its Pick returns the instance with its endpoint, passing
// over the instances a retry has tried:
//
//	set := lb.NewEndpointSet(instancer, factory, logger) // STANDBY from the registry
//	defer set.Close()
//	call, _ := retry.New(lb.New(set, lb.LeastLoaded()), retry.WithMaxAttempts(3))
//
// Every policy follows the same rules: available instances before
// unavailable ones, untried before tried, ACTIVE before STANDBY
// (Instance.Rank, Instance.Eligible, View.Fallback). When more than half of
// a set's instances are unavailable (WithPanicThreshold), the set enters
// panic mode and counts them all available, so load spreads over every
// instance instead of piling onto the survivors. An instance known dead — a
// call's error answers Gone() true, as natsrpc's no responders on its own
// subject does, while others answer — leaves the views at once, panic mode
// or not, until the registry shows it alive. Metrics (WithMeterProvider):
// gauges kitnats.lb.instances.unavailable and kitnats.lb.panic_mode, the
// counter kitnats.lb.panic_mode.engaged.
//
// To write a policy, implement Policy. Build turns a view into a Picker once
// per view, off the pick path, precomputing what picks need (a table, a
// ring, the instances of a zone). Pick chooses among View.Active with it,
// returns its choice if it is Eligible and View.Fallback's otherwise, and
// neither locks nor allocates; state that outlives a view is the Policy's.
// ExampleNew is a complete policy; packages weighted and zone are larger
// ones, on this package's exported API only.
package lb

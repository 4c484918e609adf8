// Package zone keeps requests in the caller's own zone (an availability
// zone, a data centre, a NATS cluster behind a gateway) while the instances
// there can carry them, and spills them to other zones when they cannot. It
// wraps any balancing policy — lb's round robin, random, least-loaded and
// sticky, weighted's, your own — through lb's policy seam.
//
// An instance declares its zone when it registers, in its metadata under
// Key ("zone"); with natskv:
//
//	natskv.Instance{ServiceName: "api", InstanceID: "api-7", Metadata: map[string]string{zone.Key: "eu-west-1a"}}
//
// and a client names its own zone:
//
//	set := lb.NewEndpointSet(instancer, factory, logger)
//	balancer := zone.New(set, lb.LeastLoadedPolicy(), "eu-west-1a")
//	// or lb.NewPolicyBalancer(set, zone.Policy(weighted.NewPolicy(), "eu-west-1a"))
//
// Instances with no zone, or another one, are remote. A client with no zone
// ("") balances over every instance, as inner alone would.
//
// # The rule
//
// For each view, the policy splits the instances into the local zone's and
// the rest (lb.View.Filter) and has the inner policy build a picker over
// each. Each pick draws a side, local with probability f, the share kept
// local:
//
//   - f = 1 while at least DefaultHealthyShare (70 %) of the local
//     instances are healthy; below that, f = healthy share / 70 %. With 10
//     local instances, up to 3 down: f = 1; 5 down: f = 0.71; all down:
//     f = 0. The spill grows in proportion as the zone loses capacity, and
//     the remaining local instances take at most 1/0.7 ≈ 1.43 times their
//     usual load (Envoy's overprovisioning factor, 1.4). WithHealthyShare
//     changes the 70 %.
//   - With WithClientShare(c), the share of the callers that are in the
//     local zone, also f ≤ (local healthy / healthy in all zones) / c:
//     Envoy's zone-aware rule. A zone that holds a tenth of the healthy
//     instances but a third of the callers keeps 30 % of its traffic and
//     spills the rest, though every instance is healthy.
//   - f = 1 when no remote instance is healthy: spilling would gain
//     nothing.
//
// The instances counted are the ACTIVE ones: a STANDBY instance takes
// traffic only when no ACTIVE instance of any zone can, so it is no zone's
// capacity. Healthy means available (lb.Available: no open breaker) at the
// set's latest count (lb.View.Unavailable, kept off the pick path,
// refreshed within milliseconds of a pick meeting an unavailable
// instance). In the set's panic mode (lb.WithPanicThreshold) every
// instance counts as healthy, as it does for the shared rules, so traffic
// stays in its zone rather than pile onto survivors elsewhere.
//
// The draw is random, or, for a request with a sticky key (lb.WithStickyKey),
// a hash of the key (not the one lb's sticky rings use), so a key stays or
// spills as a whole and keeps to one instance. A preferred instance
// (lb.WithPreferredInstance) decides the side while it is eligible.
//
// # The shared rules come first
//
// The drawn side's pick is kept when it is an eligible ACTIVE instance
// (lb.Instance.Rank 0). Otherwise the other side's picker is asked too and
// the better ranked of the two wins, the drawn side's on a tie: an eligible
// remote instance beats a local one that is unavailable or already tried,
// and an ACTIVE remote instance beats a STANDBY local one. So a retry
// leaves the zone once every local instance has been tried, and a local
// zone whose breakers all opened sends its traffic away at the next pick,
// before any count catches up. The order of precedence is availability,
// then untried, then ACTIVE over STANDBY, then the zone.
//
// # Cost
//
// A pick is the inner policy's pick plus one atomic load (the local count
// of unavailable instances) and a context lookup (the preferred instance);
// while the local zone is whole, nothing more. It neither locks nor
// allocates. BenchmarkPick in package lb measures it beside the bare
// policies at 1,000 instances. Each view costs two inner builds, one per
// side; lb's sticky policy keeps the rings of both.
//
// Both sides share the inner policy, and so its state: a round robin's
// counter turns for both. A pick that has to ask both sides (the drawn
// side had nothing eligible) turns it twice; that happens for retries
// leaving the zone, and in the moments between a zone's breakers opening
// and the set's next count, after which the rule draws the other side
// first.
package zone

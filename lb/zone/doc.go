// Package zone keeps requests in the caller's own zone (an availability
// zone, a data centre, a NATS cluster behind a gateway) while the instances
// there can carry them, and spills them to other zones when they cannot. It
// wraps any balancing policy — lb's, weighted's, your own.
//
// An instance declares its zone when it registers, under wire.MetadataZone
// (natskv.WithZone writes it), and a client names its own:
//
//	balancer := lb.New(set, zone.Policy(lb.LeastLoaded(), "eu-west-1a"))
//
// Instances with no zone, or another one, are remote. A client with no zone
// ("") balances over every instance, as the inner policy alone would. With
// WithKey(wire.MetadataRegion) the rule keeps requests in the caller's
// region; a zone policy inside a region policy is a hierarchy.
//
// For each view the policy has the inner policy build a picker over the
// local instances and one over the rest. Each pick draws a side, local with
// probability f:
//
//   - f = 1 while at least 70 % of the local ACTIVE instances are healthy
//     (available: no open breaker); below that f = healthy share / 70 %,
//     so the remaining local instances carry at most about 1.43 times their
//     usual load (Envoy's overprovisioning factor). WithHealthyShare
//     changes the 70 %.
//   - With WithClientShare(c), the share of the callers that are in the
//     local zone, also f ≤ (local healthy / healthy in all zones) / c:
//     Envoy's zone-aware rule, for a zone with too few instances for its
//     callers.
//   - f = 1 when no remote instance is healthy.
//
// In the set's panic mode every instance counts as healthy. A request with a
// sticky key (lb.WithStickyKey) stays or spills as a whole; a preferred
// instance (lb.WithPreferredInstance) decides the side while eligible.
//
// lb's shared rules come before the zone: when the drawn side's pick is not
// an eligible ACTIVE instance, the other side is asked too and the better
// ranked wins, so an eligible remote instance beats a local one that is
// unavailable or already tried. A pick costs the inner policy's pick plus
// one atomic load and a context lookup, and neither locks nor allocates.
package zone

// Package weighted is a balancing policy that sends each instance a share of
// the requests proportional to a weight its registration declares: an
// instance registered with metadata weight=3 gets three times the requests
// of one with weight=1. Use it to phase in a canary, to drain an instance
// (weight=0), or to balance a fleet of unequal machines.
//
// An instance declares its weight when it registers, under
// wire.MetadataWeight; with natskv:
//
//	natskv.Instance{ServiceName: "api", InstanceID: "api-7", Metadata: map[string]string{wire.MetadataWeight: "3"}}
//
// and a client balances by it with no further wiring, since natskv's
// Instancer hands each registration's metadata to the endpoint set:
//
//	balancer := lb.New(set, weighted.Policy())
//
// The weight is a decimal integer from 0 to 4294967295. An instance without
// one weighs 1, and so does one whose value does not read as such an
// integer (negative, fractional, a typo): a mistake in one registration
// neither drains the instance nor lets it take all the traffic. Weight 0
// drains: the instance is picked only when no instance of positive weight
// in its tier is eligible.
//
// Weights apply within lb's shared rules: an unavailable or already tried
// instance is passed over while an eligible one exists, whatever its
// weight, and STANDBY instances are picked only when no ACTIVE one is
// eligible. After a retry has tried some instances, the next pick is
// proportional to the weights of those that remain. A pick is one draw
// from an alias table built once per view: O(1), lock-free and
// allocation-free.
//
// The package uses nothing but lb's exported API: start from it to write a
// policy of your own.
package weighted

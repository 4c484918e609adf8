// Package weighted is a balancing policy that sends each instance a share of
// the requests proportional to a weight its registration declares: an
// instance registered with metadata weight=3 gets three times the requests
// of one with weight=1. Use it to phase in a canary, to drain an instance
// (weight=0), or to balance a fleet of unequal machines.
//
// An instance declares its weight when it registers; with natskv:
//
//	natskv.Instance{ServiceName: "api", InstanceID: "api-7", Metadata: map[string]string{"weight": "3"}}
//
// and a client balances by it with no further wiring, since natskv's
// Instancer hands each registration's metadata to the endpoint set:
//
//	set := lb.NewEndpointSet(instancer, factory, logger)
//	balancer := weighted.New(set) // or lb.NewPolicyBalancer(set, weighted.NewPolicy())
//
// The package is written against lb's exported policy seam only (lb.View,
// lb.Instance, lb.Policy), so it is also the worked example of a policy
// that lives outside lb: Build turns a view into a table once, off the pick
// path; Pick chooses among eligible ACTIVE instances with it, and leaves
// what the rules decide to lb.View.Fallback. Start from it to write another.
//
// # Weights
//
// The weight is the decimal integer under the metadata key "weight" (Key).
// An instance without one weighs DefaultWeight (1), so a fleet that declares
// no weights is balanced uniformly at random. A value that does not read as
// an integer from 0 to 4294967295 — negative, fractional, a typo — also
// weighs 1: a mistake in one registration should neither drain the
// instance nor let it take all the traffic. Weight 0 drains: the instance is
// picked only when no instance of positive weight in its tier is eligible,
// as a last resort rather than never, so a fleet drained by mistake still
// answers.
//
// # Rules
//
// Weights apply within lb's shared rules, not instead of them: an instance
// that is unavailable (open breaker) or already tried is passed over while
// an eligible one exists, whatever its weight, and STANDBY instances are
// picked only when no ACTIVE one is eligible (by weight among themselves).
// When a retry has tried some instances, the next pick is proportional to
// the weights of those that remain.
//
// # Algorithm
//
// Weighted random choice from an alias table (Walker's method, built by
// Vose's, in integers so that the proportions are exact): the picker,
// built once per view in O(n), splits the weights into n columns of equal
// capacity, each shared by at most two instances; a pick draws one number,
// whose high part picks a column and low part a side of it — O(1),
// lock-free and allocation-free. BenchmarkPick in package lb measures the
// whole pick beside the other policies at 1,000 instances; BenchmarkDraw
// here compares the draw with prefix sums searched in O(log n), the
// simpler alternative, which it beats several times over at that size.
// A draw that lands on an ineligible instance is redrawn a few times, then
// an exact two-pass search over the eligible instances takes over, so the
// proportions hold among what remains.
//
// Smooth weighted round robin (nginx's) spreads a single client's requests
// more evenly over short windows, but every pick updates every instance's
// running weight: O(n) under a lock, far over the budget at 1,000
// instances. Weighted power-of-two choices reacts to load but follows the
// weights only approximately. Independent random choices by many clients
// converge on the weights, which is what the tests measure.
package weighted

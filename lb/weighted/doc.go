// Package weighted is a balancing policy that sends each instance a share of
// the requests proportional to a weight its registration declares: an
// instance registered with metadata weight=3 gets three times the requests
// of one with weight=1. Use it to phase in a canary, to drain an instance
// (weight=0), or to balance a fleet of unequal machines.
//
// It is written against lb's exported policy seam only — lb.View,
// lb.Instance and lb.Policy — so it doubles as the worked example of a
// policy that lives outside lb. Wiring, with natskv's Instancer (which
// hands the registration's metadata to the set):
//
//	set := lb.NewEndpointSet(instancer, factory, logger)
//	balancer := weighted.New(set) // or lb.NewPolicyBalancer(set, weighted.NewPolicy())
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
// Weighted random with prefix sums: the picker, built once per view, keeps
// the running sums of the weights; a pick draws a point on the weight line
// and binary-searches the instance that owns it — O(log n), lock-free and
// allocation-free (BenchmarkPick in package lb measures it beside the other
// policies, at 1,000 instances). A draw that lands on an ineligible instance
// is redrawn a few times, then an exact two-pass search over the eligible
// instances takes over, so the proportions hold among what remains.
//
// Smooth weighted round robin (nginx's) spreads a single client's requests
// more evenly over short windows, but every pick updates every instance's
// running weight: O(n) under a lock, far over the budget at 1,000 instances.
// Weighted power-of-two choices reacts to load but follows the weights only
// approximately. Random choice among many clients already converges on the
// weights, which is what the test measures.
package weighted

package lb

// Test hooks: seeded policies, whose random choices (the round robin's
// starting offset, random and least-loaded draws) repeat from run to run,
// and what the closed set and an empty view answer.

func SeededRoundRobin(s uint64) Policy { return newRoundRobin(seed{s, true}) }
func SeededRandom(s uint64) Policy     { return newRandom(seed{s, true}) }

func SeededLeastLoaded(s uint64, opts ...LeastLoadedOption) Policy {
	return newLeastLoaded(seed{s, true}, opts)
}

func SeededSticky(s uint64, opts ...StickyOption) Policy {
	return newSticky(seed{s, true}, opts)
}

var ErrClosed = errClosed

func ViewErr(v *View) error { return v.err }

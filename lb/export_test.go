package lb

import "time"

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

// WithDrainTimeout sets how long a departed instance's calls in flight keep
// its closer open (30s by default).
func WithDrainTimeout(d time.Duration) EndpointSetOption {
	return setOption(func(o *setOptions) error { o.drainTimeout = d; return nil })
}

// Gone reports whether the set holds instance gone.
func (s *EndpointSet) Gone(instance string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.cache[instance]
	return ok && m.gone.Load()
}

package lb

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// source is a lock-free, allocation-free random source shared by all the
// goroutines picking through one balancer. go-kit's NewRandom shares one
// *rand.Rand, which is a data race.
//
// Unseeded, it draws from math/rand/v2's runtime source (a ChaCha8 generator
// per thread, so no shared cache line). Seeded (by the tests' seeded
// policies), it is splitmix64 over an atomic counter: one goroutine's picks
// then repeat exactly from run to run, which the distribution tests rely on.
type source struct {
	seeded bool
	state  atomic.Uint64
}

// seed is how a policy's source starts: unseeded in production.
type seed struct {
	value  uint64
	seeded bool
}

func newSource(s seed) *source {
	src := &source{seeded: s.seeded}
	src.state.Store(s.value)
	return src
}

func (s *source) uint64() uint64 {
	if !s.seeded {
		return rand.Uint64()
	}
	return mix64(s.state.Add(golden))
}

// bounded maps a uniform 64-bit value onto [0, n) without division
// (Lemire's multiply-shift).
func bounded(x uint64, n int) int {
	hi, _ := bits.Mul64(x, uint64(n))
	return int(hi)
}

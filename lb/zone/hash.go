package zone

import "sync/atomic"

const golden = 0x9e3779b97f4a7c15

// splitmix is a seeded, lock-free random source: splitmix64 over an atomic
// counter, so one goroutine's draws repeat exactly from run to run.
type splitmix struct{ state atomic.Uint64 }

func (s *splitmix) Store(seed uint64) { s.state.Store(seed) }

func (s *splitmix) next() uint64 { return mix64(s.state.Add(golden)) }

// mix64 is the splitmix64 finaliser: a bijection with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// zoneSalt makes the hash of a sticky key here independent of the one lb's
// sticky policy places it on its ring with (FNV-1a and mix64 as well):
// otherwise the keys kept local would be one arc of the local ring, and a
// few instances would get them all.
const zoneSalt = 0x5a6f6e652d73706c // "Zone-spl"

// hashString is FNV-1a, salted, finished by mix64: stable across processes,
// so every client keeps or spills the same keys.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h ^ zoneSalt)
}

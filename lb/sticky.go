package lb

import (
	"context"
	"slices"
	"sync"
)

// Sticky sends requests with the same key (WithStickyKey) to the same
// instance while it can take them: a cache-friendly or session-affine
// policy. A preferred instance (WithPreferredInstance) wins over the key
// while it is eligible, ACTIVE or STANDBY. A request with no key is
// balanced round robin, so is Endpoint, which has no context. Run it with
// New.
//
// Keys map to instances by consistent hashing, on a ring with a fixed
// number of points per instance (WithVirtualNodes): a pick is one hash and
// one binary search, with no allocation, and adding or removing one of N
// instances moves about 1/N of the keys. When the key's instance is not
// eligible (unavailable or tried), the pick walks the ring to the next
// instance that is, so one instance's keys spread over the others. ACTIVE
// instances have their own ring; the STANDBY ring is used only when no
// ACTIVE instance is eligible.
func Sticky(opts ...StickyOption) Policy { return newSticky(seed{}, opts) }

func newSticky(s seed, opts []StickyOption) Policy {
	st := &sticky{next: newCounter(s), vnodes: defaultVirtualNodes}
	for _, o := range opts {
		if o != nil {
			must(o.applySticky(st))
		}
	}
	return st
}

// StickyOption configures Sticky.
type StickyOption interface {
	applySticky(*sticky) error
}

type stickyOption func(*sticky) error

func (f stickyOption) applySticky(s *sticky) error { return f(s) }

const defaultVirtualNodes = 100

// WithVirtualNodes sets how many points each instance gets on Sticky's
// consistent-hash ring (default 100; at least 1). More points spread keys
// more evenly, and bound the keys moved by a membership change closer to
// 1/N, at the cost of memory (12 bytes per point) and view build time.
func WithVirtualNodes(n int) StickyOption {
	return stickyOption(func(s *sticky) error {
		if n < 1 {
			return invalidOption("WithVirtualNodes", "%d points per instance, want at least 1", n)
		}
		s.vnodes = n
		return nil
	})
}

// A tier's ring is reused from an earlier picker while the tier's
// membership is unchanged, so a view that only changes attributes elsewhere
// does not pay for a new ring. The policy keeps the last few rings it built
// (ringCacheSize), so a policy that builds pickers over several views of one
// set — package zone builds one per zone — reuses them all.
type sticky struct {
	next   *counter // for requests without a key
	vnodes int      // points per instance on a ring

	mu    sync.Mutex   // Build may be called by several balancers at once
	rings []cachedRing // the most recently used first
}

// ringCacheSize is how many rings a sticky policy keeps for reuse: both
// tiers of two views, the zone's and the rest.
const ringCacheSize = 4

// cachedRing is a ring and the membership it was built for.
type cachedRing struct {
	names []string
	ring  ring
}

func (s *sticky) Build(v *View) Picker {
	p := &stickyPicker{view: v, next: s.next}
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, tier := range v.tiers {
		p.rings[t] = s.ring(tier)
	}
	return p
}

// ring returns the ring of tier, from the cache if it is there. s.mu is
// held.
func (s *sticky) ring(tier []*Instance) ring {
	if len(tier) == 0 {
		return nil
	}
	for i, c := range s.rings {
		if slices.EqualFunc(c.names, tier, func(n string, in *Instance) bool { return n == in.name }) {
			copy(s.rings[1:i+1], s.rings[:i])
			s.rings[0] = c
			return c.ring
		}
	}
	c := cachedRing{names: make([]string, len(tier)), ring: buildRing(tier, s.vnodes)}
	for i, in := range tier {
		c.names[i] = in.name
	}
	if len(s.rings) < ringCacheSize {
		s.rings = append(s.rings, cachedRing{})
	}
	copy(s.rings[1:], s.rings[:len(s.rings)-1])
	s.rings[0] = c
	return c.ring
}

type stickyPicker struct {
	view  *View
	next  *counter
	rings [2]ring // rings[t] is over view.tiers[t]
}

// Pick returns the preferred instance, else the key's instance, else the
// next one round robin.
func (p *stickyPicker) Pick(ctx context.Context, tried []string) *Instance {
	if name, ok := PreferredInstance(ctx); ok {
		if in := p.view.byName[name]; in != nil && in.score(tried) == 0 {
			return in
		}
	}
	key, ok := StickyKey(ctx)
	if !ok {
		return roundRobinPick(p.view, p.next.next(), tried)
	}
	return p.walk(hashString(key), tried)
}

// walk returns the first eligible instance on the ACTIVE ring from the
// key's point; else, when no ACTIVE instance is eligible, the first on the
// STANDBY ring; else what the shared rules rank best.
func (p *stickyPicker) walk(h uint64, tried []string) *Instance {
	if in := p.walkRing(0, h, tried); in != nil {
		return in
	}
	// Fallback also covers an eligible ACTIVE instance beyond the walk's
	// reach, and a tier too large for a ring. Starting it at the key's
	// hash keeps the choice the key's.
	best := p.view.Fallback(h, tried)
	if best.attrs.Standby && best.Eligible(tried) {
		if in := p.walkRing(1, h, tried); in != nil {
			return in
		}
	}
	return best
}

// walkRing returns the first eligible instance of tier t at or after the
// key's point on its ring, or nil when none is within maxRingWalk points.
func (p *stickyPicker) walkRing(t int, h uint64, tried []string) *Instance {
	r, tier := p.rings[t], p.view.tiers[t]
	if len(r) == 0 {
		return nil
	}
	i, last := r.search(h), -1
	for range min(maxRingWalk, len(r)) {
		if o := r.owner(i); o != last {
			last = o
			if in := tier[o]; in.score(tried) == 0 {
				return in
			}
		}
		if i++; i == len(r) {
			i = 0
		}
	}
	return nil
}

// ring is a consistent-hash ring: vnodes points per instance of one tier,
// sorted. Rendezvous hashing would move the same share of keys on a
// membership change but costs O(N) per pick, too slow for thousands of
// instances; jump hash cannot remove an arbitrary instance without
// remapping others. A point packs the top 40 bits of its hash above the index of its
// instance in the tier (24 bits), so the ring is one []uint64 that sorts
// fast, and equal hashes break ties on the instance, sorted by name: every
// client builds the same ring from the same membership.
type ring []uint64

const (
	ownerBits = 24
	ownerMask = 1<<ownerBits - 1
	// maxRingInstances bounds the instances of a tier on a ring; beyond it
	// the sticky policy falls back to scanning (far beyond any real use).
	maxRingInstances = 1 << ownerBits
)

func buildRing(tier []*Instance, vnodes int) ring {
	if len(tier) == 0 || len(tier) > maxRingInstances {
		return nil
	}
	r := make(ring, 0, len(tier)*vnodes)
	for i, in := range tier {
		h := hashString(in.name)
		for v := range vnodes {
			r = append(r, mix64(h+uint64(v+1)*golden)&^ownerMask|uint64(i))
		}
	}
	slices.Sort(r)
	return r
}

// search returns the index of the first point at or after hash h, wrapping.
func (r ring) search(h uint64) int {
	h &^= ownerMask
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m] < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(r) {
		lo = 0
	}
	return lo
}

func (r ring) owner(i int) int { return int(r[i] & ownerMask) }

// maxRingWalk bounds how many ring points a sticky pick visits looking for an
// eligible successor before it falls back to View.Fallback.
const maxRingWalk = 256

const golden = 0x9e3779b97f4a7c15

// mix64 is the splitmix64 finaliser: a bijection with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// hashString is FNV-1a finished by mix64. It is stable across processes and
// versions, so every client maps a sticky key to the same instance.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

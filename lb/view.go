package lb

import (
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
)

// instance is one live member of an EndpointSet. It outlives snapshots: the
// same *instance is carried into every snapshot built while the instance stays
// in the set, so its load figures are continuous across membership changes.
type instance struct {
	name   string
	next   endpoint.Endpoint // from the factory
	ep     endpoint.Endpoint // next wrapped by serve; built once
	closer io.Closer
	avail  Available // nil when the closer does not implement Available

	_        [64]byte // keep the hot counters of neighbouring instances apart
	inflight atomic.Int64
	calls    atomic.Uint64
	ewma     atomic.Int64 // latency moving average in nanoseconds; 0 until the first call
	_        [64]byte
}

func newInstance(name string, ep endpoint.Endpoint, closer io.Closer) *instance {
	in := &instance{name: name, next: ep, closer: closer}
	in.avail, _ = closer.(Available)
	in.ep = in.serve
	return in
}

// serve counts the call in flight and feeds its latency into the moving
// average that the least-loaded balancer weighs. A failed call never lowers
// the average: an instance that fails fast must not look fast.
func (in *instance) serve(ctx context.Context, request any) (any, error) {
	in.inflight.Add(1)
	in.calls.Add(1)
	start := time.Now()
	response, err := in.next(ctx, request)
	in.observe(int64(time.Since(start)), err != nil)
	in.inflight.Add(-1)
	return response, err
}

// ewmaShift sets the weight of a new latency sample to 1/2^ewmaShift.
const ewmaShift = 3

func (in *instance) observe(d int64, failed bool) {
	if d <= 0 {
		d = 1
	}
	for {
		old := in.ewma.Load()
		v := d
		if old != 0 {
			v = old + (d-old)>>ewmaShift
		}
		if failed && v < old {
			return
		}
		if in.ewma.CompareAndSwap(old, v) {
			return
		}
	}
}

func (in *instance) available() bool {
	return in.avail == nil || in.avail.Available()
}

// Scores order candidates: lower is better. A balancer returns the first
// candidate of the lowest score it finds, so availability outranks "not yet
// tried", which outranks ACTIVE over STANDBY (the tier).
const (
	scoreTried       = 2
	scoreUnavailable = 4
	scoreWorst       = 8
)

// score is 0 for an available instance not in tried; the caller adds the tier.
func (in *instance) score(tried []string) int {
	s := 0
	for _, t := range tried {
		if t == in.name {
			s = scoreTried
			break
		}
	}
	if !in.available() {
		s += scoreUnavailable
	}
	return s
}

func (in *instance) pick() Pick { return Pick{Instance: in.name, Endpoint: in.ep} }

// snapshot is the immutable picker state an EndpointSet publishes on every
// membership change, in the manner of a grpc-go balancer.Picker: pickers load
// it with one atomic read and never lock. Only the consistent-hash rings are
// filled in after publication, once, behind ringOnce.
type snapshot struct {
	insts     []*instance // sorted by name
	endpoints []endpoint.Endpoint
	standby   []bool // standby[i] is insts[i]'s attribute
	// tiers[0] holds the ACTIVE instances, tiers[1] the STANDBY ones, each
	// sorted by name. A tier may be empty.
	tiers  [2][]*instance
	byName map[string]*instance
	err    error // returned by picks when insts is empty

	vnodes     int
	ringOnce   sync.Once
	ringsBuilt atomic.Bool
	rings      [2]ring
}

func newSnapshot(insts []*instance, attrs []Attributes, vnodes int, err error) *snapshot {
	s := &snapshot{
		insts:     insts,
		endpoints: make([]endpoint.Endpoint, len(insts)),
		standby:   make([]bool, len(insts)),
		byName:    make(map[string]*instance, len(insts)),
		err:       err,
		vnodes:    vnodes,
	}
	if s.err == nil {
		s.err = ErrNoInstances
	}
	for i, in := range insts {
		s.endpoints[i] = in.ep
		s.byName[in.name] = in
		t := 0
		if attrs != nil && attrs[i].Standby {
			t = 1
			s.standby[i] = true
		}
		s.tiers[t] = append(s.tiers[t], in)
	}
	return s
}

// scan returns the best-scoring instance, visiting each tier from position
// start onwards; it stops at the first instance that cannot be beaten.
// It is the fallback of every balancer and costs O(n) only when most
// instances are unavailable or tried.
func (s *snapshot) scan(start uint64, tried []string) *instance {
	var best *instance
	bestScore := scoreWorst
	for t, tier := range s.tiers {
		if bestScore <= t {
			break
		}
		n := uint64(len(tier))
		if n == 0 {
			continue
		}
		i := start % n
		for range n {
			in := tier[i]
			if sc := t + in.score(tried); sc < bestScore {
				best, bestScore = in, sc
				if sc == t {
					break
				}
			}
			if i++; i == n {
				i = 0
			}
		}
	}
	return best
}

// ring is a consistent-hash ring: vnodes points per instance of one tier,
// sorted. A point packs the top 40 bits of its hash above the index of its
// instance in the tier (24 bits), so the ring is one []uint64 that sorts
// fast, and equal hashes break ties on the instance, sorted by name: every
// client builds the same ring from the same membership.
type ring []uint64

const (
	ownerBits = 24
	ownerMask = 1<<ownerBits - 1
	// maxRingInstances bounds the instances of a tier on a ring; beyond it
	// the sticky balancer falls back to scanning (far beyond any real use).
	maxRingInstances = 1 << ownerBits
)

// getRings builds the rings on first use. An EndpointSet that serves a sticky
// balancer builds them before it publishes the snapshot, so picks never pay
// for it.
func (s *snapshot) getRings() *[2]ring {
	s.buildRings(nil)
	return &s.rings
}

// buildRings builds the rings once, reusing prev's for a tier whose
// membership did not change.
func (s *snapshot) buildRings(prev *snapshot) {
	s.ringOnce.Do(func() {
		for t, tier := range s.tiers {
			if prev != nil && prev.ringsBuilt.Load() && prev.vnodes == s.vnodes && sameNames(prev.tiers[t], tier) {
				s.rings[t] = prev.rings[t]
				continue
			}
			s.rings[t] = buildRing(tier, s.vnodes)
		}
		s.ringsBuilt.Store(true)
	})
}

func sameNames(a, b []*instance) bool {
	return slices.EqualFunc(a, b, func(x, y *instance) bool { return x.name == y.name })
}

func buildRing(tier []*instance, vnodes int) ring {
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

// maxRingWalk bounds how many ring points a sticky pick visits looking for a
// healthy successor before it falls back to scanning the tier.
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

package lb

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/go-kit/kit/endpoint"
)

// member is one live endpoint of an EndpointSet. It outlives views: the same
// *member backs every view built while its instance stays in the set, so its
// load figures are continuous across membership changes.
type member struct {
	name   string
	next   endpoint.Endpoint // from the factory
	ep     endpoint.Endpoint // next wrapped by serve; built once
	closer io.Closer
	avail  Available // nil when the closer does not implement Available
	census *census   // the set's: panic mode, and asking for a census
	ej     *ejector  // the set's: the gone rule, and closing once drained
	gerr   error     // what serve answers while the member is gone

	// The set's worker's alone, under its lock (gone.go).
	probeAt    int64  // clock: when a gone member is offered again
	markedAt   int64  // clock: when it was last marked gone
	readmitted int64  // clock: when it last came back
	streak     int    // gone marks in a row without an answer between
	goneRev    uint64 // its Attributes.Revision when it was marked

	_         [64]byte // keep the hot counters of neighbouring members apart
	inflight  atomic.Int64
	ewma      atomic.Int64 // latency moving average in nanoseconds; 0 until the first call
	lastOK    atomic.Int64 // clock of the latest success's end
	lastGone  atomic.Int64 // clock of the start of the latest attempt that found it gone
	gone      atomic.Bool  // out of the set's views: calls refused unsent
	pending   atomic.Bool  // a gone verdict awaits the worker
	pendingAt atomic.Int64 // clock: the start of its attempt
	retiring  atomic.Bool  // departed: close once nothing is in flight
	_         [64]byte

	closeOnce  sync.Once
	drainTimer *time.Timer // under ej.mu
}

func newMember(name string, ep endpoint.Endpoint, closer io.Closer, c *census, ej *ejector) *member {
	m := &member{name: name, next: ep, closer: closer, census: c, ej: ej, gerr: &goneError{instance: name}}
	m.avail, _ = closer.(Available)
	m.ep = m.serve
	return m
}

// serve counts the call in flight and feeds its latency into the moving
// average that policies may weigh. A failed call never lowers the average:
// an instance that fails fast must not look fast. It notes successes and
// gone verdicts for the gone rule (gone.go), refuses calls while the member
// is gone, and closes a departed member's closer when its last call
// returns.
func (m *member) serve(ctx context.Context, request any) (any, error) {
	if m.gone.Load() {
		return nil, m.gerr
	}
	m.inflight.Add(1)
	start := time.Now()
	response, err := m.next(ctx, request)
	end := time.Now()
	m.observe(int64(end.Sub(start)), err != nil)
	if err == nil {
		m.lastOK.Store(clock(end))
	} else if isGone(err) {
		m.verdict(clock(start))
	}
	if m.inflight.Add(-1) == 0 && m.retiring.Load() {
		m.closeNow()
	}
	return response, err
}

// ewmaShift sets the weight of a new latency sample to 1/2^ewmaShift.
const ewmaShift = 3

func (m *member) observe(d int64, failed bool) {
	if d <= 0 {
		d = 1
	}
	for {
		old := m.ewma.Load()
		v := d
		if old != 0 {
			v = old + (d-old)>>ewmaShift
		}
		if failed && v < old {
			return
		}
		if m.ewma.CompareAndSwap(old, v) {
			return
		}
	}
}

// Instance is one member of a View: its name and attributes as of the view,
// and live load figures shared with every other view of the same endpoint.
//
// The name, endpoint and availability check are copied out of the member so
// that the checks every pick makes cost no extra pointer chase.
type Instance struct {
	name  string
	ep    endpoint.Endpoint
	avail Available
	m     *member
	attrs Attributes
}

// Name is the instance as the instancer reported it.
func (in *Instance) Name() string { return in.name }

// Attributes are what the set learnt of the instance when it built the view
// (Describer or WithAttributes). Their Metadata map is shared: read it only.
func (in *Instance) Attributes() Attributes { return in.attrs }

// Available is what the instance's closer reports now (see Available); true
// when it reports nothing. It is read live, not frozen in the view, so an
// opening breaker takes effect on the next pick. It is the closer's word
// alone: in panic mode (View.PanicMode) the rules ignore it, this does not.
func (in *Instance) Available() bool { return in.avail == nil || in.avail.Available() }

// InFlight is how many requests through the instance's endpoint have not
// returned yet.
func (in *Instance) InFlight() int64 { return in.m.inflight.Load() }

// Latency is the moving average of the endpoint's latency (a new call weighs
// 1/8; failures never lower it); 0 before the first call.
func (in *Instance) Latency() time.Duration { return time.Duration(in.m.ewma.Load()) }

// Ranks order candidates under the shared rules; lower is better. The order
// of precedence is availability, then "not yet tried", then ACTIVE over
// STANDBY, so the worst rank of one class is still better than the best of
// the next.
const (
	rankStandby     = 1
	rankTried       = 2
	rankUnavailable = 4
	rankWorst       = 8
)

// Eligible reports whether the instance is available and not in tried: the
// rules allow picking it now, before any instance that is not eligible.
// In panic mode (View.PanicMode) every instance counts as available. A
// picker that finds an eligible instance among View.Active may return it at
// once; one that finds none calls View.Fallback. (An eligible STANDBY
// instance still ranks below an eligible ACTIVE one; see Rank.)
//
// Eligible costs one comparison per tried name and one Available call.
func (in *Instance) Eligible(tried []string) bool {
	return in.score(tried) == 0
}

// Rank places the instance under the shared rules: 0 is an eligible ACTIVE
// instance; an eligible STANDBY one comes next, then tried instances, then
// unavailable ones (none, in panic mode). Lower is better. A policy that compares candidates by
// its own measure (load, weight) should compare their ranks first.
func (in *Instance) Rank(tried []string) int {
	r := in.score(tried)
	if in.attrs.Standby {
		r += rankStandby
	}
	return r
}

// score is Rank without the tier.
func (in *Instance) score(tried []string) int {
	s := 0
	for _, t := range tried {
		if t == in.name {
			s = rankTried
			break
		}
	}
	if !in.Available() && !in.m.census.excuse() {
		s += rankUnavailable
	}
	return s
}

func (in *Instance) pick() Pick { return Pick{Instance: in.name, Endpoint: in.ep} }

// View is the immutable state of an EndpointSet at one moment: the instances
// it can pick from, with their attributes. The set builds one on every
// change (membership, attributes, a factory retry) and hands it to every
// Policy subscribed to it, as grpc-go's balancer/base hands ready SubConns
// to a PickerBuilder; pickers read it without locks.
//
// Every slice a View returns is shared by all its readers: do not modify it.
type View struct {
	all       []*Instance // sorted by name
	endpoints []endpoint.Endpoint
	// tiers[0] holds the ACTIVE instances, tiers[1] the STANDBY ones, each
	// sorted by name. A tier may be empty.
	tiers  [2][]*Instance
	byName map[string]*Instance
	err    error // what picks return while the view is empty

	census      *census      // the set's; nil for a view no set made
	unavailable atomic.Int32 // at the latest census (Unavailable)

	// A view made by Filter: root is the set's view it was cut from, and
	// idx[i] the position of all[i] in root.all, for the census.
	root *View
	idx  []int32

	// The views Filter made from this one, if it is a set's: the census
	// counts their unavailable instances too, while anyone holds them.
	subMu    sync.Mutex
	subs     []weak.Pointer[View]
	subsLive int // live subs at the latest prune
}

func newView(members []*member, attrs []Attributes, err error, c *census) *View {
	v := &View{
		all:       make([]*Instance, len(members)),
		endpoints: make([]endpoint.Endpoint, len(members)),
		byName:    make(map[string]*Instance, len(members)),
		err:       err,
		census:    c,
	}
	if v.err == nil {
		v.err = ErrNoInstances
	}
	backing := make([]Instance, len(members))
	for i, m := range members {
		in := &backing[i]
		*in = Instance{name: m.name, ep: m.ep, avail: m.avail, m: m}
		if attrs != nil {
			in.attrs = attrs[i]
		}
		v.all[i] = in
		v.endpoints[i] = m.ep
		v.byName[m.name] = in
		v.tiers[tierOf(in)] = append(v.tiers[tierOf(in)], in)
	}
	return v
}

func tierOf(in *Instance) int {
	if in.attrs.Standby {
		return 1
	}
	return 0
}

// Filter returns the view of the instances for which keep returns true (the
// instances of one zone, say), in the same order, with their tiers, for a
// policy to build a picker over part of a view. The instances are the same
// (*Instance) as this view's, live figures and all; Lookup finds only the
// kept ones. The set counts the unavailable instances
// of a filtered view (Unavailable) with its own, until it publishes its
// next view: for the life of the pickers built from this one. PanicMode is
// the set's.
//
// Filter is for Policy.Build: it calls keep and Available once per
// instance, and allocates.
func (v *View) Filter(keep func(*Instance) bool) *View {
	root := v
	if v.root != nil {
		root = v.root
	}
	f := &View{
		byName: map[string]*Instance{},
		err:    v.err,
		census: v.census,
		root:   root,
	}
	down := int32(0)
	for i, in := range v.all {
		if !keep(in) {
			continue
		}
		pos := int32(i)
		if v.root != nil {
			pos = v.idx[i]
		}
		f.all = append(f.all, in)
		f.idx = append(f.idx, pos)
		f.byName[in.name] = in
		f.tiers[tierOf(in)] = append(f.tiers[tierOf(in)], in)
		if !in.Available() {
			down++
		}
	}
	f.unavailable.Store(down)
	if root.census != nil {
		root.adopt(f)
	}
	return f
}

// adopt registers f, which Filter made from v, a set's view, for the census.
func (v *View) adopt(f *View) {
	v.subMu.Lock()
	defer v.subMu.Unlock()
	v.subs = append(v.subs, weak.Make(f))
	if len(v.subs) >= 2*v.subsLive+16 {
		v.pruneLocked()
	}
}

// pruneLocked drops the filtered views nobody holds and returns the others;
// v.subMu is held.
func (v *View) pruneLocked() []*View {
	var live []*View
	kept := v.subs[:0]
	for _, w := range v.subs {
		if f := w.Value(); f != nil {
			kept = append(kept, w)
			live = append(live, f)
		}
	}
	clear(v.subs[len(kept):])
	v.subs = kept
	v.subsLive = len(kept)
	return live
}

// filtered returns the live views Filter made from v, a set's view.
func (v *View) filtered() []*View {
	v.subMu.Lock()
	defer v.subMu.Unlock()
	return v.pruneLocked()
}

// Unavailable is how many of the view's instances reported
// Available() == false at the set's latest census. It is kept by the set,
// not frozen in the view: the set counts on every view it publishes, soon
// after a pick meets an unavailable instance (within 10 ms), and every
// 100 ms while any instance is unavailable. A policy reads it on the pick
// path (one atomic load) to judge the health of the instances it picks
// from, as package zone does; Instance.Available is the live word of one
// instance. It is 0 for a view no set made.
func (v *View) Unavailable() int { return int(v.unavailable.Load()) }

// PanicMode reports whether the set is in panic mode now: more than its
// panic threshold's share of its instances are unavailable
// (WithPanicThreshold), so the shared rules count every instance as
// available (Eligible, Rank, Fallback) and picks spread over all of them.
func (v *View) PanicMode() bool { return v.census != nil && v.census.engaged.Load() }

// Len is the number of instances. A policy never sees an empty view: the
// balancer answers its error (ErrNoInstances, or an error that wraps it)
// without asking the picker.
func (v *View) Len() int { return len(v.all) }

// Instances returns every instance, sorted by name.
func (v *View) Instances() []*Instance { return v.all }

// Active returns the ACTIVE (not STANDBY) instances, sorted by name: the
// instances a policy chooses among while one of them is eligible.
func (v *View) Active() []*Instance { return v.tiers[0] }

// Standby returns the STANDBY instances, sorted by name. View.Fallback
// reaches them when no ACTIVE instance is eligible.
func (v *View) Standby() []*Instance { return v.tiers[1] }

// Lookup returns the instance named name, or nil.
func (v *View) Lookup(name string) *Instance { return v.byName[name] }

// Fallback returns the best-ranked instance (Rank) for tried: the first
// eligible ACTIVE instance at or after position start of Active (wrapping),
// else the first eligible STANDBY one at or after start of Standby, else the
// best of the rest in the same order. It is the shared last resort of every
// policy: call it when the policy's own choice is not eligible, and the
// rules are kept whatever the policy does. start spreads the fallback
// picks; pass the policy's counter or random draw.
//
// It stops at the first instance that cannot be beaten, so it costs O(n)
// only when most instances are tried or unavailable. It returns nil only for
// an empty view.
func (v *View) Fallback(start uint64, tried []string) *Instance {
	var best *Instance
	bestRank := rankWorst
	for t, tier := range v.tiers {
		if bestRank <= t {
			break
		}
		n := uint64(len(tier))
		if n == 0 {
			continue
		}
		i := start % n
		for range n {
			in := tier[i]
			if r := t + in.score(tried); r < bestRank {
				best, bestRank = in, r
				if r == t {
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

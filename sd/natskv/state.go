package natskv

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/sd"
)

// This file is the registry's state, apart from any transport: what one
// service's entries are, which of them are offered, and when subscribers are
// told. The watch (watch.go) and polling (poll.go) only feed it records; it
// can be driven and tested without a server (state_test.go).
//
// A state is not safe for concurrent use: its feeder serialises the
// operations (the Instancer holds its lock). Only snapshot may be called
// concurrently with them. A state knows one service of one bucket; a feed
// that reads many services (one watch on a whole bucket) routes each record
// to the state of the service its key names, with Layout.match.

// record is one value of one key, as a feed saw it: a message of the watch,
// or an entry of a listing.
type record struct {
	key string
	// op is ChangeUpdated for a put; ChangeDeleted, ChangePurged or
	// ChangeExpired for a removal (a delete, a purge, an expiry marker).
	op   ChangeKind
	data []byte
	rev  uint64
	// seen is when the write reached us (live changes) or the server (the
	// values of a full set: their age counts towards staleness).
	seen time.Time
}

// stateConfig is what a state is told of its Instancer's settings.
type stateConfig struct {
	service        string
	layout         Layout
	format         func(Instance) string // the published string; "" leaves the instance out
	excludeStandby bool
	staleAfter     time.Duration // ≤ 0: nothing goes stale
}

// update is what one operation on a state did: the changes to report (to
// count, and to tell WithChangeFunc), in order, and whether a new event is
// due to subscribers (state.event has it).
type update struct {
	changes []Change
	publish bool
}

type entry struct {
	inst  Instance
	rev   uint64
	seen  time.Time
	stale bool
}

// snapshot is the published view: immutable once stored, and so are the
// Instances in it (their Metadata maps are shared by Lookup's callers only
// through copies, and by Describe's read-only).
type snapshot struct {
	list []Instance // offered, in the order of strs
	strs []string
	by   map[string]Instance
}

// state is the registry state of one service.
type state struct {
	cfg     stateConfig
	entries map[string]*entry // by key
	// live: the entries come from a feed that is up (a full set was loaded
	// and nothing was lost since). Staleness applies only then: while the
	// feed is down, nothing is learnt, so nothing is judged.
	live bool

	snap atomic.Pointer[snapshot]

	// The last event published. seq counts events (0: none yet); strs is
	// the last set published, kept while err says the feed is lost.
	seq  uint64
	strs []string
	err  error
}

func newState(cfg stateConfig) *state {
	s := &state{cfg: cfg, entries: map[string]*entry{}}
	s.snap.Store(&snapshot{by: map[string]Instance{}})
	return s
}

// snapshot is the published view. Safe to call at any time.
func (s *state) snapshot() *snapshot { return s.snap.Load() }

// event is the last event published: the set, or the error of a lost feed.
// The slice is the caller's.
func (s *state) event() sd.Event {
	if s.err != nil {
		return sd.Event{Err: s.err}
	}
	return sd.Event{Instances: slices.Clone(s.strs)}
}

// initial is what a new subscriber gets: the last set published, even while
// the feed is lost (it is the best knowledge there is), or the error when no
// set was ever published. ok is false before the first event.
func (s *state) initial() (ev sd.Event, ok bool) {
	switch {
	case s.seq == 0:
		return sd.Event{}, false
	case s.strs != nil:
		return sd.Event{Instances: slices.Clone(s.strs)}, true
	}
	return sd.Event{Err: s.err}, true
}

// apply folds one live change into the state.
func (s *state) apply(r record) update {
	c, ok := s.cfg.fold(s.entries, r)
	if !ok {
		return update{}
	}
	return update{changes: []Change{c}, publish: s.live && s.publish(false)}
}

// replace makes a full set the state — the initial values of a fresh watch,
// or a poll's listing — and reports what differs from the state it
// replaces, so a rebuilt watch reports the removals it missed. It publishes
// unless the set is the same as last published; after a lost feed, or the
// first time, always. now caps the records' times.
func (s *state) replace(l *load, now time.Time) update {
	var cs []Change
	for _, c := range l.skipped {
		if old := s.entries[c.Key]; old != nil && l.entries[c.Key] == nil {
			c.Instance = old.inst // what we had under that key is dropped
		}
		cs = append(cs, c)
	}
	var diff []Change
	for k, e := range l.entries {
		if e.seen.After(now) {
			e.seen = now
		}
		switch old := s.entries[k]; {
		case old == nil:
			diff = append(diff, Change{Kind: ChangeAdded, Key: k, Instance: e.inst, Revision: e.rev})
		case old.rev == e.rev:
			l.entries[k] = old // the same write: keep when it reached us, and whether it is stale
		default:
			diff = append(diff, Change{Kind: ChangeUpdated, Key: k, Instance: e.inst, Revision: e.rev})
		}
	}
	for k, old := range s.entries {
		if l.entries[k] != nil || l.skippedKeys[k] {
			continue
		}
		c := Change{Kind: ChangeDeleted, Key: k, Instance: old.inst, Revision: old.rev}
		if m, ok := l.removed[k]; ok {
			c.Kind, c.Revision = m.op, m.rev // the marker says how it went
		}
		diff = append(diff, c)
	}
	slices.SortFunc(diff, byKey)
	cs = append(cs, diff...)
	s.entries = l.entries
	s.live = true
	cs = append(cs, s.markStale(now)...)
	return update{changes: cs, publish: s.publish(s.seq == 0 || s.err != nil)}
}

// tick judges staleness at now: entries whose last write is older than
// staleAfter stop being offered.
func (s *state) tick(now time.Time) update {
	if s.cfg.staleAfter <= 0 || !s.live {
		return update{}
	}
	cs := s.markStale(now)
	if len(cs) == 0 {
		return update{}
	}
	return update{changes: cs, publish: s.publish(false)}
}

// lost says the feed failed: subscribers get the error once per outage and
// keep their last set; nothing goes stale until a full set is loaded again.
func (s *state) lost(err error) update {
	s.live = false
	if s.seq > 0 && s.err != nil {
		return update{}
	}
	s.seq++
	s.err = err
	return update{publish: true}
}

// markStale flags the entries whose last write is too old and reports those
// that just went stale, by key. An entry that is written again is a new
// entry, not stale.
//
// It is the one place staleness removes instances: a guard against mass
// removal (when the registry itself looks unhealthy) belongs here.
func (s *state) markStale(now time.Time) []Change {
	if s.cfg.staleAfter <= 0 || !s.live {
		return nil
	}
	var cs []Change
	for k, e := range s.entries {
		stale := now.Sub(e.seen) > s.cfg.staleAfter
		if stale && !e.stale {
			cs = append(cs, Change{Kind: ChangeStale, Key: k, Instance: e.inst, Revision: e.rev})
		}
		e.stale = stale
	}
	slices.SortFunc(cs, byKey)
	return cs
}

type pair struct {
	s    string
	inst Instance
}

// publish recomputes the offered set and reports whether an event is due;
// it stores the new snapshot first. An event is due when the set of strings
// changed (or force), and when it is the same but a member turned STANDBY or
// back to ACTIVE: balancers that prefer ACTIVE instances must re-read it,
// and sd.Event has no room to say so, so the same set is sent again (which
// go-kit subscribers ignore). A version or metadata change replaces the
// snapshot without an event; a rewrite that changes nothing but the
// heartbeat time changes nothing.
func (s *state) publish(force bool) bool {
	ps := make([]pair, 0, len(s.entries))
	for _, e := range s.entries {
		if e.stale || !e.inst.Healthy() || (s.cfg.excludeStandby && e.inst.Status == StatusStandby) {
			continue
		}
		str := s.cfg.format(e.inst)
		if str == "" {
			continue
		}
		ps = append(ps, pair{str, e.inst})
	}
	slices.SortFunc(ps, func(a, b pair) int {
		return cmp.Or(strings.Compare(a.s, b.s), strings.Compare(a.inst.InstanceID, b.inst.InstanceID))
	})
	ps = slices.CompactFunc(ps, func(a, b pair) bool { return a.s == b.s })
	strs := make([]string, len(ps))
	for n, p := range ps {
		strs[n] = p.s
	}
	same := !force && s.seq > 0 && s.err == nil && slices.Equal(strs, s.strs)
	prev := s.snap.Load().list
	if same && !materialChange(prev, ps) {
		return false
	}
	snap := &snapshot{list: make([]Instance, len(ps)), strs: strs, by: make(map[string]Instance, len(ps))}
	for n, p := range ps {
		snap.list[n] = p.inst
		snap.by[p.s] = p.inst
	}
	s.snap.Store(snap)
	if same && !statusChange(prev, ps) {
		return false
	}
	s.seq++
	s.strs, s.err = strs, nil
	return true
}

// materialChange reports whether the instances differ in anything but their
// heartbeat time.
func materialChange(old []Instance, ps []pair) bool {
	if len(old) != len(ps) {
		return true
	}
	for n, p := range ps {
		a, b := old[n], p.inst
		if a.InstanceID != b.InstanceID || a.ServiceName != b.ServiceName || a.Version != b.Version ||
			a.Status != b.Status || a.StickyActiveGroup != b.StickyActiveGroup || !maps.Equal(a.Metadata, b.Metadata) {
			return true
		}
	}
	return false
}

// statusChange reports whether an instance of an unchanged set changed
// status.
func statusChange(old []Instance, ps []pair) bool {
	for n, p := range ps {
		if old[n].Status != p.inst.Status {
			return true
		}
	}
	return false
}

func byKey(a, b Change) int { return strings.Compare(a.Key, b.Key) }

// fold applies one record to entries and returns the change it made, if
// any. Keys of other services, or outside the layout, change nothing. A
// removal of a key not held changes nothing. A record that cannot be
// decoded, or whose service or instance differs from its key's, is skipped
// (ChangeSkipped, with the cause) and drops what entries held under the key.
func (c *stateConfig) fold(entries map[string]*entry, r record) (Change, bool) {
	instID, ours := c.layout.match(c.service, r.key)
	if !ours {
		return Change{}, false
	}
	old := entries[r.key]
	if r.op != ChangeUpdated {
		if old == nil {
			return Change{}, false
		}
		delete(entries, r.key)
		return Change{Kind: r.op, Key: r.key, Instance: old.inst, Revision: r.rev}, true
	}
	inst, err := DecodeInstance(r.data)
	if err == nil && (inst.ServiceName != c.service || inst.InstanceID != instID) {
		err = &RecordError{Err: fmt.Errorf("%w: key %s holds %s/%s", ErrKeyMismatch, r.key, inst.ServiceName, inst.InstanceID)}
	}
	if err != nil {
		ch := Change{Kind: ChangeSkipped, Key: r.key, Revision: r.rev, Err: err}
		if old != nil {
			ch.Instance = old.inst
			delete(entries, r.key)
		}
		return ch, true
	}
	kind := ChangeUpdated
	if old == nil {
		kind = ChangeAdded
	}
	entries[r.key] = &entry{inst: inst, rev: r.rev, seen: r.seen}
	return Change{Kind: kind, Key: r.key, Instance: inst, Revision: r.rev}, true
}

// load collects a full set — the initial values of a fresh watch, or a
// listing — apart from the state, until state.replace makes it current.
// Records are decoded as they are added; keys of other services are
// ignored. It only reads its state's configuration, so a feed may fill it
// without the state's lock.
type load struct {
	cfg         *stateConfig
	entries     map[string]*entry
	removed     map[string]record // keys whose latest record is a removal
	skipped     []Change
	skippedKeys map[string]bool // keys whose latest record was skipped
}

func (s *state) newLoad() *load {
	return &load{cfg: &s.cfg, entries: map[string]*entry{}, removed: map[string]record{}, skippedKeys: map[string]bool{}}
}

// add folds one record of the full set, in the order the feed read them (a
// key read twice keeps its latest record).
func (l *load) add(r record) {
	if _, ours := l.cfg.layout.match(l.cfg.service, r.key); !ours {
		return
	}
	delete(l.removed, r.key)
	delete(l.skippedKeys, r.key)
	if r.op != ChangeUpdated {
		l.removed[r.key] = r
	}
	c, ok := l.cfg.fold(l.entries, r)
	if ok && c.Kind == ChangeSkipped {
		c.Instance = Instance{} // state.replace says what it drops
		l.skipped = append(l.skipped, c)
		l.skippedKeys[r.key] = true
	}
}

package natskv

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unique"

	"github.com/go-kit/kit/sd"
)

// This file is the registry's state, apart from any transport: what one
// service's entries are, which of them are offered, and when subscribers are
// told. The watch (watcher.go) and polling (poll.go) only feed it records;
// it can be driven and tested without a server (state_test.go).
//
// It has two levels. A book is one service's records, decoded once, held
// once: what the feed of that service knows. A state is one Instancer's view
// of a book: its settings (formatter, standby, staleness), the set it
// offers, and the events it has published. A watch on a bucket keeps one
// book per service it follows and any number of states over each; a record
// is folded into the book once and every state over it re-publishes.
//
// Neither is safe for concurrent use: their feeder serialises the
// operations (the watcher's lock, or a polling Instancer's). Only
// state.snapshot may be called concurrently with them.

// record is one value of one key, as a feed saw it: a message of the watch,
// a reply of a direct get, or an entry of a listing.
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
	strict         bool          // records decoded as the AegisSDK reader does (WithStrictRecords)
	// guardShare: staleness removes nothing while more than this share of
	// the live instances would go stale at once (WithStaleGuard); 0: no
	// guard.
	guardShare float64
}

// guardMin is the fewest instances going stale together that can engage
// the mass-removal guard: one instance going silent is a crash, not a
// registry failure.
const guardMin = 2

// guardWindow is how close to the staleness threshold an instance's last
// write must be to count as going stale "at the same moment" as one past
// it: a third of staleAfter, about one heartbeat with the default TTL of
// three heartbeats (writes of a fleet are spread over one heartbeat).
func guardWindow(staleAfter time.Duration) time.Duration { return staleAfter / 3 }

// guardChange is a change of the mass-removal guard an update reports.
type guardChange struct {
	engaged bool
	reason  string
	held    int // instances kept that staleness would have removed
}

// update is what one operation on a state did: the changes to report (to
// count, and to tell WithChangeFunc), in order, and whether a new event is
// due to subscribers (state.event has it).
type update struct {
	changes []Change
	publish bool
	guard   *guardChange // the mass-removal guard engaged or disengaged
}

// entry is one decoded record. It is never modified once stored: a new
// write is a new entry, so states and snapshots may hold it.
type entry struct {
	inst Instance
	rev  uint64
	seen time.Time
}

// snapshot is the published view: immutable once stored, and so are the
// Instances it points to (their Metadata maps are shared by Lookup's callers
// only through copies, and by Describe's read-only). strs is sorted, and
// list[n] is the instance published as strs[n].
type snapshot struct {
	list []*Instance
	strs []string
}

// get is the instance published as str.
func (s *snapshot) get(str string) (*Instance, bool) {
	n, ok := slices.BinarySearch(s.strs, str)
	if !ok {
		return nil, false
	}
	return s.list[n], true
}

// book is one service's records as its feed knows them, shared by every
// state over it.
type book struct {
	service string
	layout  Layout
	strict  bool              // decode as the AegisSDK reader does
	prefix  string            // what the service's keys start with
	entries map[string]*entry // by instance ID (the key less the prefix)
	// skipped: the malformed records held under a key of the service, by
	// key, so that a state joining later is told of them as a fresh watch
	// would tell it.
	skipped map[string]Change
	// live: the entries come from a feed that is up (a full set was loaded
	// and nothing was lost since). Staleness applies only then: while the
	// feed is down, nothing is learnt, so nothing is judged.
	live   bool
	loaded bool  // a full set was loaded once
	err    error // why the feed is down, while !live after a load
	// rebuilt: when a full set last replaced a loaded one (a rebuilt
	// watch, a re-list): the ages it brings are the outage's, not the
	// instances'.
	rebuilt time.Time
}

func newBook(service string, l Layout, strict bool) *book {
	return &book{service: service, layout: l, strict: strict, prefix: l.servicePrefix(service), entries: map[string]*entry{}}
}

// key is the key of an instance ID.
func (b *book) key(id string) string { return b.prefix + id }

// apply folds one live change into the book.
func (b *book) apply(r record) (Change, bool) {
	if r.op != ChangeUpdated && b.skipped != nil {
		delete(b.skipped, r.key)
	}
	c, ok := b.fold(b.entries, r)
	if !ok {
		return c, false
	}
	if c.Kind == ChangeSkipped {
		if b.skipped == nil {
			b.skipped = map[string]Change{}
		}
		b.skipped[c.Key] = Change{Kind: ChangeSkipped, Key: c.Key, Revision: c.Revision, Err: c.Err}
	} else if b.skipped != nil {
		delete(b.skipped, c.Key)
	}
	return c, true
}

// lose says the feed failed.
func (b *book) lose(err error) {
	b.live = false
	b.err = err
}

// current is what a fresh full set of the book would report: its skipped
// records, then an addition per entry, each by key.
func (b *book) current() []Change {
	cs := make([]Change, 0, len(b.skipped)+len(b.entries))
	for _, c := range b.skipped {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, byKey)
	n := len(cs)
	for id, e := range b.entries {
		cs = append(cs, Change{Kind: ChangeAdded, Key: b.key(id), Instance: e.inst, Revision: e.rev})
	}
	slices.SortFunc(cs[n:], byKey)
	return cs
}

// replace makes a full set the book — the initial values of a fresh watch, a
// direct get, or a poll's listing — and reports what differs from the book
// it replaces, so a rebuilt watch reports the removals it missed. now caps
// the records' times.
func (b *book) replace(l *load, now time.Time) []Change {
	var cs []Change
	for _, c := range l.skipped {
		id := strings.TrimPrefix(c.Key, b.prefix)
		if old := b.entries[id]; old != nil && l.entries[id] == nil {
			c.Instance = old.inst // what we had under that key is dropped
		}
		cs = append(cs, c)
	}
	var diff []Change
	for id, e := range l.entries {
		if e.seen.After(now) {
			e.seen = now
		}
		switch old := b.entries[id]; {
		case old == nil:
			diff = append(diff, Change{Kind: ChangeAdded, Key: b.key(id), Instance: e.inst, Revision: e.rev})
		case old.rev == e.rev:
			l.entries[id] = old // the same write: keep when it reached us, and whether it is stale
		default:
			diff = append(diff, Change{Kind: ChangeUpdated, Key: b.key(id), Instance: e.inst, Revision: e.rev})
		}
	}
	for id, old := range b.entries {
		k := b.key(id)
		if l.entries[id] != nil || l.skippedKeys[k] {
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
	b.entries = l.entries
	b.skipped = nil
	for _, c := range l.skipped {
		if !l.skippedKeys[c.Key] {
			continue // a later record of the key replaced it
		}
		if b.skipped == nil {
			b.skipped = map[string]Change{}
		}
		c.Instance = Instance{}
		b.skipped[c.Key] = c // the key's latest skip
	}
	if b.loaded && !b.live {
		b.rebuilt = now // a lost feed's first full set again
	}
	b.live, b.loaded, b.err = true, true, nil
	return cs
}

// state is one Instancer's view of a book.
type state struct {
	cfg  stateConfig
	book *book
	// stale: the entries judged stale, by instance ID. An entry written
	// again is a new entry, not stale.
	stale map[string]*entry

	snap atomic.Pointer[snapshot]

	// The last event published. seq counts events (0: none yet); strs is
	// the last set published, kept while err says the feed is lost.
	seq  uint64
	strs []string
	err  error

	// The mass-removal guard: engaged since guardSince, for guardReason.
	guardOn     bool
	guardSince  time.Time
	guardReason string
}

// guarded reports whether the mass-removal guard is engaged.
func (s *state) guarded() bool { return s.guardOn }

// newState is a state over a book of its own.
func newState(cfg stateConfig) *state {
	return newView(newBook(cfg.service, cfg.layout, cfg.strict), cfg)
}

// newView is a state over b, which may be shared. Until joined or fed it
// has published nothing.
func newView(b *book, cfg stateConfig) *state {
	s := &state{cfg: cfg, book: b}
	s.snap.Store(&snapshot{})
	return s
}

// snapshot is the published view. Safe to call at any time.
func (s *state) snapshot() *snapshot { return s.snap.Load() }

// hasSet reports whether a set was ever published.
func (s *state) hasSet() bool { return s.strs != nil }

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

// apply folds one live change into the book and re-publishes.
func (s *state) apply(r record) update {
	c, ok := s.book.apply(r)
	if !ok {
		return update{}
	}
	return s.changed([]Change{c})
}

// changed re-publishes after live changes to the book.
func (s *state) changed(cs []Change) update {
	return update{changes: cs, publish: s.book.live && s.publish(false)}
}

// replace makes a full set the book's and re-publishes. It publishes unless
// the set is the same as last published; after a lost feed, or the first
// time, always.
func (s *state) replace(l *load, now time.Time) update {
	return s.reloaded(s.book.replace(l, now), now)
}

// reloaded re-publishes after a full set replaced the book, cs being what
// it changed.
func (s *state) reloaded(cs []Change, now time.Time) update {
	stale, g := s.markStale(now)
	cs = append(cs, stale...)
	return update{changes: cs, publish: s.publish(s.seq == 0 || s.err != nil), guard: g}
}

// joined starts a state over a book that may already hold a full set: it
// is told what a fresh watch would tell it, and publishes the set. A book
// whose feed is down gives the set it holds; the next full set is
// published whatever it is.
func (s *state) joined(now time.Time) update {
	if !s.book.loaded {
		return update{}
	}
	u := s.reloaded(s.book.current(), now)
	if !s.book.live {
		s.err = s.book.err
	}
	return u
}

// tick judges staleness at now: entries whose last write is older than
// staleAfter stop being offered.
func (s *state) tick(now time.Time) update {
	if s.cfg.staleAfter <= 0 || !s.book.live {
		return update{}
	}
	cs, g := s.markStale(now)
	if len(cs) == 0 {
		return update{guard: g}
	}
	return update{changes: cs, publish: s.publish(false), guard: g}
}

// lost says the feed failed: subscribers get the error once per outage and
// keep their last set; nothing goes stale until a full set is loaded again.
func (s *state) lost(err error) update {
	s.book.lose(err)
	return s.failed(err)
}

// failed tells the state its book's feed failed.
func (s *state) failed(err error) update {
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
// It is the one place staleness removes instances, and so where the
// mass-removal guard (WithStaleGuard) holds them: when the registry itself
// looks unhealthy — more than guardShare of the live instances going stale
// at once (their last writes within guardWindow of each other's threshold),
// or a full set that just replaced a lost feed's — nothing goes stale. The
// guard holds for at most staleAfter from when it engaged; then staleness
// applies again, so that a fleet that really died is dropped in the end.
// Explicit deletes and expiry markers are not staleness: they remove at
// once, guard or not. g reports the guard engaging or disengaging.
func (s *state) markStale(now time.Time) (cs []Change, g *guardChange) {
	if s.cfg.staleAfter <= 0 || !s.book.live {
		return nil, nil
	}
	// The first set is judged as it is: records already old when first
	// seen are not a fleet that stopped at once.
	if reason, held := s.guardReasonAt(now); reason != "" && s.seq > 0 {
		if !s.guardOn {
			s.guardOn, s.guardSince, s.guardReason = true, now, reason
			g = &guardChange{engaged: true, reason: reason, held: held}
		}
		if now.Sub(s.guardSince) <= s.cfg.staleAfter {
			return nil, g
		}
		// Held long enough: judge staleness again, guard still reported
		// engaged until the registry looks healthy.
	} else if s.guardOn {
		s.guardOn = false
		g = &guardChange{reason: s.guardReason}
	}
	for id, e := range s.book.entries {
		stale := now.Sub(e.seen) > s.cfg.staleAfter
		was := s.stale[id] == e
		switch {
		case stale && !was:
			if s.stale == nil {
				s.stale = map[string]*entry{}
			}
			s.stale[id] = e
			cs = append(cs, Change{Kind: ChangeStale, Key: s.book.key(id), Instance: e.inst, Revision: e.rev})
		case !stale && was:
			delete(s.stale, id)
		}
	}
	for id, e := range s.stale {
		if s.book.entries[id] != e {
			delete(s.stale, id) // rewritten or removed
		}
	}
	slices.SortFunc(cs, byKey)
	return cs, g
}

// guardReasonAt says why the mass-removal guard should hold staleness at
// now ("" when it should not), and how many instances it would keep.
func (s *state) guardReasonAt(now time.Time) (reason string, held int) {
	if s.cfg.guardShare <= 0 {
		return "", 0
	}
	window := guardWindow(s.cfg.staleAfter)
	live, going, soon := 0, 0, 0
	for id, e := range s.book.entries {
		if s.stale[id] == e {
			continue // already stale: not live
		}
		live++
		switch age := now.Sub(e.seen); {
		case age > s.cfg.staleAfter:
			going++
		case age > s.cfg.staleAfter-window:
			soon++
		}
	}
	if going == 0 {
		return "", 0
	}
	if !s.book.rebuilt.IsZero() && now.Sub(s.book.rebuilt) <= window {
		return "registry watch rebuilt", going
	}
	if n := going + soon; n >= guardMin && float64(n) > s.cfg.guardShare*float64(live) {
		return fmt.Sprintf("%d of %d live instances going stale at once", n, live), going
	}
	return "", 0
}

type pair struct {
	s    string
	inst *Instance
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
	ps := make([]pair, 0, len(s.book.entries))
	for id, e := range s.book.entries {
		if (s.stale != nil && s.stale[id] == e) || !e.inst.Healthy() || (s.cfg.excludeStandby && e.inst.Status == StatusStandby) {
			continue
		}
		str := s.cfg.format(e.inst)
		if str == "" {
			continue
		}
		ps = append(ps, pair{str, &e.inst})
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
	snap := &snapshot{list: make([]*Instance, len(ps)), strs: strs}
	for n, p := range ps {
		snap.list[n] = p.inst
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
func materialChange(old []*Instance, ps []pair) bool {
	if len(old) != len(ps) {
		return true
	}
	for n, p := range ps {
		a, b := old[n], p.inst
		if a == b {
			continue
		}
		if a.InstanceID != b.InstanceID || a.ServiceName != b.ServiceName || a.Version != b.Version ||
			a.Status != b.Status || a.StickyActiveGroup != b.StickyActiveGroup || !maps.Equal(a.Metadata, b.Metadata) {
			return true
		}
	}
	return false
}

// statusChange reports whether an instance of an unchanged set changed
// status.
func statusChange(old []*Instance, ps []pair) bool {
	for n, p := range ps {
		if old[n].Status != p.inst.Status {
			return true
		}
	}
	return false
}

func byKey(a, b Change) int { return strings.Compare(a.Key, b.Key) }

// fold applies one record to entries (by instance ID) and returns the
// change it made, if any. Keys of other services, or outside the layout,
// change nothing. A removal of a key not held changes nothing. A record
// that cannot be decoded, or whose service or instance differs from its
// key's, is skipped (ChangeSkipped, with the cause) and drops what entries
// held under the key. A record is decoded here and nowhere else.
func (b *book) fold(entries map[string]*entry, r record) (Change, bool) {
	instID, ours := b.layout.match(b.service, r.key)
	if !ours {
		return Change{}, false
	}
	old := entries[instID]
	if r.op != ChangeUpdated {
		if old == nil {
			return Change{}, false
		}
		delete(entries, instID)
		return Change{Kind: r.op, Key: b.key(instID), Instance: old.inst, Revision: r.rev}, true
	}
	inst, err := decodeInstance(r.data, b.strict)
	if err == nil && (inst.ServiceName != b.service || inst.InstanceID != instID) {
		err = &RecordError{Err: fmt.Errorf("%w: key %s holds %s/%s", ErrKeyMismatch, r.key, inst.ServiceName, inst.InstanceID)}
	}
	if err != nil {
		ch := Change{Kind: ChangeSkipped, Key: b.key(instID), Revision: r.rev, Err: err}
		if old != nil {
			ch.Instance = old.inst
			delete(entries, instID)
		}
		return ch, true
	}
	b.intern(&inst)
	kind := ChangeUpdated
	if old == nil {
		kind = ChangeAdded
	}
	entries[inst.InstanceID] = &entry{inst: inst, rev: r.rev, seen: r.seen}
	return Change{Kind: kind, Key: b.key(instID), Instance: inst, Revision: r.rev}, true
}

// intern makes a decoded record share the strings every record of the
// service repeats: its service name is the book's, its status and version
// the canonical copies. Only the record's own strings stay its own.
func (b *book) intern(in *Instance) {
	in.ServiceName = b.service
	switch in.Status {
	case StatusActive:
		in.Status = StatusActive
	case StatusStandby:
		in.Status = StatusStandby
	case StatusUnhealthy:
		in.Status = StatusUnhealthy
	}
	in.Version = unique.Make(in.Version).Value()
}

// load collects a full set — the initial values of a fresh watch, a direct
// get, or a listing — apart from the book, until book.replace makes it
// current. Records are decoded as they are added; keys of other services
// are ignored. It only reads its book's service and layout, which never
// change, so a feed may fill it without the book's lock.
type load struct {
	b           *book
	entries     map[string]*entry // by instance ID
	removed     map[string]record // by key: keys whose latest record is a removal
	skipped     []Change
	skippedKeys map[string]bool // keys whose latest record was skipped
	maxRev      uint64          // the highest revision added
}

func (b *book) newLoad() *load {
	return &load{b: b, entries: map[string]*entry{}, removed: map[string]record{}, skippedKeys: map[string]bool{}}
}

// newLoad is a load for the state's book.
func (s *state) newLoad() *load { return s.book.newLoad() }

// add folds one record of the full set, in the order the feed read them (a
// key read twice keeps its latest record).
func (l *load) add(r record) {
	id, ours := l.b.layout.match(l.b.service, r.key)
	if !ours {
		return
	}
	l.maxRev = max(l.maxRev, r.rev)
	k := l.b.key(id) // the load's own copy: r.key may be part of a larger string
	delete(l.removed, k)
	delete(l.skippedKeys, k)
	if r.op != ChangeUpdated {
		r.key, r.data = k, nil
		l.removed[k] = r
	}
	c, ok := l.b.fold(l.entries, r)
	if ok && c.Kind == ChangeSkipped {
		c.Instance = Instance{} // book.replace says what it drops
		l.skipped = append(l.skipped, c)
		l.skippedKeys[k] = true
	}
}

package registry

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

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// This file is the registry's state, apart from any transport: what one
// service's entries are, which of them are offered, and when subscribers are
// told. A feed (natskv's watch or polling, or Judge) only gives it records.
//
// It has two levels. A Book is one service's records, decoded once, held
// once: what the feed of that service knows. A State is one Instancer's view
// of a Book: its settings (formatter, standby, staleness), the set it
// offers, and the events it has published. A watch on a bucket keeps one
// Book per service it follows and any number of States over each; a record
// is folded into the Book once and every State over it re-publishes.
//
// Neither is safe for concurrent use: their feeder serialises the
// operations (the watch's lock, or a polling Instancer's). Book.Decode and
// State.Snapshot may be called concurrently with them: a record is decoded
// before the feeder takes its lock, so no one waits on a decode but the
// feed that carries it.

// Msg is one value of one key, as a feed saw it: a message of the watch, a
// reply of a direct get, or an entry of a listing.
type Msg struct {
	Key string
	// Op is ChangeUpdated for a put; ChangeDeleted, ChangePurged or
	// ChangeExpired for a removal (a delete, a purge, an expiry marker).
	Op   ChangeKind
	Data []byte
	Rev  uint64
	// Seen is when the write reached us (live changes) or the server (the
	// values of a full set: their age counts towards staleness).
	Seen time.Time

	// What Book.Decode made of it.
	decoded bool
	id      string // the instance part of the key
	ours    bool   // a key of the book's service
	inst    Instance
	err     error
}

// StateConfig is what a State is told of its Instancer's settings.
type StateConfig struct {
	Service        string
	Layout         Layout
	Format         func(Instance) string // the published string; "" leaves the instance out
	ExcludeStandby bool
	StaleAfter     time.Duration // ≤ 0: nothing goes stale
	Strict         bool          // records decoded as the AegisSDK reader does
	// GuardShare: staleness removes nothing while more than this share of
	// the live instances would go stale at once; 0: no guard.
	GuardShare float64
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

// GuardChange is a change of the mass-removal guard an update reports.
type GuardChange struct {
	Engaged bool
	Reason  string
	Held    int // instances kept that staleness would have removed
}

// Update is what one operation on a State did: the changes to report (to
// count, and to tell a change func), in order, and whether a new event is
// due to subscribers (State.Event has it).
type Update struct {
	Changes []Change
	Publish bool
	Guard   *GuardChange // the mass-removal guard engaged or disengaged
}

// entry is one decoded record. It is never modified once stored: a new
// write is a new entry, so states and snapshots may hold it.
type entry struct {
	inst Instance
	rev  uint64
	seen time.Time
}

// Snapshot is the published view: immutable once stored, and so are the
// Instances it points to. Strs is sorted, and List[n] is the instance
// published as Strs[n].
type Snapshot struct {
	List []*Instance
	Strs []string
}

// Get is the instance published as str.
func (s *Snapshot) Get(str string) (*Instance, bool) {
	n, ok := slices.BinarySearch(s.Strs, str)
	if !ok {
		return nil, false
	}
	return s.List[n], true
}

// Book is one service's records as its feed knows them, shared by every
// State over it.
type Book struct {
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

// NewBook is an empty book of service's records.
func NewBook(service string, l Layout, strict bool) *Book {
	return &Book{service: service, layout: l, strict: strict, prefix: l.ServicePrefix(service), entries: map[string]*entry{}}
}

// Loaded reports whether a full set was ever loaded.
func (b *Book) Loaded() bool { return b.loaded }

// Live reports whether the book's feed is up.
func (b *Book) Live() bool { return b.live }

// NextStale is the earliest time after now at which one of the book's
// entries goes past staleAfter, or before.
func (b *Book) NextStale(now, before time.Time, staleAfter time.Duration) time.Time {
	for _, e := range b.entries {
		if at := e.seen.Add(staleAfter); at.After(now) && at.Before(before) {
			before = at
		}
	}
	return before
}

// key is the key of an instance ID.
func (b *Book) key(id string) string { return b.prefix + id }

// Decode reads m's record as the book's service reads it, once: which
// instance of the service its key names (if any), and its record, checked
// against the key, with the strings every record of the service repeats
// shared. It reads only what never changes in a book, so a feed calls it
// before it takes the lock the book's readers share: one record's cost is
// its own feed's alone. Data is dropped once read.
func (b *Book) Decode(m *Msg) {
	if m.decoded {
		return
	}
	m.decoded = true
	m.id, m.ours = b.layout.Match(b.service, m.Key)
	if !m.ours || m.Op != ChangeUpdated {
		m.Data = nil
		return
	}
	inst, err := Decode(m.Data, b.strict)
	m.Data = nil
	if err == nil && (inst.ServiceName != b.service || inst.InstanceID != m.id) {
		err = &RecordError{Err: fmt.Errorf("%w: key %s holds %s/%s", ErrKeyMismatch, safetext.Quote(m.Key), inst.ServiceName, inst.InstanceID)}
	}
	if err != nil {
		m.err = err
		return
	}
	b.intern(&inst)
	m.inst = inst
}

// intern makes a decoded record share the strings every record of the
// service repeats: its service name is the book's, its status and version
// the canonical copies. Only the record's own strings stay its own.
func (b *Book) intern(in *Instance) {
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

// Apply folds one live change into the book.
func (b *Book) Apply(m Msg) (Change, bool) {
	if m.Op != ChangeUpdated && b.skipped != nil {
		delete(b.skipped, m.Key)
	}
	c, ok := b.fold(b.entries, m)
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

// Lose says the feed failed.
func (b *Book) Lose(err error) {
	b.live = false
	b.err = err
}

// current is what a fresh full set of the book would report: its skipped
// records, then an addition per entry, each by key.
func (b *Book) current() []Change {
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

// Replace makes a full set the book — the initial values of a fresh watch,
// a direct get, or a poll's listing — and reports what differs from the
// book it replaces, so a rebuilt watch reports the removals it missed. now
// caps the records' times.
func (b *Book) Replace(l *Load, now time.Time) []Change {
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
			c.Kind, c.Revision = m.Op, m.Rev // the marker says how it went
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

// State is one Instancer's view of a book.
type State struct {
	cfg  StateConfig
	book *Book
	// stale: the entries judged stale, by instance ID. An entry written
	// again is a new entry, not stale.
	stale map[string]*entry

	snap atomic.Pointer[Snapshot]

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

// Guarded reports whether the mass-removal guard is engaged.
func (s *State) Guarded() bool { return s.guardOn }

// NewState is a State over a book of its own.
func NewState(cfg StateConfig) *State {
	return NewView(NewBook(cfg.Service, cfg.Layout, cfg.Strict), cfg)
}

// NewView is a State over b, which may be shared. Until joined or fed it
// has published nothing.
func NewView(b *Book, cfg StateConfig) *State {
	s := &State{cfg: cfg, book: b}
	s.snap.Store(&Snapshot{})
	return s
}

// Book is the book the state is a view of.
func (s *State) Book() *Book { return s.book }

// Snapshot is the published view. Safe to call at any time.
func (s *State) Snapshot() *Snapshot { return s.snap.Load() }

// HasSet reports whether a set was ever published.
func (s *State) HasSet() bool { return s.strs != nil }

// Seq counts the events published.
func (s *State) Seq() uint64 { return s.seq }

// Event is the last event published: the set, or the error of a lost feed.
// The slice is the caller's.
func (s *State) Event() sd.Event {
	if s.err != nil {
		return sd.Event{Err: s.err}
	}
	return sd.Event{Instances: slices.Clone(s.strs)}
}

// Initial is what a new subscriber gets: the last set published, even while
// the feed is lost (it is the best knowledge there is), or the error when no
// set was ever published. ok is false before the first event.
func (s *State) Initial() (ev sd.Event, ok bool) {
	switch {
	case s.seq == 0:
		return sd.Event{}, false
	case s.strs != nil:
		return sd.Event{Instances: slices.Clone(s.strs)}, true
	}
	return sd.Event{Err: s.err}, true
}

// Apply folds one live change into the book and re-publishes.
func (s *State) Apply(m Msg) Update {
	c, ok := s.book.Apply(m)
	if !ok {
		return Update{}
	}
	return s.Changed([]Change{c})
}

// Changed re-publishes after live changes to the book.
func (s *State) Changed(cs []Change) Update {
	return Update{Changes: cs, Publish: s.book.live && s.publish(false)}
}

// Replace makes a full set the book's and re-publishes. It publishes unless
// the set is the same as last published; after a lost feed, or the first
// time, always.
func (s *State) Replace(l *Load, now time.Time) Update {
	return s.Reloaded(s.book.Replace(l, now), now)
}

// Reloaded re-publishes after a full set replaced the book, cs being what
// it changed.
func (s *State) Reloaded(cs []Change, now time.Time) Update {
	stale, g := s.markStale(now)
	cs = append(cs, stale...)
	return Update{Changes: cs, Publish: s.publish(s.seq == 0 || s.err != nil), Guard: g}
}

// Joined starts a state over a book that may already hold a full set: it
// is told what a fresh watch would tell it, and publishes the set. A book
// whose feed is down gives the set it holds; the next full set is
// published whatever it is.
func (s *State) Joined(now time.Time) Update {
	if !s.book.loaded {
		return Update{}
	}
	u := s.Reloaded(s.book.current(), now)
	if !s.book.live {
		s.err = s.book.err
	}
	return u
}

// Tick judges staleness at now: entries whose last write is older than
// StaleAfter stop being offered.
func (s *State) Tick(now time.Time) Update {
	if s.cfg.StaleAfter <= 0 || !s.book.live {
		return Update{}
	}
	cs, g := s.markStale(now)
	if len(cs) == 0 {
		return Update{Guard: g}
	}
	return Update{Changes: cs, Publish: s.publish(false), Guard: g}
}

// Lost says the feed failed: subscribers get the error once per outage and
// keep their last set; nothing goes stale until a full set is loaded again.
func (s *State) Lost(err error) Update {
	s.book.Lose(err)
	return s.Failed(err)
}

// Failed tells the state its book's feed failed.
func (s *State) Failed(err error) Update {
	if s.seq > 0 && s.err != nil {
		return Update{}
	}
	s.seq++
	s.err = err
	return Update{Publish: true}
}

// markStale flags the entries whose last write is too old and reports those
// that just went stale, by key. An entry that is written again is a new
// entry, not stale.
//
// It is the one place staleness removes instances, and so where the
// mass-removal guard holds them: when the registry itself looks unhealthy —
// more than GuardShare of the live instances going stale at once (their
// last writes within guardWindow of each other's threshold), or a full set
// that just replaced a lost feed's — nothing goes stale. The guard holds for
// at most StaleAfter from when it engaged; then staleness applies again, so
// that a fleet that really died is dropped in the end. Explicit deletes and
// expiry markers are not staleness: they remove at once, guard or not. g
// reports the guard engaging or disengaging.
func (s *State) markStale(now time.Time) (cs []Change, g *GuardChange) {
	if s.cfg.StaleAfter <= 0 || !s.book.live {
		return nil, nil
	}
	// The first set is judged as it is: records already old when first
	// seen are not a fleet that stopped at once.
	if reason, held := s.guardReasonAt(now); reason != "" && s.seq > 0 {
		if !s.guardOn {
			s.guardOn, s.guardSince, s.guardReason = true, now, reason
			g = &GuardChange{Engaged: true, Reason: reason, Held: held}
		}
		if now.Sub(s.guardSince) <= s.cfg.StaleAfter {
			return nil, g
		}
		// Held long enough: judge staleness again, guard still reported
		// engaged until the registry looks healthy.
	} else if s.guardOn {
		s.guardOn = false
		g = &GuardChange{Reason: s.guardReason}
	}
	for id, e := range s.book.entries {
		stale := now.Sub(e.seen) > s.cfg.StaleAfter
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
func (s *State) guardReasonAt(now time.Time) (reason string, held int) {
	if s.cfg.GuardShare <= 0 {
		return "", 0
	}
	window := guardWindow(s.cfg.StaleAfter)
	live, going, soon := 0, 0, 0
	for id, e := range s.book.entries {
		if s.stale[id] == e {
			continue // already stale: not live
		}
		live++
		switch age := now.Sub(e.seen); {
		case age > s.cfg.StaleAfter:
			going++
		case age > s.cfg.StaleAfter-window:
			soon++
		}
	}
	if going == 0 {
		return "", 0
	}
	if !s.book.rebuilt.IsZero() && now.Sub(s.book.rebuilt) <= window {
		return "registry watch rebuilt", going
	}
	if n := going + soon; n >= guardMin && float64(n) > s.cfg.GuardShare*float64(live) {
		return fmt.Sprintf("%d of %d live instances going stale at once", n, live), going
	}
	return "", 0
}

// Health is the state's judgement of one entry: the rule publish applies.
type Health int

const (
	// HealthActive: offered to balancers, and preferred.
	HealthActive Health = iota
	// HealthStandby: offered, STANDBY; balancers pick it only when no
	// ACTIVE instance can take the request.
	HealthStandby
	// HealthExcluded: STANDBY, and the Instancer excludes standby instances.
	HealthExcluded
	// HealthUnhealthy: declared UNHEALTHY by its owner; not offered.
	HealthUnhealthy
	// HealthStale: the last write is older than the stale threshold (and
	// the mass-removal guard does not hold it); not offered.
	HealthStale
)

// String is the judgement in one word: active, standby, excluded,
// unhealthy, stale.
func (h Health) String() string {
	switch h {
	case HealthActive:
		return "active"
	case HealthStandby:
		return "standby"
	case HealthExcluded:
		return "excluded"
	case HealthUnhealthy:
		return "unhealthy"
	case HealthStale:
		return "stale"
	}
	return fmt.Sprintf("Health(%d)", int(h))
}

// Offered reports whether an Instancer publishes the instance.
func (h Health) Offered() bool { return h == HealthActive || h == HealthStandby }

// health is the rule: how the state judges entry e of instance id.
// Staleness comes before the declared status: a stale record says nothing
// current about its owner.
func (s *State) health(id string, e *entry) Health {
	switch {
	case s.stale != nil && s.stale[id] == e:
		return HealthStale
	case !e.inst.Healthy():
		return HealthUnhealthy
	case e.inst.Status == StatusStandby && s.cfg.ExcludeStandby:
		return HealthExcluded
	case e.inst.Status == StatusStandby:
		return HealthStandby
	}
	return HealthActive
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
func (s *State) publish(force bool) bool {
	ps := make([]pair, 0, len(s.book.entries))
	for id, e := range s.book.entries {
		if !s.health(id, e).Offered() {
			continue
		}
		str := s.cfg.Format(e.inst)
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
	prev := s.snap.Load().List
	if same && !materialChange(prev, ps) {
		return false
	}
	snap := &Snapshot{List: make([]*Instance, len(ps)), Strs: strs}
	for n, p := range ps {
		snap.List[n] = p.inst
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

// fold applies one message to entries (by instance ID) and returns the
// change it made, if any. Keys of other services, or outside the layout,
// change nothing. A removal of a key not held changes nothing. A record
// that cannot be decoded, or whose service or instance differs from its
// key's, is skipped (ChangeSkipped, with the cause) and drops what entries
// held under the key. A message not decoded yet (Decode) is decoded here.
func (b *Book) fold(entries map[string]*entry, m Msg) (Change, bool) {
	b.Decode(&m)
	if !m.ours {
		return Change{}, false
	}
	old := entries[m.id]
	if m.Op != ChangeUpdated {
		if old == nil {
			return Change{}, false
		}
		delete(entries, m.id)
		return Change{Kind: m.Op, Key: b.key(m.id), Instance: old.inst, Revision: m.Rev}, true
	}
	if m.err != nil {
		ch := Change{Kind: ChangeSkipped, Key: b.key(m.id), Revision: m.Rev, Err: m.err}
		if old != nil {
			ch.Instance = old.inst
			delete(entries, m.id)
		}
		return ch, true
	}
	kind := ChangeUpdated
	if old == nil {
		kind = ChangeAdded
	}
	entries[m.inst.InstanceID] = &entry{inst: m.inst, rev: m.Rev, seen: m.Seen} // the record's own string, not the subject's
	return Change{Kind: kind, Key: b.key(m.id), Instance: m.inst, Revision: m.Rev}, true
}

// Load collects a full set — the initial values of a fresh watch, a direct
// get, or a listing — apart from the book, until Book.Replace makes it
// current. Keys of other services are ignored. It only reads its book's
// service and layout, which never change, so a feed may fill it without
// the book's lock.
type Load struct {
	b           *Book
	entries     map[string]*entry // by instance ID
	removed     map[string]Msg    // by key: keys whose latest record is a removal
	skipped     []Change
	skippedKeys map[string]bool // keys whose latest record was skipped
	maxRev      uint64          // the highest revision added
}

// NewLoad is an empty full set of the book's service.
func (b *Book) NewLoad() *Load {
	return &Load{b: b, entries: map[string]*entry{}, removed: map[string]Msg{}, skippedKeys: map[string]bool{}}
}

// MaxRev is the highest revision added.
func (l *Load) MaxRev() uint64 { return l.maxRev }

// NewLoad is a load for the state's book.
func (s *State) NewLoad() *Load { return s.book.NewLoad() }

// Add folds one message of the full set, in the order the feed read them (a
// key read twice keeps its latest message). It decodes m if it was not.
func (l *Load) Add(m Msg) {
	l.b.Decode(&m)
	if !m.ours {
		return
	}
	l.maxRev = max(l.maxRev, m.Rev)
	k := l.b.key(m.id) // the load's own copy: m.Key may be part of a larger string
	delete(l.removed, k)
	delete(l.skippedKeys, k)
	if m.Op != ChangeUpdated {
		l.removed[k] = Msg{Key: k, Op: m.Op, Rev: m.Rev, Seen: m.Seen}
	}
	c, ok := l.b.fold(l.entries, m)
	if ok && c.Kind == ChangeSkipped {
		c.Instance = Instance{} // Book.Replace says what it drops
		l.skipped = append(l.skipped, c)
		l.skippedKeys[k] = true
	}
}

package natskv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors an Instancer reports, in sd.Event.Err and from Refresh.
var (
	// ErrWatchLost: the watch on the bucket failed (connection lost,
	// consumer gone, heartbeats missed). Subscribers keep their last set; a
	// fresh full set follows once the watch is rebuilt.
	ErrWatchLost = errors.New("natskv: registry watch lost")
	// ErrStopped is returned by Refresh after Stop.
	ErrStopped = errors.New("natskv: instancer stopped")
)

// ChangeKind says what happened to an instance's entry.
type ChangeKind int

const (
	ChangeAdded   ChangeKind = iota // a record appeared
	ChangeUpdated                   // a record was rewritten (heartbeat, status)
	ChangeDeleted                   // removed cleanly (Deregister)
	ChangePurged                    // purged (by an operator, or a rollup)
	ChangeExpired                   // expired on the server: a crash, on a bucket with markers
	ChangeStale                     // heartbeat too old: a crash, noticed by the Instancer's timer
	ChangeSkipped                   // a malformed record for this service, ignored
)

// String is the kind as it appears in the watch-events metric's "kind"
// attribute.
func (k ChangeKind) String() string {
	switch k {
	case ChangeAdded:
		return "added"
	case ChangeUpdated:
		return "updated"
	case ChangeDeleted:
		return "deleted"
	case ChangePurged:
		return "purged"
	case ChangeExpired:
		return "expired"
	case ChangeStale:
		return "stale"
	case ChangeSkipped:
		return "skipped"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// Change is one change to one key, as told to WithChangeFunc: it is how a
// watcher tells a clean deregistration from a crash.
type Change struct {
	Kind     ChangeKind
	Key      string
	Instance Instance // the record; for removals, the last one known
	Revision uint64
	Err      error // why a ChangeSkipped record was refused
}

type entry struct {
	inst  Instance
	rev   uint64
	seen  time.Time // when the latest write reached us (or the server, for initial values)
	stale bool
}

// snapshot is the published view: immutable once stored.
type snapshot struct {
	list []Instance // healthy, in the order of strs
	strs []string
	by   map[string]Instance
}

// Instancer yields the healthy instances of one service from a registry
// bucket, kept current by a watch (or, WithPolling, by re-listing). It
// implements go-kit's sd.Instancer; Instances and Lookup give the rich view
// (status, metadata) for balancers and for discovery without go-kit.
//
// Every subscriber has a mailbox that holds only the newest event: a slow
// subscriber gets the latest set when it is ready, never a backlog, and never
// holds up the watch or other subscribers.
type Instancer struct {
	b       *Bucket
	service string
	logger  log.Logger
	opts    options
	m       *metrics
	prefix  string // "$KV.<bucket>."

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	refresh  chan chan error

	snap atomic.Pointer[snapshot]

	mu       sync.Mutex
	entries  map[string]*entry
	cur      *session // the watch session whose messages count
	up       bool     // the published state is live (stale checks apply)
	hasLast  bool
	lastStrs []string
	lastErr  error
	subs     map[chan<- sd.Event]*subscriber
	stopped  bool
}

var (
	_ sd.Instancer = (*Instancer)(nil)
	_ lb.Describer = (*Instancer)(nil)
)

// NewInstancer starts discovering service in bucket b and returns at once;
// the first event goes to subscribers when the bucket's current values are
// in. Options: WithLayout, WithFormatter, WithExcludeStandby, WithHeartbeat,
// WithStaleAfter, WithPolling, WithMeterProvider, WithChangeFunc,
// WithWatchHeartbeat, WithRetryWait. Stop it when done.
func NewInstancer(b *Bucket, service string, logger log.Logger, opts ...Option) (*Instancer, error) {
	if b == nil {
		return nil, errors.New("natskv: nil bucket")
	}
	o := newOptions(opts)
	if !o.layout.valid() {
		return nil, fmt.Errorf("natskv: unknown layout %v", o.layout)
	}
	if err := o.layout.validateService(service); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if o.staleAfter == 0 {
		o.staleAfter = staleDefault(b, o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	i := &Instancer{
		b:       b,
		service: service,
		logger:  log.With(logger, "component", "natskv.Instancer", "service", service),
		opts:    o,
		prefix:  "$KV." + b.Name() + ".",
		ctx:     ctx,
		cancel:  cancel,
		refresh: make(chan chan error),
		entries: map[string]*entry{},
		subs:    map[chan<- sd.Event]*subscriber{},
	}
	i.snap.Store(&snapshot{by: map[string]Instance{}})
	i.m = newMetrics(o.meter, service, func() int64 { return int64(len(i.snap.Load().list)) })
	i.wg.Add(2)
	if o.polling {
		go i.pollLoop()
	} else {
		go i.watchLoop()
	}
	go i.staleLoop()
	return i, nil
}

// staleDefault is 3 heartbeats; with expiry markers, rounded up to whole
// seconds (the server's TTL unit) plus one, so the server's expiry comes
// first.
func staleDefault(b *Bucket, o options) time.Duration {
	d := 3 * o.heartbeat
	if b.caps.Markers {
		d = (d+time.Second-1)/time.Second*time.Second + time.Second
	}
	return d
}

// Service is the service this Instancer discovers.
func (i *Instancer) Service() string { return i.service }

// Register implements sd.Instancer. The current set (if the initial values are
// in) is queued for ch at once; Register never blocks on ch.
func (i *Instancer) Register(ch chan<- sd.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped || i.subs[ch] != nil {
		return
	}
	s := newSubscriber(ch)
	i.subs[ch] = s
	switch {
	case i.hasLast && i.lastStrs != nil:
		// The last good set, even while the watch is down: it is the best
		// knowledge there is.
		s.offer(sd.Event{Instances: slices.Clone(i.lastStrs)})
	case i.hasLast:
		s.offer(sd.Event{Err: i.lastErr})
	}
	go s.run()
}

// Deregister implements sd.Instancer. When it returns nothing more is sent on
// ch, so the caller may close it.
func (i *Instancer) Deregister(ch chan<- sd.Event) {
	i.mu.Lock()
	s := i.subs[ch]
	delete(i.subs, ch)
	i.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// Stop implements sd.Instancer: it ends the watch and every subscriber's
// delivery and waits for them. Idempotent.
func (i *Instancer) Stop() {
	i.stopOnce.Do(func() {
		i.cancel()
		i.wg.Wait()
		i.m.close()
		i.mu.Lock()
		i.stopped = true
		subs := i.subs
		i.subs = map[chan<- sd.Event]*subscriber{}
		i.mu.Unlock()
		for _, s := range subs {
			s.stop()
		}
	})
}

// Instances returns the healthy instances, in the order of the instance
// strings last published in sd.Event.Instances. The snapshot is updated before
// each event is sent, so a subscriber reading it on receipt sees at least that
// event's set. The slice is the caller's.
func (i *Instancer) Instances() []Instance {
	s := i.snap.Load()
	out := make([]Instance, len(s.list))
	for n, in := range s.list {
		out[n] = in.Clone()
	}
	return out
}

// Lookup returns the healthy instance published as instance (a string from
// sd.Event.Instances, as the formatter made it).
func (i *Instancer) Lookup(instance string) (Instance, bool) {
	in, ok := i.snap.Load().by[instance]
	if !ok {
		return Instance{}, false
	}
	return in.Clone(), true
}

// Describe implements lb.Describer: an lb.EndpointSet over this Instancer
// learns each instance's status and metadata with no wiring. Standby is true
// for a STANDBY record; Metadata is the record's own map, shared, not copied:
// a published record is never modified (each record is decoded into fresh
// maps, and the Instancer replaces records, never edits them), and callers
// must not modify it either. ok is false for an instance not in the
// published set.
func (i *Instancer) Describe(instance string) (lb.Attributes, bool) {
	in, ok := i.snap.Load().by[instance]
	if !ok {
		return lb.Attributes{}, false
	}
	return lb.Attributes{Standby: in.Status == StatusStandby, Metadata: in.Metadata}, true
}

// Refresh forces a re-list (polling mode) or a rebuilt watch, and returns
// when the new full set is in. It is how a caller invalidates the view after
// failed calls.
func (i *Instancer) Refresh(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case i.refresh <- reply:
	case <-i.ctx.Done():
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-i.ctx.Done():
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// --- state -----------------------------------------------------------------

// opOf reads the KV operation of a message: a put, a clean delete, a purge,
// or a server-side expiry (a limit marker).
func opOf(h nats.Header) ChangeKind {
	if len(h) == 0 {
		return ChangeUpdated
	}
	switch h.Get("KV-Operation") {
	case "DEL":
		return ChangeDeleted
	case "PURGE":
		return ChangePurged
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge":
		return ChangeExpired
	case "Purge":
		return ChangePurged
	case "Remove":
		return ChangeDeleted
	}
	return ChangeUpdated
}

// apply folds one KV message into entries and returns the change it made,
// if any. The lock is held.
func (i *Instancer) apply(entries map[string]*entry, key string, op ChangeKind, data []byte, rev uint64, seen time.Time) (Change, bool) {
	instID, ours := i.opts.layout.match(i.service, key)
	if !ours {
		return Change{}, false
	}
	old := entries[key]
	if op != ChangeUpdated { // a removal
		if old == nil {
			return Change{}, false
		}
		delete(entries, key)
		return Change{Kind: op, Key: key, Instance: old.inst, Revision: rev}, true
	}
	inst, err := DecodeInstance(data)
	if err == nil && (inst.ServiceName != i.service || inst.InstanceID != instID) {
		err = &RecordError{Err: fmt.Errorf("%w: key %s holds %s/%s", ErrKeyMismatch, key, inst.ServiceName, inst.InstanceID)}
	}
	if err != nil {
		// A record we cannot trust: drop what we had under that key.
		c := Change{Kind: ChangeSkipped, Key: key, Revision: rev, Err: err}
		if old != nil {
			c.Instance = old.inst
			delete(entries, key)
		}
		return c, true
	}
	kind := ChangeUpdated
	if old == nil {
		kind = ChangeAdded
	}
	entries[key] = &entry{inst: inst, rev: rev, seen: seen}
	return Change{Kind: kind, Key: key, Instance: inst, Revision: rev}, true
}

// recordChanges counts changes and tells the change func, outside the lock.
func (i *Instancer) recordChanges(cs []Change) {
	for _, c := range cs {
		i.m.event(c.Kind)
		switch c.Kind {
		case ChangeSkipped:
			i.m.skipped.Add(context.Background(), 1, i.m.set)
			i.logger.Log("key", c.Key, "skipped", c.Err)
		case ChangeStale:
			i.m.stale.Add(context.Background(), 1, i.m.set)
		}
		if i.opts.onChange != nil {
			i.opts.onChange(c)
		}
	}
}

// markStale flags entries whose heartbeat is too old. The lock is held.
func (i *Instancer) markStale(now time.Time) []Change {
	if i.opts.staleAfter <= 0 || !i.up {
		return nil
	}
	var cs []Change
	for k, e := range i.entries {
		stale := now.Sub(e.seen) > i.opts.staleAfter
		if stale && !e.stale {
			cs = append(cs, Change{Kind: ChangeStale, Key: k, Instance: e.inst, Revision: e.rev})
		}
		e.stale = stale
	}
	return cs
}

// materialChange reports whether the instances differ in anything but their
// heartbeat time; heartbeats alone do not replace the snapshot.
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

// statusChange reports whether an instance in an unchanged set changed status.
func statusChange(old []Instance, ps []pair) bool {
	for n, p := range ps {
		if old[n].Status != p.inst.Status {
			return true
		}
	}
	return false
}

type pair struct {
	s    string
	inst Instance
}

// publish recomputes the healthy set and, if it changed (or force), stores
// the snapshot and then queues the event for every subscriber. When only a
// member's status changed (ACTIVE ↔ STANDBY) the same set is sent again; when
// only its version or metadata changed the snapshot is replaced without an
// event. The lock is held.
func (i *Instancer) publish(force bool) {
	ps := make([]pair, 0, len(i.entries))
	for _, e := range i.entries {
		if e.stale || !e.inst.Healthy() || (i.opts.excludeStandby && e.inst.Status == StatusStandby) {
			continue
		}
		s := i.opts.format(e.inst)
		if s == "" {
			continue
		}
		ps = append(ps, pair{s, e.inst})
	}
	slices.SortFunc(ps, func(a, b pair) int {
		return cmp.Or(strings.Compare(a.s, b.s), strings.Compare(a.inst.InstanceID, b.inst.InstanceID))
	})
	ps = slices.CompactFunc(ps, func(a, b pair) bool { return a.s == b.s })
	strs := make([]string, len(ps))
	for n, p := range ps {
		strs[n] = p.s
	}
	same := !force && i.hasLast && i.lastErr == nil && slices.Equal(strs, i.lastStrs)
	prev := i.snap.Load().list
	if same && !materialChange(prev, ps) {
		return
	}
	snap := &snapshot{list: make([]Instance, len(ps)), strs: strs, by: make(map[string]Instance, len(ps))}
	for n, p := range ps {
		snap.list[n] = p.inst
		snap.by[p.s] = p.inst
	}
	i.snap.Store(snap)
	// A member turning STANDBY or back to ACTIVE is news to balancers that
	// prefer ACTIVE instances, yet sd.Event has no room for it: the set of
	// strings repeats. Repeating it is harmless to go-kit subscribers and
	// tells lb.EndpointSet to re-read attributes through Lookup. Version and
	// metadata changes replace the snapshot silently.
	if same && !statusChange(prev, ps) {
		return
	}
	i.hasLast, i.lastStrs, i.lastErr = true, strs, nil
	for _, s := range i.subs {
		s.offer(sd.Event{Instances: slices.Clone(strs)})
	}
}

// fail reports a lost watch or list once per outage. The lock is held.
func (i *Instancer) fail(err error) {
	i.up = false
	if i.hasLast && i.lastErr != nil {
		return
	}
	i.hasLast, i.lastErr = true, err
	for _, s := range i.subs {
		s.offer(sd.Event{Err: err})
	}
}

func (i *Instancer) failWith(err error) {
	i.logger.Log("err", err)
	i.mu.Lock()
	i.fail(err)
	i.mu.Unlock()
}

func (i *Instancer) staleLoop() {
	defer i.wg.Done()
	if i.opts.staleAfter <= 0 {
		return
	}
	t := time.NewTicker(min(max(i.opts.staleAfter/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-i.ctx.Done():
			return
		case now := <-t.C:
			i.mu.Lock()
			cs := i.markStale(now)
			i.mu.Unlock()
			if len(cs) > 0 {
				i.recordChanges(cs)
				i.mu.Lock()
				i.publish(false)
				i.mu.Unlock()
			}
		}
	}
}

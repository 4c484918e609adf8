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

var _ sd.Instancer = (*Instancer)(nil)

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

// --- watch -----------------------------------------------------------------

// session is one consumer on the bucket's stream. Until its initial values
// are in it builds a private map, which then replaces the published state
// whole: after a failure, subscribers get a fresh full set.
type session struct {
	entries  map[string]*entry
	init     bool
	ready    chan struct{}
	lastDseq uint64
	failed   chan error
	cc       jetstream.ConsumeContext
	consumer string
}

func (i *Instancer) watchLoop() {
	defer i.wg.Done()
	var status chan nats.Status
	if nc := i.b.js.Conn(); nc != nil {
		status = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
		defer nc.RemoveStatusListener(status)
	}
	var waiters []chan error // Refresh calls waiting for the next full set
	first := true
	failures := 0
	for {
		if i.ctx.Err() != nil {
			for _, w := range waiters {
				w <- ErrStopped
			}
			return
		}
		if !first {
			i.m.restarts.Add(context.Background(), 1, i.m.set)
		}
		first = false
		if nc := i.b.js.Conn(); nc != nil && !nc.IsConnected() {
			i.waitConnected(status)
			if i.ctx.Err() != nil {
				continue
			}
		}
		s, err := i.startSession()
		if err != nil {
			i.failWith(fmt.Errorf("%w: %w", ErrWatchLost, err))
			// Retry soon (a restarted server's JetStream is up moments
			// after its client port), backing off to retryWait.
			wait := min(25*time.Millisecond<<min(failures, 10), i.opts.retryWait)
			failures++
			select {
			case <-i.ctx.Done():
			case <-time.After(wait):
			case st := <-status:
				if st != nats.CONNECTED {
					i.waitConnected(status)
				}
			case w := <-i.refresh:
				waiters = append(waiters, w)
			}
			continue
		}
		failures = 0
	running:
		for {
			var ready <-chan struct{}
			if len(waiters) > 0 {
				ready = s.ready
			}
			select {
			case <-i.ctx.Done():
				i.stopSession(s, true)
				for _, w := range waiters {
					w <- ErrStopped
				}
				return
			case <-ready:
				for _, w := range waiters {
					w <- nil
				}
				waiters = nil
			case w := <-i.refresh:
				waiters = append(waiters, w)
				i.stopSession(s, true)
				break running
			case err := <-s.failed:
				i.stopSession(s, true)
				i.failWith(fmt.Errorf("%w: %w", ErrWatchLost, err))
				break running
			case st := <-status:
				switch st {
				case nats.CONNECTED:
					// Reconnected, maybe to a restarted server that lost our
					// consumer: rebuild now instead of waiting for
					// heartbeats to go missing.
					i.stopSession(s, true)
					i.failWith(fmt.Errorf("%w: reconnected", ErrWatchLost))
					break running
				case nats.CLOSED:
					i.stopSession(s, false)
					i.failWith(fmt.Errorf("%w: %w", ErrWatchLost, nats.ErrConnectionClosed))
					<-i.ctx.Done()
					for _, w := range waiters {
						w <- ErrStopped
					}
					return
				default:
					i.stopSession(s, false)
					i.failWith(fmt.Errorf("%w: %w", ErrWatchLost, nats.ErrDisconnected))
					i.waitConnected(status)
					break running
				}
			}
		}
	}
}

// waitConnected returns once the connection is up again or the Instancer
// stops. Status events are dropped when a listener lags, so it also polls.
func (i *Instancer) waitConnected(status chan nats.Status) {
	nc := i.b.js.Conn()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if nc == nil || nc.IsConnected() {
			return
		}
		select {
		case <-i.ctx.Done():
			return
		case st := <-status:
			if st == nats.CONNECTED {
				return
			}
		case <-t.C:
		}
	}
}

func (i *Instancer) startSession() (*session, error) {
	s := &session{entries: map[string]*entry{}, ready: make(chan struct{}), failed: make(chan error, 1)}
	i.mu.Lock()
	i.cur = s
	i.mu.Unlock()
	hb := i.opts.watchHeartbeat
	ctx, cancel := context.WithTimeout(i.ctx, max(4*hb, 2*time.Second))
	defer cancel()
	if nc := i.b.js.Conn(); nc != nil {
		// A request made while the connection is down waits out its
		// timeout; give up as soon as the connection drops, so the loop
		// can wait for the reconnect instead.
		watched := make(chan struct{})
		defer func() { cancel(); <-watched }()
		go func() {
			defer close(watched)
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if !nc.IsConnected() {
						cancel()
						return
					}
				}
			}
		}()
	}
	cons, err := i.b.js.CreateConsumer(ctx, i.b.stream(), jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubject:     i.prefix + i.opts.layout.watchFilter(i.service),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: max(20*hb, 10*time.Second),
	})
	if err != nil {
		return nil, err
	}
	info := cons.CachedInfo()
	s.consumer = info.Name
	cc, err := cons.Consume(func(msg jetstream.Msg) { i.handle(s, msg) },
		jetstream.PullHeartbeat(hb),
		jetstream.PullExpiry(max(4*hb, time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			select {
			case s.failed <- err:
			default:
			}
		}))
	if err != nil {
		i.deleteConsumer(s.consumer)
		return nil, err
	}
	s.cc = cc
	if info.NumPending == 0 {
		i.mu.Lock()
		cs := i.finishInit(s)
		i.mu.Unlock()
		i.recordChanges(cs)
	}
	return s, nil
}

func (i *Instancer) stopSession(s *session, deleteConsumer bool) {
	i.mu.Lock()
	if i.cur == s {
		i.cur = nil
	}
	i.mu.Unlock()
	s.cc.Stop()
	select {
	case <-s.cc.Closed():
	case <-time.After(time.Second):
	}
	if deleteConsumer {
		i.deleteConsumer(s.consumer)
	}
}

func (i *Instancer) deleteConsumer(name string) {
	if nc := i.b.js.Conn(); nc == nil || !nc.IsConnected() {
		return // the server drops it after its inactive threshold
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = i.b.js.DeleteConsumer(ctx, i.b.stream(), name)
}

// finishInit makes a session's initial values the published state. The lock
// is held.
func (i *Instancer) finishInit(s *session) []Change {
	if s.init || i.cur != s {
		return nil
	}
	s.init = true
	// Changes relative to what was published before (none on the first
	// session), so a rebuilt watch still reports removals it missed.
	var cs []Change
	for k, e := range s.entries {
		if old, ok := i.entries[k]; !ok {
			cs = append(cs, Change{Kind: ChangeAdded, Key: k, Instance: e.inst, Revision: e.rev})
		} else if old.rev != e.rev {
			cs = append(cs, Change{Kind: ChangeUpdated, Key: k, Instance: e.inst, Revision: e.rev})
		}
	}
	for k, old := range i.entries {
		if _, ok := s.entries[k]; !ok {
			cs = append(cs, Change{Kind: ChangeDeleted, Key: k, Instance: old.inst, Revision: old.rev})
		}
	}
	i.entries = s.entries
	i.up = true
	cs = append(cs, i.markStale(time.Now())...)
	i.publish(i.lastErr != nil || !i.hasLast)
	close(s.ready)
	return cs
}

// handle is the consumer's callback: messages of one session arrive in order
// on one goroutine.
func (i *Instancer) handle(s *session, msg jetstream.Msg) {
	now := time.Now()
	meta, err := msg.Metadata()
	var cs []Change
	i.mu.Lock()
	if i.cur != s {
		i.mu.Unlock()
		return
	}
	if err != nil || meta.Sequence.Consumer != s.lastDseq+1 {
		i.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("delivery gap: consumer sequence %d after %d", meta.Sequence.Consumer, s.lastDseq)
		}
		select {
		case s.failed <- err:
		default:
		}
		return
	}
	s.lastDseq = meta.Sequence.Consumer
	key := strings.TrimPrefix(msg.Subject(), i.prefix)
	op := opOf(msg.Headers())
	if !s.init {
		seen := meta.Timestamp
		if seen.After(now) {
			seen = now
		}
		if c, ok := i.apply(s.entries, key, op, msg.Data(), meta.Sequence.Stream, seen); ok && c.Kind == ChangeSkipped {
			cs = append(cs, c) // other initial changes are reported by finishInit
		}
		if meta.NumPending == 0 {
			cs = append(cs, i.finishInit(s)...)
		}
		i.mu.Unlock()
		i.recordChanges(cs)
		return
	}
	c, ok := i.apply(i.entries, key, op, msg.Data(), meta.Sequence.Stream, now)
	i.mu.Unlock()
	if !ok {
		return
	}
	// The change is told (and counted) before subscribers get the event it
	// causes.
	i.recordChanges([]Change{c})
	i.mu.Lock()
	if i.cur == s {
		i.publish(false)
	}
	i.mu.Unlock()
}

// --- polling ---------------------------------------------------------------

func (i *Instancer) pollLoop() {
	defer i.wg.Done()
	i.relist()
	t := time.NewTicker(i.opts.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-i.ctx.Done():
			return
		case <-t.C:
			i.relist()
		case w := <-i.refresh:
			w <- i.relist()
		}
	}
}

// relist reads the service's current records and makes them the state. On
// failure the cached set stays and subscribers get the error.
func (i *Instancer) relist() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(i.ctx, min(max(i.opts.pollInterval, time.Second), 5*time.Second))
	defer cancel()
	fresh := map[string]*entry{}
	var skipped []Change
	err := func() error {
		w, err := i.b.kv.WatchFiltered(ctx, []string{i.opts.layout.watchFilter(i.service)}, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e, ok := <-w.Updates():
				if !ok {
					return nats.ErrConnectionClosed
				}
				if e == nil {
					return nil
				}
				seen := e.Created()
				if seen.After(start) {
					seen = start
				}
				i.mu.Lock()
				c, ok := i.apply(fresh, e.Key(), ChangeUpdated, e.Value(), e.Revision(), seen)
				i.mu.Unlock()
				if ok && c.Kind == ChangeSkipped {
					skipped = append(skipped, c)
				}
			}
		}
	}()
	i.m.listDur.Record(context.Background(), time.Since(start).Seconds(), i.m.set)
	i.recordChanges(skipped)
	if err != nil {
		if i.ctx.Err() != nil {
			return ErrStopped
		}
		err = fmt.Errorf("natskv: list %s: %w", i.service, err)
		i.failWith(err)
		return err
	}
	s := &session{entries: fresh, ready: make(chan struct{})}
	i.mu.Lock()
	i.cur = s
	cs := i.finishInit(s)
	i.mu.Unlock()
	i.recordChanges(cs)
	return nil
}

// --- subscribers -------------------------------------------------------------

// subscriber is a latest-value mailbox in front of one channel. When the
// subscriber is waiting and nothing is queued or in flight, an event is handed
// over directly; otherwise it replaces whatever is queued and the
// subscriber's goroutine delivers it when the subscriber is ready.
type subscriber struct {
	ch      chan<- sd.Event
	mu      sync.Mutex
	next    sd.Event
	has     bool
	sending bool // the goroutine holds an event it is trying to deliver
	wake    chan struct{}
	done    chan struct{}
	exited  chan struct{}
	once    sync.Once
}

func newSubscriber(ch chan<- sd.Event) *subscriber {
	return &subscriber{ch: ch, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
}

// offer replaces whatever the subscriber has not taken yet. Never blocks.
func (s *subscriber) offer(ev sd.Event) {
	s.mu.Lock()
	if !s.has && !s.sending {
		select {
		case <-s.done:
			s.mu.Unlock()
			return
		case s.ch <- ev: // the subscriber was waiting: no hand-off needed
			s.mu.Unlock()
			return
		default:
		}
	}
	s.next, s.has = ev, true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take moves the queued event, if any, into flight.
func (s *subscriber) take() (sd.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev, ok := s.next, s.has
	s.next, s.has = sd.Event{}, false
	if ok {
		s.sending = true
	}
	return ev, ok
}

func (s *subscriber) delivered() {
	s.mu.Lock()
	s.sending = false
	s.mu.Unlock()
}

func (s *subscriber) run() {
	defer close(s.exited)
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		ev, ok := s.take()
		if !ok {
			continue
		}
	send:
		for {
			select {
			case s.ch <- ev:
				break send
			case <-s.wake:
				// A newer event arrived while the subscriber was busy:
				// deliver that one instead.
				if nev, ok := s.take(); ok {
					ev = nev
				}
			case <-s.done:
				return
			}
		}
		s.delivered()
	}
}

func (s *subscriber) stop() {
	s.once.Do(func() {
		s.mu.Lock() // no direct hand-off after this
		close(s.done)
		s.mu.Unlock()
	})
	<-s.exited
}

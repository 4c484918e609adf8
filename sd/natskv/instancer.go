package natskv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aegis-sdk/kitnats/internal/mailbox"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
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

// Instancer yields the healthy instances of one service from a registry
// bucket, kept current by a watch (or, WithPolling, by re-listing). It
// implements go-kit's sd.Instancer and lb.Describer; Instances and Lookup
// give the whole records (status, metadata) for discovery without go-kit.
//
// Every subscriber has a mailbox that holds only the newest event: a slow
// subscriber gets the latest set when it is ready, never a backlog, and never
// holds up the watch or other subscribers.
type Instancer struct {
	b       *Bucket
	service string
	logger  log.Logger
	opts    instancerOptions
	m       *metrics
	prefix  string // "$KV.<bucket>."

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	refresh  chan chan error

	mu      sync.Mutex
	st      *state   // the entries and what was published: the feeds' only way in
	cur     *session // the watch session whose messages count
	subs    map[chan<- sd.Event]*subscriber
	stopped bool
}

// subscriber is one registered channel behind its latest-value mailbox.
type subscriber struct {
	fwd *mailbox.Forwarder[sd.Event]
	seq uint64 // the state's event last offered to it
}

var (
	_ sd.Instancer = (*Instancer)(nil)
	_ lb.Describer = (*Instancer)(nil)
)

// NewInstancer starts discovering service in bucket b and returns at once;
// the first event goes to subscribers when the bucket's current values are
// in. It takes the Options shared with NewRegistrar (WithLayout,
// WithHeartbeat, WithTTL, WithRetryWait) and its own InstancerOptions. Stop
// it when done.
func NewInstancer(b *Bucket, service string, logger log.Logger, opts ...InstancerOption) (*Instancer, error) {
	o := instancerOptions{commonOptions: defaultCommon(), format: func(i Instance) string { return i.InstanceID }}
	logger, err := configure(b, logger, opts, InstancerOption.applyInstancer, &o, &o.commonOptions)
	if err != nil {
		return nil, err
	}
	if o.polling && o.watchHeartbeat != 0 {
		return nil, invalid("WithWatchHeartbeat", "no watch to beat WithPolling")
	}
	if o.watchHeartbeat == 0 {
		o.watchHeartbeat = DefaultWatchHeartbeat
	}
	if err := o.layout.validateService(service); err != nil {
		return nil, err
	}
	if o.staleAfter == 0 {
		o.staleAfter = staleDefault(b, &o.commonOptions)
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
		st: newState(stateConfig{service: service, layout: o.layout, format: o.format,
			excludeStandby: o.excludeStandby, staleAfter: o.staleAfter}),
		subs: map[chan<- sd.Event]*subscriber{},
	}
	i.m = newMetrics(o.meter, service, func() int64 { return int64(len(i.st.snapshot().list)) })
	i.wg.Add(2)
	if o.polling {
		go i.pollLoop()
	} else {
		go i.watchLoop()
	}
	go i.staleLoop()
	return i, nil
}

// staleDefault is the TTL; on a bucket with markers, rounded up to whole
// seconds (the server's TTL unit) plus one, so the server's expiry comes
// first.
func staleDefault(b *Bucket, o *commonOptions) time.Duration {
	d := o.ttlOrDefault()
	if b.caps.Markers {
		d = wholeSeconds(d) + time.Second
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
	s := &subscriber{fwd: mailbox.Forward(ch), seq: i.st.seq}
	i.subs[ch] = s
	if ev, ok := i.st.initial(); ok {
		s.fwd.Offer(ev)
	}
}

// Deregister implements sd.Instancer. When it returns nothing more is sent on
// ch, so the caller may close it.
func (i *Instancer) Deregister(ch chan<- sd.Event) {
	i.mu.Lock()
	s := i.subs[ch]
	delete(i.subs, ch)
	i.mu.Unlock()
	if s != nil {
		s.fwd.Stop()
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
			s.fwd.Stop()
		}
	})
}

// Instances returns the healthy instances, in the order of the instance
// strings last published in sd.Event.Instances. The snapshot is updated before
// each event is sent, so a subscriber reading it on receipt sees at least that
// event's set. The slice is the caller's.
func (i *Instancer) Instances() []Instance {
	s := i.st.snapshot()
	out := make([]Instance, len(s.list))
	for n, in := range s.list {
		out[n] = in.Clone()
	}
	return out
}

// Lookup returns the healthy instance published as instance (a string from
// sd.Event.Instances, as the formatter made it).
func (i *Instancer) Lookup(instance string) (Instance, bool) {
	in, ok := i.st.snapshot().by[instance]
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
	in, ok := i.st.snapshot().by[instance]
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

// emit reports an update's changes, then offers the state's latest event to
// every subscriber that has not had it. Changes are told outside the lock;
// when two updates race, each subscriber still gets the newest event last.
func (i *Instancer) emit(u update) {
	i.recordChanges(u.changes)
	if !u.publish {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, s := range i.subs {
		if s.seq < i.st.seq {
			s.seq = i.st.seq
			s.fwd.Offer(i.st.event()) // each its own slice
		}
	}
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

// failWith reports a lost watch or list, once per outage.
func (i *Instancer) failWith(err error) {
	i.logger.Log("err", err)
	i.mu.Lock()
	u := i.st.lost(err)
	i.mu.Unlock()
	i.emit(u)
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
			u := i.st.tick(now)
			i.mu.Unlock()
			i.emit(u)
		}
	}
}

package natskv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
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

// Instancer yields the healthy instances of one service from a registry
// bucket, kept current by a watch (or, WithPolling, by re-listing). It
// implements go-kit's sd.Instancer and lb.Describer; Instances and Lookup
// give the whole records (status, metadata) for discovery without go-kit.
//
// An Instancer that watches is a view over the one watch its Bucket keeps
// (see the package documentation): creating one for a service another
// Instancer of the Bucket already watches costs no request, and the records
// are decoded and held once for both.
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

	w        *watcher    // nil WithPolling
	guardOn  atomic.Bool // the stale-guard metric counts this Instancer's guard
	stopOnce sync.Once
	cb       sync.WaitGroup // deliveries of changes in progress

	// mu guards st, subs, stopped and isReady: the watcher's lock, or own
	// (WithPolling).
	mu      *sync.Mutex
	own     sync.Mutex
	st      *registry.State
	stp     atomic.Pointer[registry.State] // st, for readers without the lock
	subs    []*subscriber
	stopped bool
	isReady bool
	ready   chan struct{} // closed when a set is first published
	refusal refusal       // the server refused the watch (or listing)

	// WithPolling
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	refresh chan chan error
}

var (
	_ sd.Instancer = (*Instancer)(nil)
	_ lb.Describer = (*Instancer)(nil)
)

// NewInstancer starts discovering service in bucket b. It returns once the
// service's current set is in — at once when another Instancer of the
// process already watches the service, one request later otherwise — or
// after WithReadyWait (default 2 s), as go-kit's etcd and
// Consul instancers return after their first read: a subscriber registered
// after it returns gets the set before Register returns. When the registry
// cannot be read within the wait it returns all the same, without error,
// and subscribers get the set once it is in; NewInstancerContext fails
// instead. When the NATS server refuses the watch for lack of a permission
// before the set is in, it fails at once with an error matching
// permissions.ErrPermission that names the permission (a
// *permissions.PermissionError). It takes the Options shared with
// NewRegistrar (WithLayout, WithHeartbeat, WithTTL) and its own
// InstancerOptions. Stop it when done.
func NewInstancer(b *Bucket, service string, logger log.Logger, opts ...InstancerOption) (*Instancer, error) {
	i, err := newInstancer(b, service, logger, opts)
	if err != nil {
		return nil, err
	}
	if d := i.opts.readyWait; d > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := i.waitReady(ctx); errors.Is(err, natserr.ErrPermission) {
			i.Stop()
			return nil, fmt.Errorf("natskv: %s: %w", service, err)
		}
	}
	return i, nil
}

// NewInstancerContext is NewInstancer that waits for the service's current
// set as long as ctx allows, and fails when it ends first (the Instancer is
// stopped and the error wraps ctx's) or when the server refuses the watch
// for lack of a permission (the error matches ErrPermission). It ignores
// WithReadyWait.
func NewInstancerContext(ctx context.Context, b *Bucket, service string, logger log.Logger, opts ...InstancerOption) (*Instancer, error) {
	i, err := newInstancer(b, service, logger, opts)
	if err != nil {
		return nil, err
	}
	if err := i.waitReady(ctx); err != nil {
		i.Stop()
		if errors.Is(err, natserr.ErrPermission) {
			return nil, fmt.Errorf("natskv: %s: %w", service, err)
		}
		return nil, fmt.Errorf("natskv: %s: no set before the context ended: %w", service, err)
	}
	return i, nil
}

func newInstancer(b *Bucket, service string, logger log.Logger, opts []InstancerOption) (*Instancer, error) {
	o := instancerOptions{commonOptions: defaultCommon(), format: func(i Instance) string { return i.InstanceID },
		readyWait: -1, guardShare: registry.DefaultGuardShare}
	logger, err := configure(b, logger, opts, InstancerOption.applyInstancer, &o, &o.commonOptions)
	if err != nil {
		return nil, err
	}
	if o.polling && o.watchHeartbeat != 0 {
		return nil, invalid("WithWatchHeartbeat", "no watch to beat WithPolling")
	}
	if o.watchHeartbeat == 0 {
		o.watchHeartbeat = defaultWatchHeartbeat
	}
	if o.readyWait < 0 {
		o.readyWait = defaultReadyWait
	}
	if err := o.layout.reg().ValidateService(service); err != nil {
		return nil, err
	}
	if o.strict == nil {
		strict := o.layout == LayoutAegis
		o.strict = &strict
	}
	o.staleAfter = o.liveness(o.staleAfter).Stale(b.caps.Markers)
	i := &Instancer{
		b:       b,
		service: service,
		logger:  log.With(logger, "component", "natskv.Instancer", "service", service),
		opts:    o,
		ready:   make(chan struct{}),
		refusal: refusal{ch: make(chan struct{})},
	}
	i.m = newMetrics(o.meter, service, func() int64 { return int64(len(i.snapshot().List)) })
	if o.polling {
		i.mu = &i.own
		i.setState(registry.NewState(i.stateConfig()))
		i.ctx, i.cancel = context.WithCancel(context.Background())
		i.refresh = make(chan chan error)
		i.wg.Add(2)
		go i.pollLoop()
		go i.staleLoop()
		return i, nil
	}
	i.w = acquireWatcher(b, &i.opts, logger)
	i.mu = &i.w.mu
	i.w.join(i)
	return i, nil
}

func (i *Instancer) stateConfig() registry.StateConfig {
	format := i.opts.format
	return registry.StateConfig{Service: i.service, Layout: i.opts.layout.reg(),
		Format:         func(r registry.Instance) string { return format(instanceOf(&r)) },
		ExcludeStandby: i.opts.excludeStandby, StaleAfter: i.opts.staleAfter, Strict: *i.opts.strict,
		GuardShare: i.opts.guardShare}
}

func (i *Instancer) setState(st *registry.State) {
	i.st = st
	i.stp.Store(st)
}

// snapshot is the published view. Safe to call at any time.
func (i *Instancer) snapshot() *registry.Snapshot {
	if st := i.stp.Load(); st != nil {
		return st.Snapshot()
	}
	return &registry.Snapshot{}
}

// waitReady waits for the first set: nil when it came, the server's
// refusal of the watch (a *PermissionError) if that came first, or ctx's
// error.
func (i *Instancer) waitReady(ctx context.Context) error {
	select {
	case <-i.ready:
		return nil
	case <-i.refusal.ch:
		select {
		case <-i.ready:
			return nil
		default:
			return i.refusal.err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Register implements sd.Instancer. Once the set is in (when NewInstancer
// returns, normally) Register delivers it before it returns, as go-kit's
// instancers do: it waits for ch's receiver to take it, at most a second
// (go-kit's wait for ever), and on an unbuffered channel sends it a second time, which
// returns only when the receiver has handled the first — so sd.NewEndpointer
// and lb.NewEndpointSet over this Instancer serve their first call at once.
// A receiver that does not come within the wait gets the set when it does,
// as every later event. Registering ch twice does nothing.
func (i *Instancer) Register(ch chan<- sd.Event) {
	i.mu.Lock()
	if i.stopped || slices.ContainsFunc(i.subs, func(s *subscriber) bool { return s.ch == ch }) {
		i.mu.Unlock()
		return
	}
	s := newSubscriber(ch)
	s.seq = i.st.Seq()
	i.subs = append(i.subs, s)
	ev, ok := i.st.Initial()
	if ok {
		s.begin()
	}
	i.mu.Unlock()
	if ok {
		s.handOver(ev)
	}
}

// Deregister implements sd.Instancer. When it returns nothing more is sent on
// ch, so the caller may close it.
func (i *Instancer) Deregister(ch chan<- sd.Event) {
	i.mu.Lock()
	var s *subscriber
	i.subs = slices.DeleteFunc(i.subs, func(x *subscriber) bool {
		if x.ch == ch {
			s = x
			return true
		}
		return false
	})
	i.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// Stop implements sd.Instancer: it ends the Instancer's watch (the shared
// watch of the bucket stops following the service when no other Instancer
// watches it, and stops when none is left) and every subscriber's delivery,
// and waits for them. Idempotent.
func (i *Instancer) Stop() {
	i.stopOnce.Do(func() {
		if i.w == nil {
			i.cancel()
			i.wg.Wait()
		}
		i.mu.Lock()
		i.stopped = true
		subs := i.subs
		i.subs = nil
		if i.w != nil {
			i.w.leaveLocked(i)
		}
		i.mu.Unlock()
		for _, s := range subs {
			s.stop()
		}
		i.cb.Wait()
		if i.guardOn.Swap(false) {
			i.m.guard.Add(context.Background(), -1, i.m.set) // a stopped Instancer holds nothing
		}
		i.m.close()
		if i.w != nil {
			i.w.release()
		}
	})
}

// Instances returns the healthy instances, in the order of the instance
// strings last published in sd.Event.Instances. The snapshot is updated before
// each event is sent, so a subscriber reading it on receipt sees at least that
// event's set. The slice is the caller's.
func (i *Instancer) Instances() []Instance {
	s := i.snapshot()
	out := make([]Instance, len(s.List))
	for n, in := range s.List {
		out[n] = instanceOf(in).clone()
	}
	return out
}

// Lookup returns the healthy instance published as instance (a string from
// sd.Event.Instances, as the formatter made it).
func (i *Instancer) Lookup(instance string) (Instance, bool) {
	in, ok := i.snapshot().Get(instance)
	if !ok {
		return Instance{}, false
	}
	return instanceOf(in).clone(), true
}

// Describe implements lb.Describer: an lb.EndpointSet over this Instancer
// learns each instance's status and metadata with no wiring. Standby is true
// for a STANDBY record; Metadata is the record's own map, shared, not copied:
// a published record is never modified (each record is decoded into fresh
// maps, and the Instancer replaces records, never edits them), and callers
// must not modify it either. ok is false for an instance not in the
// published set.
func (i *Instancer) Describe(instance string) (lb.Attributes, bool) {
	in, ok := i.snapshot().Get(instance)
	if !ok {
		return lb.Attributes{}, false
	}
	return lb.Attributes{Standby: in.Status == registry.StatusStandby, Metadata: in.Metadata}, true
}

// Refresh forces a re-list (polling mode) or a rebuilt watch, and returns
// when the new full set is in. It is how a caller invalidates the view after
// failed calls. A watch is shared: rebuilding it reloads every service the
// process watches on the bucket (subscribers are told only of what changed).
func (i *Instancer) Refresh(ctx context.Context) error {
	i.mu.Lock()
	stopped := i.stopped
	i.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	if i.w != nil {
		return i.w.refreshNow(ctx)
	}
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

// offerLocked offers the state's latest event to every subscriber that has
// not had it. The caller holds i.mu.
func (i *Instancer) offerLocked() {
	for _, s := range i.subs {
		if seq := i.st.Seq(); s.seq < seq {
			s.seq = seq
			s.offer(i.st.Event()) // each its own slice
		}
	}
}

// recordChanges counts changes and tells the change func, outside the lock.
// recordGuard logs and counts the mass-removal guard engaging or
// disengaging.
func (i *Instancer) recordGuard(g *registry.GuardChange) {
	if g == nil {
		return
	}
	if g.Engaged {
		if !i.guardOn.Swap(true) {
			i.m.guard.Add(context.Background(), 1, i.m.set)
		}
		i.logger.Log("stale_guard", "engaged", "reason", g.Reason, "held", g.Held)
		return
	}
	if i.guardOn.Swap(false) {
		i.m.guard.Add(context.Background(), -1, i.m.set)
	}
	i.logger.Log("stale_guard", "disengaged", "reason", g.Reason)
}

func (i *Instancer) recordChanges(cs []registry.Change) {
	for n := range cs {
		c := &cs[n]
		i.m.event(ChangeKind(c.Kind))
		switch c.Kind {
		case registry.ChangeSkipped:
			i.m.skipped.Add(context.Background(), 1, i.m.set)
			i.logger.Log("key", c.Key, "skipped", c.Err)
		case registry.ChangeStale:
			i.m.stale.Add(context.Background(), 1, i.m.set)
		}
		if i.opts.onChange != nil {
			i.opts.onChange(changeOf(c))
		}
	}
}

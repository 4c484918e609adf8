package lb

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/internal/backoff"
	"github.com/aegis-sdk/kitnats/internal/mailbox"
)

// errClosed is what picks and Endpoints return after EndpointSet.Close.
var errClosed = fmt.Errorf("%w (endpoint set closed)", ErrNoInstances)

// Attributes are what a policy needs to know about an instance beyond its
// name. The EndpointSet learns them from its instancer (Describer) or from
// WithAttributes whenever it builds a view.
type Attributes struct {
	// Standby instances take requests only when no ACTIVE (non-standby)
	// instance can: every balancer picks them after the available, untried
	// ACTIVE ones. It mirrors AegisSDK's STANDBY status.
	Standby bool
	// Metadata is what the registry says of the instance beyond its status
	// (a zone, a weight, an address). Policies read it; nobody may modify
	// it, since every view built from the same registry record shares it.
	Metadata map[string]string
	// Revision changes whenever the registry sees a new write of the
	// instance's record (a heartbeat, a re-registration); 0 when unknown.
	// An instance the set took out as gone (no responders on its own
	// subject) comes back as soon as its Revision changes.
	Revision uint64
}

// Describer is implemented by an sd.Instancer that knows more of an instance
// than the string it publishes (kitnats' natskv.Instancer does). An
// EndpointSet over such an instancer asks it for each instance's Attributes
// whenever it builds a view, so STANDBY and metadata reach every policy with
// no wiring; WithAttributes overrides it. ok is false for an instance the
// describer does not know (it then counts as ACTIVE with no metadata).
//
// Describe is called from the set's goroutine while it builds a view: it
// must be fast and must not call back into the set.
type Describer interface {
	Describe(instance string) (attrs Attributes, ok bool)
}

// EndpointSet is go-kit's sd.Endpointer that remembers which instance each
// endpoint reaches. It subscribes to an sd.Instancer, builds one endpoint per
// instance with an sd.Factory, retries instances whose factory failed, and
// on every change publishes an immutable View, from which each balancer over
// the set builds its picker at once (Subscribe). An instance that leaves is
// offered no more at once; its closer is closed when its calls in flight
// have returned (within 30 s), so closing a connection cuts no call short.
//
// Every endpoint is wrapped once, when it is built, to count requests in
// flight and keep a moving average of latency; policies may weigh them
// (Instance.InFlight, Instance.Latency) and Stats reports them.
//
// The set also counts its unavailable instances (View.Unavailable) and,
// when more than a share of them are unavailable, enters panic mode
// (WithPanicThreshold), in which the shared rules count every instance as
// available. An instance known to be gone is not merely unavailable: when
// a call's error answers Gone() true (natsrpc's no responders on the
// instance's own subject) while other instances answer, and most instances
// are not failing so at once, the set leaves it out of its views — panic
// mode or not — until its Attributes.Revision changes, the instancer
// reports it anew, or a probe (after a second, doubling while it is still
// gone) finds it back. Its endpoint refuses calls meanwhile,
// unsent, with an error that answers Gone, Rejected and Retryable true.
type EndpointSet struct {
	instancer  sd.Instancer
	factory    sd.Factory
	logger     log.Logger
	opts       setOptions
	attributes func(instance string) Attributes // nil: every instance ACTIVE
	retryDelay backoff.Policy

	view   atomic.Pointer[View]
	census *census
	ej     *ejector

	// pubMu orders publications and subscriptions, so every subscriber
	// sees every view after its first, in order. It is held while
	// subscribers build their pickers, never while a factory runs.
	pubMu       sync.Mutex
	subscribers map[*subscription]struct{}

	ch     chan sd.Event
	events *mailbox.Latest[pending] // from the receiver to the worker
	stop   chan struct{}
	wg     sync.WaitGroup
	closer sync.Once

	// mu guards the rest; the worker holds it while it applies an event.
	mu          sync.Mutex
	closed      bool
	current     []string // sorted, deduplicated, owned copy of the last good set
	cache       map[string]*member
	failed      map[string]struct{}
	retryTimer  *time.Timer
	retryStep   int
	err         error // instancer error not yet superseded
	invalidTime *time.Timer

	// The worker's alone: when the next census is due.
	censusTimer *time.Timer
	censusArmed bool
	censusAt    time.Time
	// When the gone rule wants to run again (gone.go); served by the
	// worker, armed under mu.
	goneTimer *time.Timer
}

// pending is what the receiver has taken off the instancer's channel and the
// worker has not applied yet: the newest instance set, and an error newer
// than it. Events merge into it, so a slow factory never makes the
// instancer wait and the worker never replays a backlog.
type pending struct {
	set    []string
	hasSet bool
	err    error
}

type subscription struct{ fn func(*View) }

var _ sd.Endpointer = (*EndpointSet)(nil)

// NewEndpointSet subscribes to instancer and keeps an endpoint per instance
// through factory. A nil logger means no logging. When the instancer sends
// its current instances as it registers the set, as go-kit's instancers do,
// they are in place when NewEndpointSet returns. Call Close when done.
func NewEndpointSet(instancer sd.Instancer, factory sd.Factory, logger log.Logger, options ...EndpointSetOption) *EndpointSet {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	s := &EndpointSet{
		instancer:   instancer,
		factory:     factory,
		logger:      logger,
		opts:        defaultSetOptions(),
		subscribers: map[*subscription]struct{}{},
		ch:          make(chan sd.Event),
		events:      mailbox.NewLatest[pending](),
		stop:        make(chan struct{}),
		cache:       map[string]*member{},
		failed:      map[string]struct{}{},
	}
	for _, o := range options {
		if o != nil {
			must(o.applyEndpointSet(&s.opts))
		}
	}
	s.retryDelay = backoff.Policy{Base: s.opts.retryMin, Cap: s.opts.retryMax}
	s.census = newCensus(&s.opts, logger)
	s.ej = newEjector(logger, s.opts.drainTimeout)
	s.attributes = s.opts.attributes
	if d, ok := instancer.(Describer); ok && s.attributes == nil {
		s.attributes = func(instance string) Attributes {
			attrs, _ := d.Describe(instance)
			return attrs
		}
	}
	// The worker goroutine serves both timers; stopped timers never fire.
	s.retryTimer = time.NewTimer(time.Hour)
	s.retryTimer.Stop()
	s.invalidTime = time.NewTimer(time.Hour)
	s.invalidTime.Stop()
	s.censusTimer = time.NewTimer(time.Hour)
	s.censusTimer.Stop()
	s.goneTimer = time.NewTimer(time.Hour)
	s.goneTimer.Stop()
	s.view.Store(newView(nil, nil, nil, s.census))
	s.census.instrument(&s.opts, s.view.Load)

	// Register in the background and apply what it sends before returning,
	// so a set over a go-kit instancer is ready when it is returned.
	registered := make(chan struct{})
	go func() {
		defer close(registered)
		instancer.Register(s.ch)
	}()
	for done := false; !done; {
		select {
		case ev := <-s.ch:
			s.apply(ev)
		case <-registered:
			done = true
		}
	}

	s.wg.Add(2)
	go s.receive()
	go s.work()
	return s
}

// receive takes events off the instancer's channel at once, so a slow
// factory never blocks the instancer; the worker applies the newest.
func (s *EndpointSet) receive() {
	defer s.wg.Done()
	for {
		select {
		case ev := <-s.ch:
			s.events.Update(func(p pending, _ bool) pending {
				if ev.Err != nil {
					p.err = ev.Err // newer than the set held: applied after it
					return p
				}
				return pending{set: ev.Instances, hasSet: true}
			})
		case <-s.stop:
			return
		}
	}
}

func (s *EndpointSet) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.retryTimer.C:
			s.retry()
		case <-s.invalidTime.C:
			s.invalidate()
		case <-s.census.wake:
			s.censusDue(s.census.lastRun().Add(censusMinGap))
		case <-s.censusTimer.C:
			s.censusArmed = false
			s.runCensus()
		case <-s.ej.wake:
			s.gone()
		case <-s.goneTimer.C:
			s.gone()
		case <-s.events.Ready():
			p, ok := s.events.Take()
			if !ok {
				continue
			}
			if p.hasSet {
				s.apply(sd.Event{Instances: p.set})
			}
			if p.err != nil {
				s.apply(sd.Event{Err: p.err})
			}
		case <-s.stop:
			return
		}
	}
}

// censusDue has the worker take a census at t, or now if t has passed,
// unless one is due sooner.
func (s *EndpointSet) censusDue(t time.Time) {
	if s.censusArmed && !t.Before(s.censusAt) {
		return
	}
	d := time.Until(t)
	if d <= 0 {
		s.censusTimer.Stop()
		s.censusArmed = false
		s.runCensus()
		return
	}
	s.censusTimer.Reset(d)
	s.censusArmed, s.censusAt = true, t
}

// runCensus counts the unavailable instances of the current view, and has
// the next census come censusPeriod later while any is.
func (s *EndpointSet) runCensus() {
	if s.census.run(s.view.Load) > 0 {
		s.censusDue(time.Now().Add(censusPeriod))
	}
}

// gone runs the gone rule (gone.go) on the worker.
func (s *EndpointSet) gone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.armGone(s.judgeGone())
}

// apply handles one instancer event the way go-kit's endpoint cache does.
func (s *EndpointSet) apply(ev sd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if ev.Err != nil {
		s.logger.Log("during", "instancer", "err", ev.Err)
		if s.err == nil && s.opts.invalidate {
			s.invalidTime.Reset(s.opts.invalidateTimeout)
		}
		if s.err == nil {
			s.err = ev.Err
		}
		return
	}
	s.err = nil
	s.invalidTime.Stop()
	// Never touch the caller's slice: sort and deduplicate a copy.
	set := slices.Clone(ev.Instances)
	slices.Sort(set)
	s.current = slices.Compact(set)
	s.sync()
}

// sync makes the cache match s.current: it builds missing endpoints (retrying
// failed ones), publishes a view, and then retires departed ones: their
// closers are closed once their calls in flight return. s.mu is held.
func (s *EndpointSet) sync() {
	want := make(map[string]struct{}, len(s.current))
	for _, name := range s.current {
		want[name] = struct{}{}
	}
	var departed []*member
	for name, m := range s.cache {
		if _, ok := want[name]; !ok {
			delete(s.cache, name)
			departed = append(departed, m)
		}
	}
	clear(s.failed)
	for _, name := range s.current {
		if _, ok := s.cache[name]; ok {
			continue
		}
		ep, closer, err := s.factory(name)
		if err != nil {
			s.logger.Log("instance", name, "during", "factory", "err", err)
			if closer != nil {
				closer.Close()
			}
			s.failed[name] = struct{}{}
			continue
		}
		s.cache[name] = newMember(name, ep, closer, s.census, s.ej)
	}
	if len(s.failed) == 0 {
		s.retryStep = 0
		s.retryTimer.Stop()
	} else {
		s.retryTimer.Reset(s.retryDelay.Equal(s.retryStep))
		s.retryStep++
	}
	s.publish(s.buildView())
	for _, m := range departed {
		m.retire()
	}
}

// buildView makes a view of the cache, less the gone members, with fresh
// attributes. s.mu is held.
func (s *EndpointSet) buildView() *View {
	members := make([]*member, 0, len(s.cache))
	for _, name := range s.current {
		if m, ok := s.cache[name]; ok && !m.gone.Load() {
			members = append(members, m)
		}
	}
	var attrs []Attributes
	if s.attributes != nil {
		attrs = make([]Attributes, len(members))
		for i, m := range members {
			attrs[i] = s.attributes(m.name)
		}
	}
	return newView(members, attrs, nil, s.census)
}

// publish makes v the current view and has every subscriber build from it
// before it returns, so Refresh and Close return with every balancer
// already picking from the new view. s.mu is held.
func (s *EndpointSet) publish(v *View) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	// Counted before anyone picks from it. While an instance is down, the
	// worker takes it from there.
	if s.census.publish(v, s.view.Store) > 0 {
		s.census.poke()
	}
	for sub := range s.subscribers {
		sub.fn(v)
	}
}

// Subscribe calls fn with the set's current view, then with every view the
// set publishes, in order, until cancel is called. A view is published on
// every membership change, factory retry, Refresh, invalidation and on
// Close (an empty view, the last one fn sees).
//
// This is how a balancer made by New builds its pickers as soon as a view
// exists rather than on the next pick; use it too for anything else that
// must follow the set (metrics of its instances, say). fn runs on the goroutine
// that publishes, before the publication returns, while other publications
// wait: it must be quick, and must not call Subscribe, a cancel function,
// Refresh or Close. Cancel may be called more than once.
func (s *EndpointSet) Subscribe(fn func(*View)) (cancel func()) {
	sub := &subscription{fn: fn}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	fn(s.view.Load())
	if s.subscribers == nil { // closed: the view fn just saw was the last
		return func() {}
	}
	s.subscribers[sub] = struct{}{}
	return func() {
		s.pubMu.Lock()
		defer s.pubMu.Unlock()
		delete(s.subscribers, sub)
	}
}

// retry runs on the retry timer: it rebuilds the instances whose factory failed.
func (s *EndpointSet) retry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.failed) == 0 {
		return
	}
	s.sync()
}

// invalidate runs on the invalidation timer, go-kit's InvalidateOnError.
func (s *EndpointSet) invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.err == nil {
		return
	}
	departed := make([]*member, 0, len(s.cache))
	for _, m := range s.cache {
		departed = append(departed, m)
	}
	clear(s.cache)
	clear(s.failed)
	s.retryTimer.Stop()
	s.goneTimer.Stop()
	s.current = nil
	s.publish(newView(nil, nil, errors.Join(ErrNoInstances, s.err), s.census))
	for _, m := range departed {
		m.retire()
	}
}

// Endpoints satisfies go-kit's sd.Endpointer: the endpoints of the current
// instances, sorted by instance like go-kit's. The slice is shared by every
// caller until the next change: do not modify it. After an instancer error
// with WithInvalidateOnError, it returns the instancer's error once the
// timeout has passed.
func (s *EndpointSet) Endpoints() ([]endpoint.Endpoint, error) {
	v := s.view.Load()
	if len(v.all) == 0 && v.err != ErrNoInstances {
		return nil, v.err
	}
	return v.endpoints, nil
}

// View returns the set's current view: what a balancer over the set picks
// from now.
func (s *EndpointSet) View() *View { return s.view.Load() }

// Instances returns the instances the set can pick from now, sorted: those
// the instancer reported and whose factory succeeded.
func (s *EndpointSet) Instances() []string {
	v := s.view.Load()
	names := make([]string, len(v.all))
	for i, in := range v.all {
		names[i] = in.name
	}
	return names
}

// Refresh rebuilds the view with fresh attributes (Describer or
// WithAttributes) and retries failed factories. Call it when an instance's
// attributes change without a membership change — an instance going
// STANDBY — if the instancer does not send an event for it (natskv's does).
// It returns once every balancer over the set picks from the new view.
func (s *EndpointSet) Refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.sync()
}

// Close unregisters the set from the instancer, stops its goroutines and
// closes every endpoint. Picks then fail with an error that matches
// ErrNoInstances and says the set is closed. Close may be called
// more than once; every call returns after the first one completed.
func (s *EndpointSet) Close() {
	s.closer.Do(func() {
		// Deregister while the receiver still drains the channel: an
		// instancer may be broadcasting to it under its own lock.
		s.instancer.Deregister(s.ch)
		close(s.stop)
		s.wg.Wait()

		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		s.retryTimer.Stop()
		s.invalidTime.Stop()
		s.censusTimer.Stop()
		s.goneTimer.Stop()
		s.census.close()
		s.publish(newView(nil, nil, errClosed, s.census))
		s.pubMu.Lock()
		s.subscribers = nil // no view follows: let them go
		s.pubMu.Unlock()
		for _, m := range s.cache {
			m.closeNow()
		}
		s.ej.closeLeaving()
		clear(s.cache)
		clear(s.failed)
	})
}

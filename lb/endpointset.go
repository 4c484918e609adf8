package lb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// ErrClosed is returned by picks and Endpoints after EndpointSet.Close. It
// matches ErrNoInstances under errors.Is.
var ErrClosed = fmt.Errorf("%w (endpoint set closed)", ErrNoInstances)

// Attributes are what a balancer needs to know about an instance beyond its
// name. The EndpointSet asks for them (WithAttributes) whenever it builds a
// snapshot.
type Attributes struct {
	// Standby instances take requests only when no ACTIVE (non-standby)
	// instance can: every balancer picks them after the available, untried
	// ACTIVE ones. It mirrors AegisSDK's STANDBY status.
	Standby bool
	// Metadata is what the registry says of the instance beyond its status
	// (a zone, a weight, an address). Policies read it; nobody may modify
	// it, since every view built from the same registry record shares it.
	Metadata map[string]string
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

// Option configures an EndpointSet.
type Option func(*setOptions)

type setOptions struct {
	attributes        func(instance string) Attributes
	invalidateTimeout time.Duration
	invalidate        bool
	retryMin          time.Duration
	retryMax          time.Duration
	vnodes            int
}

// WithAttributes tells the set how to learn an instance's attributes. fn is
// called for every instance each time a snapshot is built (membership change,
// factory retry, Refresh), from the set's own goroutine; it must be fast and
// must not call back into the set. With the natskv registry:
//
//	lb.WithAttributes(func(s string) lb.Attributes {
//		in, _ := instancer.Lookup(s)
//		return lb.Attributes{Standby: in.Status == "STANDBY"}
//	})
//
// Without it every instance is ACTIVE.
func WithAttributes(fn func(instance string) Attributes) Option {
	return func(o *setOptions) { o.attributes = fn }
}

// WithInvalidateOnError makes the set drop its endpoints when the instancer
// reports an error (sd.Event.Err) and no good event follows within timeout;
// picks then fail with an error that wraps both ErrNoInstances and the
// instancer's error. It is go-kit's sd.InvalidateOnError. By default the set
// keeps serving the last known instances, which is what you want when the
// discovery system, not the service, is down.
func WithInvalidateOnError(timeout time.Duration) Option {
	return func(o *setOptions) {
		o.invalidate = true
		o.invalidateTimeout = max(timeout, 0)
	}
}

// WithFactoryRetry sets the backoff for retrying instances whose sd.Factory
// failed: the first retry comes after initial, each further one doubles up
// to limit, each with ±50% jitter. Failed instances are also retried on
// every instancer event. Defaults: 250ms and 30s.
func WithFactoryRetry(initial, limit time.Duration) Option {
	return func(o *setOptions) {
		if initial > 0 {
			o.retryMin = initial
		}
		o.retryMax = max(limit, o.retryMin)
	}
}

// WithVirtualNodes sets how many points each instance gets on the sticky
// balancer's consistent-hash ring (default 100). More points spread keys more
// evenly, and bound the keys moved by a membership change closer to 1/N, at
// the cost of memory (12 bytes per point) and snapshot build time.
func WithVirtualNodes(n int) Option {
	return func(o *setOptions) {
		if n > 0 {
			o.vnodes = n
		}
	}
}

// EndpointSet is go-kit's sd.Endpointer that remembers which instance each
// endpoint reaches. It subscribes to an sd.Instancer, builds one endpoint per
// instance with an sd.Factory, closes the endpoints of instances that leave,
// retries instances whose factory failed, and on every change publishes an
// immutable snapshot that the balancers of this package pick from without
// locks or allocations.
//
// Every endpoint is wrapped once, when it is built, to count requests in
// flight and keep a moving average of latency; the least-loaded balancer
// weighs them and Stats reports them.
type EndpointSet struct {
	instancer sd.Instancer
	factory   sd.Factory
	logger    log.Logger
	opts      setOptions

	snap  atomic.Pointer[snapshot]
	rings atomic.Bool // a sticky balancer uses the set: build rings eagerly

	ch     chan sd.Event
	wake   chan struct{} // cap 1: an event is pending
	stop   chan struct{}
	wg     sync.WaitGroup
	closer sync.Once

	// pending holds what the receiver has taken off ch and the worker has not
	// applied yet: the newest instance set, and an error newer than it.
	pendingMu  sync.Mutex
	pendingSet []string
	hasSet     bool
	pendingErr error

	// mu guards the rest; the worker holds it while it applies an event.
	mu          sync.Mutex
	closed      bool
	current     []string // sorted, deduplicated, owned copy of the last good set
	cache       map[string]*instance
	failed      map[string]struct{}
	retryTimer  *time.Timer
	retryStep   int
	err         error // instancer error not yet superseded
	invalidTime *time.Timer
}

var _ sd.Endpointer = (*EndpointSet)(nil)

// NewEndpointSet subscribes to instancer and keeps an endpoint per instance
// through factory. A nil logger means no logging. When the instancer sends
// its current instances as it registers the set, as go-kit's instancers do,
// they are in place when NewEndpointSet returns. Call Close when done.
func NewEndpointSet(instancer sd.Instancer, factory sd.Factory, logger log.Logger, options ...Option) *EndpointSet {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	s := &EndpointSet{
		instancer: instancer,
		factory:   factory,
		logger:    logger,
		opts:      setOptions{retryMin: 250 * time.Millisecond, retryMax: 30 * time.Second, vnodes: 100},
		ch:        make(chan sd.Event),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		cache:     map[string]*instance{},
		failed:    map[string]struct{}{},
	}
	for _, o := range options {
		o(&s.opts)
	}
	// The worker goroutine serves both timers; stopped timers never fire.
	s.retryTimer = time.NewTimer(time.Hour)
	s.retryTimer.Stop()
	s.invalidTime = time.NewTimer(time.Hour)
	s.invalidTime.Stop()
	s.snap.Store(newSnapshot(nil, nil, s.opts.vnodes, nil))

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
			s.pendingMu.Lock()
			if ev.Err == nil {
				s.pendingSet, s.hasSet, s.pendingErr = ev.Instances, true, nil
			} else {
				s.pendingErr = ev.Err
			}
			s.pendingMu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
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
		case <-s.wake:
			s.pendingMu.Lock()
			set, hasSet, err := s.pendingSet, s.hasSet, s.pendingErr
			s.pendingSet, s.hasSet, s.pendingErr = nil, false, nil
			s.pendingMu.Unlock()
			if hasSet {
				s.apply(sd.Event{Instances: set})
			}
			if err != nil {
				s.apply(sd.Event{Err: err})
			}
		case <-s.stop:
			return
		}
	}
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
// failed ones), closes departed ones and publishes a snapshot. s.mu is held.
func (s *EndpointSet) sync() {
	want := make(map[string]struct{}, len(s.current))
	for _, name := range s.current {
		want[name] = struct{}{}
	}
	for name, in := range s.cache {
		if _, ok := want[name]; !ok {
			delete(s.cache, name)
			s.closeInstance(in)
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
		s.cache[name] = newInstance(name, ep, closer)
	}
	if len(s.failed) == 0 {
		s.retryStep = 0
		s.retryTimer.Stop()
	} else {
		s.retryTimer.Reset(s.backoff())
	}
	s.publish()
}

func (s *EndpointSet) backoff() time.Duration {
	d := s.opts.retryMin << min(s.retryStep, 30)
	if d <= 0 || d > s.opts.retryMax {
		d = s.opts.retryMax
	}
	s.retryStep++
	return d/2 + rand.N(d) // ±50%
}

// publish swaps in a snapshot of the cache. s.mu is held.
func (s *EndpointSet) publish() {
	insts := make([]*instance, 0, len(s.cache))
	for _, name := range s.current {
		if in, ok := s.cache[name]; ok {
			insts = append(insts, in)
		}
	}
	var attrs []Attributes
	if s.opts.attributes != nil {
		attrs = make([]Attributes, len(insts))
		for i, in := range insts {
			attrs[i] = s.opts.attributes(in.name)
		}
	}
	snap := newSnapshot(insts, attrs, s.opts.vnodes, nil)
	if s.rings.Load() {
		snap.buildRings(s.snap.Load())
	}
	s.snap.Store(snap)
}

func (s *EndpointSet) closeInstance(in *instance) {
	if in.closer == nil {
		return
	}
	if err := in.closer.Close(); err != nil {
		s.logger.Log("instance", in.name, "during", "close", "err", err)
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
	for name, in := range s.cache {
		delete(s.cache, name)
		s.closeInstance(in)
	}
	clear(s.failed)
	s.retryTimer.Stop()
	s.current = nil
	s.snap.Store(newSnapshot(nil, nil, s.opts.vnodes, errors.Join(ErrNoInstances, s.err)))
}

// Endpoints satisfies go-kit's sd.Endpointer: the endpoints of the current
// instances, sorted by instance like go-kit's. The slice is shared by every
// caller until the next change: do not modify it. After an instancer error
// with WithInvalidateOnError, it returns the instancer's error once the
// timeout has passed.
func (s *EndpointSet) Endpoints() ([]endpoint.Endpoint, error) {
	snap := s.snap.Load()
	if len(snap.insts) == 0 && snap.err != ErrNoInstances {
		return nil, snap.err
	}
	return snap.endpoints, nil
}

// Instances returns the instances the set can pick from now, sorted: those
// the instancer reported and whose factory succeeded.
func (s *EndpointSet) Instances() []string {
	snap := s.snap.Load()
	names := make([]string, len(snap.insts))
	for i, in := range snap.insts {
		names[i] = in.name
	}
	return names
}

// InstanceStats is one instance's picture at the time of a Stats call.
type InstanceStats struct {
	Instance  string
	Standby   bool
	Available bool          // what the factory's closer reports; true if it reports nothing
	InFlight  int64         // requests through the endpoint not yet returned
	Calls     uint64        // requests through the endpoint since it was built
	Latency   time.Duration // moving average (weight 1/8 per call); 0 before the first call
}

// Stats reports the current instances' load, sorted by instance, for metrics
// and diagnostics.
func (s *EndpointSet) Stats() []InstanceStats {
	snap := s.snap.Load()
	stats := make([]InstanceStats, len(snap.insts))
	for i, in := range snap.insts {
		stats[i] = InstanceStats{
			Instance:  in.name,
			Standby:   snap.standby[i],
			Available: in.available(),
			InFlight:  in.inflight.Load(),
			Calls:     in.calls.Load(),
			Latency:   time.Duration(in.ewma.Load()),
		}
	}
	return stats
}

// Refresh rebuilds the snapshot with fresh attributes (WithAttributes) and
// retries failed factories. Call it when an instance's attributes change
// without a membership change — an instance going STANDBY — if the
// instancer does not send an event for it. It returns once the new snapshot
// is in place.
func (s *EndpointSet) Refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.sync()
}

// useRings makes every future snapshot carry the sticky balancer's rings, and
// builds those of the current one.
func (s *EndpointSet) useRings() *snapshot {
	s.rings.Store(true)
	snap := s.snap.Load()
	snap.getRings()
	return snap
}

// Close unregisters the set from the instancer, stops its goroutines and
// closes every endpoint. Picks then fail with ErrClosed. Close may be called
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
		s.snap.Store(newSnapshot(nil, nil, s.opts.vnodes, ErrClosed))
		for _, name := range s.current {
			if in, ok := s.cache[name]; ok {
				s.closeInstance(in)
			}
		}
		clear(s.cache)
		clear(s.failed)
	})
}

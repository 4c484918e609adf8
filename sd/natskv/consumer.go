package natskv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/backoff"
	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
)

// This file is the shared watch's JetStream consumer: one session at a
// time, rebuilt when the connection comes back, the consumer is lost or its
// heartbeats stop, with its filter following the services watched.

// session is one consumer on the bucket's stream, filtered by the services
// followed when it started (and those its filter was updated with since).
// Until its initial values are in it loads them apart, and they then replace
// the books whole: after a failure, views get a fresh full set, and the
// changes missed.
type session struct {
	init     bool
	ready    chan struct{}
	lastDseq uint64 // the consume callback's alone
	failed   chan error
	cc       jetstream.ConsumeContext
	cfg      jetstream.ConsumerConfig
	loads    map[*follow]*registry.Load // the initial values, until they are all in
	filtered []string                   // the services the consumer's filter names, sorted
	whole    bool                       // the consumer's filter is the whole registry
	probe    *natserr.Probe             // refusals by the server since the session started
}

// refused is the server's refusal of what the session's consumer needs —
// its pull requests, its inbox — since the session started, if any.
func (s *session) refused(w *watcher, nc *nats.Conn) *natserr.PermissionError {
	return s.probe.Check(w.api+"CONSUMER.MSG.NEXT."+w.b.stream()+".*", natserr.InboxPattern(nc))
}

// fail ends the session from any goroutine; the watch loop rebuilds it.
func (s *session) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

// watchLoop keeps one session (a consumer on the bucket's stream) alive:
// it starts one once a service is followed, rebuilds it whenever the
// connection comes back, the consumer is lost or its heartbeats stop, and
// updates its filter as services are followed and dropped.
func (w *watcher) watchLoop() {
	defer w.wg.Done()
	var status chan nats.Status
	if nc := w.b.js.Conn(); nc != nil {
		status = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
		defer nc.RemoveStatusListener(status)
	}
	var waiters []chan error // Refresh calls waiting for the next full set
	answer := func(err error) {
		for _, r := range waiters {
			r <- err
		}
		waiters = nil
	}
	defer func() { answer(ErrStopped) }()
	// Nothing to watch before the first view joins.
	select {
	case <-w.done:
		return
	case <-w.kick:
	}
	first := true
	failures := 0
	for {
		select {
		case <-w.done:
			return
		default:
		}
		if !first {
			w.countRestart()
		}
		first = false
		if nc := w.b.js.Conn(); nc != nil && !nc.IsConnected() {
			w.waitConnected(status)
		}
		s, err := w.startSession()
		if err != nil {
			w.failWith(fmt.Errorf("%w: %w", ErrWatchLost, err)) // logged, and told to subscribers
			w.refuse(err)
			// Retry soon (a restarted server's JetStream is up moments
			// after its client port), backing off to retryWait.
			w.mu.Lock()
			rw := w.retryWait
			w.mu.Unlock()
			wait := backoff.Policy{Base: min(25*time.Millisecond, rw), Cap: rw}.Ceiling(failures)
			failures++
			select {
			case <-w.done:
			case <-time.After(wait):
			case st := <-status:
				if st != nats.CONNECTED {
					w.waitConnected(status)
				}
			case r := <-w.refresh:
				waiters = append(waiters, r)
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
			case <-w.done:
				w.stopSession(s, true)
				return
			case <-ready:
				answer(nil)
			case <-w.kick:
				if err := w.reconcile(s); err != nil {
					w.stopSession(s, true)
					w.failWith(fmt.Errorf("%w: %w", ErrWatchLost, err))
					break running
				}
			case r := <-w.refresh:
				waiters = append(waiters, r)
				w.stopSession(s, true)
				break running
			case err := <-s.failed:
				if pe := s.refused(w, w.b.js.Conn()); pe != nil {
					err = pe // what the heartbeats went missing for
				}
				w.stopSession(s, true)
				w.failWith(fmt.Errorf("%w: %w", ErrWatchLost, err))
				w.refuse(err)
				break running
			case st := <-status:
				switch st {
				case nats.CONNECTED:
					// Reconnected, maybe to a restarted server that lost our
					// consumer: rebuild now instead of waiting for
					// heartbeats to go missing.
					w.stopSession(s, true)
					w.failWith(fmt.Errorf("%w: reconnected", ErrWatchLost))
					break running
				case nats.CLOSED:
					w.stopSession(s, false)
					w.failWith(fmt.Errorf("%w: %w", ErrWatchLost, nats.ErrConnectionClosed))
					<-w.done
					return
				default:
					w.stopSession(s, false)
					w.failWith(fmt.Errorf("%w: %w", ErrWatchLost, nats.ErrDisconnected))
					w.waitConnected(status)
					break running
				}
			}
		}
	}
}

// countRestart counts a rebuilt watch on every view's metrics.
func (w *watcher) countRestart() {
	w.mu.Lock()
	var vs []*Instancer
	for _, f := range w.follows {
		vs = append(vs, f.views...)
	}
	w.mu.Unlock()
	for _, v := range vs {
		v.m.restarts.Add(context.Background(), 1, v.m.set)
	}
}

// waitConnected returns once the connection is up again or the watcher
// stops. Status events are dropped when a listener lags, so it also polls.
func (w *watcher) waitConnected(status chan nats.Status) {
	nc := w.b.js.Conn()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if nc == nil || nc.IsConnected() {
			return
		}
		select {
		case <-w.done:
			return
		case st := <-status:
			if st == nats.CONNECTED {
				return
			}
		case <-t.C:
		}
	}
}

// request bounds a JetStream API call: it ends at the timeout, when the
// watcher stops, or as soon as the connection drops (a request made while
// the connection is down would wait out its timeout; the loop had better
// wait for the reconnect instead).
func (w *watcher) request(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	nc := w.b.js.Conn()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.done:
				cancel()
				return
			case <-t.C:
				if nc != nil && !nc.IsConnected() {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(); <-watched }
}

func (w *watcher) consumerConfig(services []string, whole bool) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects:    w.filters(services, whole),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: max(20*w.hb, 10*time.Second),
	}
}

func (w *watcher) startSession() (*session, error) {
	s := &session{ready: make(chan struct{}), failed: make(chan error, 1), loads: map[*follow]*registry.Load{}}
	w.mu.Lock()
	w.clearFetches()
	for _, f := range w.follows {
		s.loads[f] = f.book.NewLoad()
		f.buf, f.needFrom, f.floor, f.floorKnown = nil, 0, 0, false
	}
	s.whole = w.layout == registry.LayoutAegis || wantWhole(false, len(w.follows))
	if !s.whole {
		s.filtered = w.followed()
	}
	s.cfg = w.consumerConfig(s.filtered, s.whole)
	w.cur = s
	w.mu.Unlock()
	ctx, cancel := w.request(max(4*w.hb, 2*time.Second))
	defer cancel()
	nc := w.b.js.Conn()
	s.probe = natserr.NewProbe(nc)
	var cons jetstream.Consumer
	err := natserr.Do(ctx, nc, []string{w.api + "CONSUMER.CREATE." + w.b.stream() + ".>", natserr.InboxPattern(nc)},
		func(ctx context.Context) (err error) {
			cons, err = w.b.js.CreateConsumer(ctx, w.b.stream(), s.cfg)
			return err
		})
	if err != nil {
		w.dropSession(s)
		return nil, err
	}
	info := cons.CachedInfo()
	s.cfg.Name = info.Name
	cc, err := cons.Consume(func(msg jetstream.Msg) { w.handle(s, msg) },
		jetstream.PullHeartbeat(w.hb),
		jetstream.PullExpiry(max(4*w.hb, time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { s.fail(err) }))
	if err == nil && nc != nil {
		// Consume has subscribed its inbox and sent its first pull
		// request: the server reports a refusal of either before it
		// answers a flush.
		if ferr := nc.FlushWithContext(ctx); ferr == nil {
			if pe := s.refused(w, nc); pe != nil {
				cc.Stop()
				err = pe
			}
		}
	}
	if err != nil {
		w.dropSession(s)
		w.deleteConsumer(s.cfg.Name)
		return nil, err
	}
	s.cc = cc
	if info.NumPending == 0 {
		w.mu.Lock()
		batch := w.finishInit(s, nil, time.Now())
		w.mu.Unlock()
		deliver(&w.mu, batch)
	}
	return s, nil
}

// dropSession makes s no longer count.
func (w *watcher) dropSession(s *session) {
	w.mu.Lock()
	if w.cur == s {
		w.cur = nil
		w.clearFetches()
	}
	w.mu.Unlock()
}

func (w *watcher) stopSession(s *session, deleteConsumer bool) {
	w.dropSession(s)
	s.cc.Stop()
	select {
	case <-s.cc.Closed():
	case <-time.After(time.Second):
	}
	if deleteConsumer {
		w.deleteConsumer(s.cfg.Name)
	}
}

func (w *watcher) deleteConsumer(name string) {
	if nc := w.b.js.Conn(); nc == nil || !nc.IsConnected() {
		return // the server drops it after its inactive threshold
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	nc := w.b.js.Conn()
	err := natserr.Do(ctx, nc, []string{w.api + "CONSUMER.DELETE." + w.b.stream() + ".*", natserr.InboxPattern(nc)},
		func(ctx context.Context) error { return w.b.js.DeleteConsumer(ctx, w.b.stream(), name) })
	if errors.Is(err, natserr.ErrPermission) {
		// Harmless (the server drops the consumer after its inactive
		// threshold), but the user's permissions are not what they
		// should be.
		w.logger.Log("consumer", name, "delete", err)
	}
}

// finishInit makes a session's initial values the books and publishes every
// view; services followed since the session started are fetched. The caller
// holds w.mu.
func (w *watcher) finishInit(s *session, batch []viewUpdate, now time.Time) []viewUpdate {
	if s.init || w.cur != s {
		return batch
	}
	s.init = true
	for f, l := range s.loads {
		if w.follows[f.service] != f {
			continue
		}
		f.staleAt = time.Time{}
		cs := f.book.Replace(l, now)
		for _, v := range f.views {
			batch = v.queue(batch, v.st.Reloaded(cs, now), nil)
		}
	}
	for _, f := range w.follows {
		if s.loads[f] == nil {
			w.startFetch(f)
		}
	}
	s.loads = nil
	close(s.ready)
	w.signal()
	return batch
}

// reconcile updates the consumer's filter to the services followed. The
// services it adds were fetched (or are being fetched) directly; the
// update says from which sequence the consumer has them, and a service
// read below it is read again.
func (w *watcher) reconcile(s *session) error {
	if w.layout == registry.LayoutAegis {
		return nil // the whole bucket, always
	}
	for {
		w.mu.Lock()
		if w.cur != s || !s.init {
			w.mu.Unlock()
			return nil
		}
		n := len(w.follows)
		whole := wantWhole(s.whole, n)
		if n == 0 || (whole && s.whole) {
			w.mu.Unlock()
			return nil
		}
		want := w.followed()
		if !whole && !s.whole && slices.Equal(want, s.filtered) {
			w.mu.Unlock()
			return nil
		}
		var adds []*follow
		if !s.whole {
			for _, svc := range want {
				if _, had := slices.BinarySearch(s.filtered, svc); !had {
					adds = append(adds, w.follows[svc])
				}
			}
		}
		cfg := s.cfg
		cfg.FilterSubjects = w.filters(want, whole)
		w.mu.Unlock()

		ctx, cancel := w.request(max(4*w.hb, 2*time.Second))
		cons, err := w.b.js.UpdateConsumer(ctx, w.b.stream(), cfg)
		cancel()
		if err != nil {
			return fmt.Errorf("update filter: %w", err)
		}
		from := cons.CachedInfo().Delivered.Stream

		w.mu.Lock()
		if w.cur == s {
			s.cfg, s.whole, s.filtered = cfg, whole, nil
			if !whole {
				s.filtered = want
			}
			for _, f := range adds {
				if w.follows[f.service] == f {
					f.needFrom = max(f.needFrom, from)
					w.checkFloor(f)
				}
			}
		}
		w.mu.Unlock()
	}
}

// handle is the consumer's callback: messages of one session arrive in order
// on one goroutine. The record is decoded before the lock is taken.
func (w *watcher) handle(s *session, msg jetstream.Msg) {
	now := time.Now()
	meta, err := msg.Metadata()
	if err != nil || meta.Sequence.Consumer != s.lastDseq+1 {
		if err == nil {
			err = fmt.Errorf("delivery gap: consumer sequence %d after %d", meta.Sequence.Consumer, s.lastDseq)
		}
		s.fail(err) // harmless if s is no longer the session
		return
	}
	s.lastDseq = meta.Sequence.Consumer
	m := registry.Msg{Key: strings.TrimPrefix(msg.Subject(), w.prefix), Op: registry.OpOf(msg.Headers()), Data: msg.Data(),
		Rev: meta.Sequence.Stream, Seen: now}
	w.decode(&m)
	var batch []viewUpdate
	w.mu.Lock()
	if w.cur != s {
		w.mu.Unlock()
		return
	}
	if svc, ok := w.layout.ServiceOf(m.Key); ok {
		if f := w.follows[svc]; f != nil {
			if !s.init {
				if l := s.loads[f]; l != nil {
					m.Seen = meta.Timestamp // an initial value is as old as its write
					l.Add(m)
				}
			} else {
				batch = w.live(batch, f, m)
			}
		}
	}
	if !s.init && meta.NumPending == 0 {
		batch = w.finishInit(s, batch, now)
	}
	w.mu.Unlock()
	// The changes are told (and counted) before subscribers get the event
	// they cause.
	deliver(&w.mu, batch)
}

// refreshNow rebuilds the watch and returns when the new full set is in.
func (w *watcher) refreshNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case w.refresh <- reply:
	case <-w.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

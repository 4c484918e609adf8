package natskv

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aegis-sdk/kitnats/internal/backoff"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// session is one consumer on the bucket's stream. Until its initial values
// are in it loads them apart, and they then replace the state whole: after a
// failure, subscribers get a fresh full set, and the changes missed.
type session struct {
	initial  *load // the initial values, until they are all in
	init     bool
	ready    chan struct{}
	lastDseq uint64
	failed   chan error
	cc       jetstream.ConsumeContext
	consumer string
}

// watchLoop keeps one session (a consumer on the bucket's stream) alive:
// it starts one, and rebuilds it whenever the connection comes back, the
// consumer is lost or its heartbeats stop.
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
			wait := backoff.Policy{Base: min(25*time.Millisecond, i.opts.retryWait), Cap: i.opts.retryWait}.Ceiling(failures)
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
	s := &session{ready: make(chan struct{}), failed: make(chan error, 1)}
	i.mu.Lock()
	s.initial = i.st.newLoad()
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
		u := i.finishInit(s, time.Now())
		i.mu.Unlock()
		i.emit(u)
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

// finishInit makes a session's initial values the state. The lock is held.
func (i *Instancer) finishInit(s *session, now time.Time) update {
	if s.init || i.cur != s {
		return update{}
	}
	s.init = true
	u := i.st.replace(s.initial, now)
	s.initial = nil
	close(s.ready)
	return u
}

// handle is the consumer's callback: messages of one session arrive in order
// on one goroutine.
func (i *Instancer) handle(s *session, msg jetstream.Msg) {
	now := time.Now()
	meta, err := msg.Metadata()
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
	r := record{key: strings.TrimPrefix(msg.Subject(), i.prefix), op: opOf(msg.Headers()), data: msg.Data(),
		rev: meta.Sequence.Stream, seen: now}
	var u update
	if !s.init {
		r.seen = meta.Timestamp // an initial value is as old as its write
		s.initial.add(r)
		if meta.NumPending == 0 {
			u = i.finishInit(s, now)
		}
	} else {
		u = i.st.apply(r)
	}
	i.mu.Unlock()
	// The changes are told (and counted) before subscribers get the event
	// they cause.
	i.emit(u)
}

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

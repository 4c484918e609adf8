package natsrpc

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// How requests reach a handler. Both subscriptions of a method deliver into
// one buffered channel (nats.go sends into it from the connection's read
// loop, with no goroutine of its own in between). A reader takes a request
// from the channel, stamps its arrival and deadline, and asks the pool; if
// the request may start, the reader runs it inline, then runs whatever the
// pool hands its token to next, then reads again, taking what arrived
// meanwhile without sleeping. Requests that came together are so served
// back to back on one goroutine and their replies leave in one write, as
// with a plain nats.go subscription, and a request costs no hand-off
// between goroutines.
//
// While a reader runs a handler, nobody reads its method's channel. A
// watchdog looks every watchTick: a channel that holds requests with no
// reader waiting on it, twice running, gets one more reader. So a request
// waits behind a slow handler for two ticks at most, and its arrival stamp
// is that late at most; requests whose method may not start more are
// queued or refused by the extra reader, which never blocks on them. A
// reader that finds its channel empty while another reader waits on it
// exits: a method has one reader when idle, and about as many as it has
// slow requests running when busy, which the pool bounds.

// watchTick is how often the watchdog looks for channels nobody reads.
const watchTick = time.Millisecond

// watchQuiet is how many ticks without work the watchdog waits before it
// sleeps until a reader starts a request.
const watchQuiet = 100

// method is one method of a Service: its server, its two endpoints, the
// buffer both deliver into, and its readers.
type method struct {
	srv    *Server
	lane   *lane
	in     chan *nats.Msg
	eps    [2]route     // service-wide, instance
	parked atomic.Int32 // readers waiting on in
	// stalled is the watchdog's: at its last look, in held requests and no
	// reader waited on it.
	stalled bool
}

// route is one endpoint of a method: one subject, one subscription.
type route struct {
	method  string
	subject string
	queue   string // empty for the instance subject
	sub     *nats.Subscription
	stats   *endpointStats
}

// deliveryBuffer sizes a method's channel: 256 messages, or as many of the
// largest messages the server accepts as fit in 64 MiB when that is more,
// up to 4096. Readers keep it near empty; it absorbs a burst that arrives
// while every reader is in a handler, until the watchdog adds one (a tick
// or two). Messages over it are dropped by nats.go and counted
// (endpointStats "dropped"); their callers time out.
func deliveryBuffer(maxPayload int64) int {
	if maxPayload <= 0 {
		return 256
	}
	return int(min(max(64<<20/maxPayload, 256), 4096))
}

// start runs one reader per method, and the watchdog.
func (s *Service) start() {
	s.readers.Add(len(s.methods) + 1)
	for _, m := range s.methods {
		go s.read(m)
	}
	go s.watch()
}

// read is a reader of m's channel.
func (s *Service) read(m *method) {
	defer s.readers.Done()
	for {
		var msg *nats.Msg
		select {
		case msg = <-m.in:
		default:
			if m.parked.Load() > 0 {
				return // another reader waits already
			}
			m.parked.Add(1)
			select {
			case msg = <-m.in:
			case <-s.quit:
			}
			m.parked.Add(-1)
		}
		if msg == nil {
			// Shutting down: nothing more will arrive; serve what has.
			for {
				select {
				case msg = <-m.in:
					s.deliver(m, msg)
				default:
					return
				}
			}
		}
		s.deliver(m, msg)
	}
}

// deliver takes one request in: the pool runs it now, on this goroutine,
// or queues it, or refuses it.
func (s *Service) deliver(m *method, msg *nats.Msg) {
	e := &m.eps[0]
	if msg.Sub == m.eps[1].sub {
		e = &m.eps[1]
	}
	e.stats.requests.Add(1)
	if !replyAllowed(s.replies, msg.Reply) {
		e.stats.Rejected.Add(1)
		s.log("msg", "request not served: its reply subject is not an inbox", "subject", msg.Subject, "reply", quote(msg.Reply))
		return
	}
	j := &job{srv: m.srv, stats: e.stats, lane: m.lane, msg: msg}
	if !s.arrive(j) || !s.pool.admit(j) {
		return
	}
	if s.watchAsleep.Load() && s.watchAsleep.CompareAndSwap(true, false) {
		select {
		case s.watchWake <- struct{}{}:
		default:
		}
	}
	for j != nil {
		s.run(j)
		now := time.Now()
		j.stats.ran.Add(1)
		j.stats.processing.Add(int64(now.Sub(j.start)))
		j = s.pool.done(j, now)
	}
}

// arrive stamps j with its arrival time and deadline: the caller's
// (Kitnats-Timeout counted from arrival) or the service's default. It drops j
// and returns false if that deadline has already passed.
func (s *Service) arrive(j *job) bool {
	j.recv = time.Now()
	j.start = j.recv
	if v := j.msg.Header[rpcheader.Timeout]; len(v) > 0 {
		d, err := rpcheader.ParseTimeout(v[0])
		if err != nil {
			j.stats.Malformed.Add(1)
			s.log("msg", "ignoring malformed deadline header", "subject", j.msg.Subject, "err", err)
		} else {
			j.deadline = j.recv.Add(d)
			j.caller = true
			if d <= 0 {
				s.expire(j)
				return false
			}
		}
	} else {
		s.arriveForeign(j) // an AegisSDK envelope, or a go-kit or other plain request
	}
	if !j.caller && s.timeout > 0 {
		j.deadline = j.recv.Add(s.timeout)
	}
	return true
}

// run serves one request that holds a worker's token.
func (s *Service) run(j *job) {
	defer func() {
		// The Server recovers its own panics; this catches a panicking
		// error encoder or finalizer.
		if r := recover(); r != nil {
			j.stats.Panics.Add(1)
			s.log("msg", "panic outside the endpoint", "subject", j.msg.Subject, "panic", fmt.Sprint(r))
			s.replyError(j, CodeInternal, "internal error")
		}
	}()
	if s.base.Err() != nil {
		// Shutdown gave up: refuse, so the caller may go elsewhere.
		s.reject(j, CodeUnavailable, msgShuttingDown)
		return
	}
	ctx := s.base
	if !j.deadline.IsZero() {
		j.dl.init(ctx, j.deadline)
		defer j.dl.release()
		ctx = &j.dl
	}
	if s.hasTraceHeader(j.msg.Header) {
		ctx = s.prop.Extract(ctx, rpcheader.Carrier(j.msg.Header))
	}
	var reply *nats.Msg
	var err error
	if j.foreign == nil {
		reply, err = j.srv.serve(ctx, j.msg, &j.reply)
	} else {
		reply, err = j.srv.serveForeign(ctx, j.foreign, j.msg, &j.reply)
	}
	if err != nil {
		j.stats.Errors.Add(1)
		msg := rpclimit.Message(err.Error())
		j.stats.lastError.Store(&msg)
		if errors.Is(err, errPanic) {
			j.stats.Panics.Add(1)
			s.log("msg", "handler panicked", "subject", j.msg.Subject, "err", err)
		}
	}
	s.respond(j, reply)
}

// watch is the watchdog: it adds a reader to a channel that holds requests
// while none of its readers waits on it, two ticks running. Idle, it
// sleeps; shutting down, it stays until the channels are empty.
func (s *Service) watch() {
	defer s.readers.Done()
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	quitting := false
	quiet := 0
	for {
		if quitting {
			<-tick.C
		} else {
			select {
			case <-tick.C:
			case <-s.quit:
				quitting = true
			}
		}
		backlog := false
		for _, m := range s.methods {
			if len(m.in) == 0 || m.parked.Load() > 0 {
				m.stalled = false
				backlog = backlog || len(m.in) > 0
				continue
			}
			backlog = true
			if !m.stalled {
				m.stalled = true
				continue
			}
			m.stalled = false
			s.readers.Add(1)
			go s.read(m)
		}
		switch {
		case quitting:
			if !backlog {
				return
			}
		case backlog || s.pool.held.Load() > 0:
			quiet = 0
		case quiet < watchQuiet:
			quiet++
		default:
			// Idle: sleep until a reader starts a request. A reader that
			// started one between the look above and the flag sees the flag;
			// one that started before it shows in held.
			s.watchAsleep.Store(true)
			if s.pool.held.Load() > 0 && s.watchAsleep.CompareAndSwap(true, false) {
				continue
			}
			tick.Stop()
			select {
			case <-s.watchWake:
			case <-s.quit:
				quitting = true
			}
			s.watchAsleep.Store(false)
			quiet = 0
			tick.Reset(watchTick)
		}
	}
}

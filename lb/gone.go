package lb

import (
	"errors"
	"sync"
	"time"

	"github.com/go-kit/log"
)

// Known-dead is not merely unavailable. An open breaker says an instance
// fails; panic mode exists because that word can be wrong, when a cause the
// instances share (the network, a dependency of all of them) fails them
// all. "No responders" on an instance's own subject is another word: no
// process of that instance listens any more. An attempt whose error
// answers Gone() true (natsrpc's *CallError does for that case) is a
// verdict, and the set takes the instance out of its views at once — out
// of every policy's candidates, out of the count panic mode judges, and
// out of panic mode's reach — when two things hold, so that a NATS outage
// or most instances failing at once blame no instance:
//
//   - another instance of the set, itself not gone, answered after the
//     failed attempt started: the client's connection and the servers
//     work now;
//   - the instances whose latest outcome within the last goneBurst is such
//     a verdict are no more than those whose latest outcome within it is
//     an answer: failing is the exception,
//     not the rule (the panic threshold's reasoning: when most look dead,
//     suspect the detector). When a later verdict finds them more, the
//     instances marked within that window come back at once: the verdicts
//     were one shared event, judged one by one. The window is short: a
//     shared event fails everyone at once, while crashes in a churning
//     fleet come one after another, and even a fleet where many crashed
//     instances await their TTL has few failing within a quarter second.
//
// A verdict that cannot be acted on at once is judged again until it is
// goneWindow old, then dropped; so is one whose own instance answered after
// the failed attempt started, unless it failed again since (its server's
// subscriptions were being restored, or calls were in flight as it died). A gone instance comes back when its
// Describer attributes show a new Revision (the registry saw a new write),
// when the instancer reports it anew after a removal, or, failing those,
// after a probe delay (goneProbe, doubling while it keeps being found gone
// without answering, up to goneProbeMax) once its breaker lets calls
// through: a probe costs one attempt that finds no responders, which
// retry does not count.

const (
	goneWindow   = time.Second
	goneBurst    = 250 * time.Millisecond
	goneProbe    = time.Second
	goneProbeMax = 16 * time.Second
	// goneRecheck: how often the set looks for a judged verdict to retry
	// (while one is pending) and for new revisions of gone instances.
	goneRecheck = 10 * time.Millisecond
	goneRevPoll = 100 * time.Millisecond
)

// clockBase starts the package's monotonic clock.
var clockBase = time.Now()

// clock is t on the package's monotonic clock, in nanoseconds; never 0, so
// 0 can mean "never".
func clock(t time.Time) int64 { return int64(t.Sub(clockBase)) + 1 }

// ejector is what the members of one set share for the gone rule and for
// closing the departed: the worker's wake-up and the set's logger.
type ejector struct {
	wake   chan struct{} // a verdict is pending; capacity 1
	logger log.Logger

	drain   time.Duration // how long a departed member's calls may run before its closer is closed
	mu      sync.Mutex
	leaving map[*member]struct{} // departed, closer not closed yet
}

func newEjector(logger log.Logger, drain time.Duration) *ejector {
	return &ejector{wake: make(chan struct{}, 1), logger: logger, drain: drain, leaving: map[*member]struct{}{}}
}

func (e *ejector) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// goneError is what a member answers, without calling its endpoint, while
// the set holds it gone: a pick from a view built before it went.
type goneError struct{ instance string }

func (e *goneError) Error() string {
	return "kitnats/lb: instance " + e.instance + " is gone: no responders on its own subject while others answer"
}

// Gone, Rejected and Retryable report true: the request was not sent, and
// another instance may take it; retry counts no attempt for it.
func (e *goneError) Gone() bool        { return true }
func (e *goneError) Rejected() bool    { return true }
func (e *goneError) Retryable() bool   { return true }
func (e *goneError) ErrorType() string { return "gone" }

// isGone reports whether err says the instance called is gone.
func isGone(err error) bool {
	var g interface{ Gone() bool }
	return errors.As(err, &g) && g.Gone()
}

// verdict records that an attempt started at start found the member gone,
// and has the set's worker judge it.
func (m *member) verdict(start int64) {
	m.lastGone.Store(start)
	if !m.pending.Load() && m.pending.CompareAndSwap(false, true) {
		// The first pending verdict is the one judged: an answer after it
		// corroborates it, whatever failed since.
		m.pendingAt.Store(start)
		m.ej.poke()
	}
}

// judgeGone acts on pending verdicts and brings back the gone members that
// are due; it publishes a view when either changed anything, and returns
// when it wants to run again (0: not until a verdict comes). s.mu is held.
func (s *EndpointSet) judgeGone() time.Duration {
	now := clock(time.Now())
	recent := now - int64(goneBurst)
	answered, failing := 0, 0
	// Each instance counts by its latest outcome within the burst window.
	for _, m := range s.cache {
		ok, g := m.lastOK.Load(), m.lastGone.Load()
		switch {
		case g > ok && g >= recent:
			failing++
		case ok >= recent:
			answered++
		}
	}
	shared := failing > answered
	changed := false
	var next time.Duration
	want := func(d time.Duration) {
		if next == 0 || d < next {
			next = d
		}
	}
	for _, m := range s.cache {
		if m.gone.Load() {
			m.pending.Store(false)
			if shared && m.markedAt >= recent {
				m.gone.Store(false)
				m.readmitted, m.streak = now, 0
				changed = true
				s.logger.Log("instance", m.name, "gone", "back: most instances failed at once")
				continue
			}
			if s.readmit(m, now) {
				changed = true
				continue
			}
			want(untilProbe(m, now))
			continue
		}
		if !m.pending.Load() {
			continue
		}
		at := m.pendingAt.Load()
		if ok := m.lastOK.Load(); ok > at {
			// It answered after the verdict's attempt started: judge its
			// latest failure after that answer, if there is one.
			if g := m.lastGone.Load(); g > ok {
				at = g
				m.pendingAt.Store(g)
			} else {
				m.pending.Store(false) // back already (a reconnection), or never gone
				continue
			}
		}
		switch {
		case now-at > int64(goneWindow):
			m.pending.Store(false) // never corroborated in time: let it go
		case !shared && s.corroborated(m, at):
			m.pending.Store(false)
			s.markGone(m, now)
			changed = true
			want(untilProbe(m, now))
		default:
			want(goneRecheck)
		}
	}
	if changed {
		s.publish(s.buildView())
	}
	return next
}

// untilProbe is how long until the worker should look at gone member m
// again: its probe, or the next poll of its revision and breaker.
func untilProbe(m *member, now int64) time.Duration {
	if d := time.Duration(m.probeAt - now); d > 0 && d < goneRevPoll {
		return d
	}
	return goneRevPoll
}

// corroborated reports whether another member, not gone, answered after at.
func (s *EndpointSet) corroborated(m *member, at int64) bool {
	for _, o := range s.cache {
		if o != m && !o.gone.Load() && o.lastOK.Load() > at {
			return true
		}
	}
	return false
}

// markGone takes m out of the candidates until its probe is due. s.mu is
// held.
func (s *EndpointSet) markGone(m *member, now int64) {
	if m.lastOK.Load() > m.readmitted {
		m.streak = 0 // it answered since it last came back: a new incident
	}
	delay := min(goneProbe<<min(m.streak, 8), goneProbeMax)
	m.streak++
	m.probeAt, m.markedAt = now+int64(delay), now
	m.goneRev = 0
	if s.attributes != nil {
		m.goneRev = s.attributes(m.name).Revision
	}
	m.gone.Store(true)
	s.logger.Log("instance", m.name, "gone", "no responders on its own subject while others answer", "probe_in", delay)
}

// readmit brings m back when the registry shows a new write of it or its
// probe is due, and reports whether it did. s.mu is held.
func (s *EndpointSet) readmit(m *member, now int64) bool {
	// A probe waits for the instance's breaker too: offered while its
	// breaker is open, it would only count towards panic mode.
	back := now >= m.probeAt && (m.avail == nil || m.avail.Available())
	if !back && s.attributes != nil {
		if rev := s.attributes(m.name).Revision; rev != 0 && rev != m.goneRev {
			back, m.streak = true, 0
		}
	}
	if back {
		m.gone.Store(false)
		m.readmitted = now
	}
	return back
}

// armGone has the worker run judgeGone after d, or not at all for 0.
func (s *EndpointSet) armGone(d time.Duration) {
	if d <= 0 {
		s.goneTimer.Stop()
		return
	}
	s.goneTimer.Reset(d)
}

// retire closes m's closer once its calls in flight have returned, at most
// the ejector's drain time from now, so that a departed instance's calls
// finish rather than be cut off (closing a grpc.ClientConn cancels its
// calls). The view without m is published first.
func (m *member) retire() {
	if m.closer == nil {
		return
	}
	e := m.ej
	e.mu.Lock()
	e.leaving[m] = struct{}{}
	m.drainTimer = time.AfterFunc(e.drain, m.closeNow)
	e.mu.Unlock()
	m.retiring.Store(true)
	if m.inflight.Load() == 0 {
		m.closeNow()
	}
}

// closeNow closes m's closer, once.
func (m *member) closeNow() {
	m.closeOnce.Do(func() {
		e := m.ej
		e.mu.Lock()
		delete(e.leaving, m)
		if m.drainTimer != nil {
			m.drainTimer.Stop()
		}
		e.mu.Unlock()
		if m.closer == nil {
			return
		}
		if err := m.closer.Close(); err != nil {
			e.logger.Log("instance", m.name, "during", "close", "err", err)
		}
	})
}

// closeLeaving closes every departed member's closer at once: the set is
// closing.
func (e *ejector) closeLeaving() {
	e.mu.Lock()
	ms := make([]*member, 0, len(e.leaving))
	for m := range e.leaving {
		ms = append(ms, m)
	}
	e.mu.Unlock()
	for _, m := range ms {
		m.closeNow()
	}
}

package natskv

import (
	"slices"
	"sync"
	"time"

	"github.com/go-kit/kit/sd"
)

// registerWait is the longest Register waits for a channel's receiver to
// take the current set. go-kit's own instancers wait for ever (a channel
// nobody reads blocks Register, and their watch, for good); past this
// bound the set is delivered in the background instead, as every later
// event is.
const registerWait = time.Second

// subscriber is one registered channel behind a latest-value mailbox: a
// receiver that is ready is handed each event directly; one that is not
// gets the newest event when it is, from a goroutine that lives only while
// something is undelivered. A slow receiver never gets a backlog and never
// holds up the feed; an idle subscriber costs no goroutine.
type subscriber struct {
	ch chan<- sd.Event

	mu      sync.Mutex
	next    sd.Event // the newest undelivered event, while has
	has     bool
	busy    bool // a goroutine (Register's, or a forwarder) is delivering
	stopped bool
	wake    chan struct{} // a newer event, for the goroutine delivering
	done    chan struct{} // closed by stop
	seq     uint64        // the Instancer's event last offered to it, under the Instancer's lock
	wg      sync.WaitGroup
}

func newSubscriber(ch chan<- sd.Event) *subscriber {
	return &subscriber{ch: ch, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// offer queues ev for delivery, replacing any event not yet delivered. It
// never blocks.
func (s *subscriber) offer(ev sd.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if !s.busy {
		select {
		case s.ch <- ev: // the receiver was waiting
			return
		default:
		}
		s.next, s.has = ev, true
		s.busy = true
		s.wg.Add(1)
		go s.forward()
		return
	}
	s.next, s.has = ev, true
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take empties the mailbox; when it is empty the caller stops delivering.
func (s *subscriber) take() (sd.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		s.busy = false
		return sd.Event{}, false
	}
	ev := s.next
	s.next, s.has = sd.Event{}, false
	return ev, true
}

// forward delivers the mailbox's events until it is empty.
func (s *subscriber) forward() {
	defer s.wg.Done()
	for {
		ev, ok := s.take()
		if !ok {
			return
		}
		if !s.send(ev, nil) {
			return
		}
	}
}

// send delivers ev, or a newer event offered meanwhile, and reports whether
// it did; it gives up when the subscriber stops or timeout fires.
func (s *subscriber) send(ev sd.Event, timeout <-chan time.Time) bool {
	for {
		select {
		case s.ch <- ev:
			return true
		case <-s.wake:
			s.mu.Lock()
			if s.has {
				ev = s.next
				s.next, s.has = sd.Event{}, false
			}
			s.mu.Unlock()
		case <-timeout:
			s.mu.Lock()
			if !s.has { // keep it for the forwarder, unless something newer came
				s.next, s.has = ev, true
			}
			s.mu.Unlock()
			return false
		case <-s.done:
			return false
		}
	}
}

// begin marks the subscriber busy for a hand-over by Register; the caller
// holds the lock that orders offers, so that any event published after the
// one handed over is queued behind it.
func (s *subscriber) begin() {
	s.mu.Lock()
	s.busy = true
	s.wg.Add(1)
	s.mu.Unlock()
}

// handOver delivers ev synchronously, as go-kit's instancers do in Register:
// it returns once the receiver took it (at most registerWait). On an
// unbuffered channel it then sends the set once more: that send completes
// only when the receiver comes back for the next value, that is when it has
// handled the first — so a go-kit sd.Endpointer has its endpoints when
// sd.NewEndpointer returns. (A repeated set is harmless to go-kit
// subscribers: the endpoint cache keeps what it has.) Whatever is not
// delivered by then is left to a forwarder.
func (s *subscriber) handOver(ev sd.Event) {
	defer s.wg.Done()
	t := time.NewTimer(registerWait)
	defer t.Stop()
	if s.send(ev, t.C) && cap(s.ch) == 0 {
		again, ok := s.takeNewer()
		if !ok {
			again = sd.Event{Instances: slices.Clone(ev.Instances), Err: ev.Err}
		}
		s.send(again, t.C)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || !s.has {
		s.busy = false
		return
	}
	s.wg.Add(1)
	go s.forward()
}

// takeNewer takes an event offered during a hand-over, if any.
func (s *subscriber) takeNewer() (sd.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return sd.Event{}, false
	}
	ev := s.next
	s.next, s.has = sd.Event{}, false
	return ev, true
}

// stop ends delivery and waits for it. After it returns nothing more is sent
// on the channel. Idempotent.
func (s *subscriber) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

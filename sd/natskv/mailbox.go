package natskv

import (
	"sync"

	"github.com/go-kit/kit/sd"
)

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

// Package mailbox is the latest-value hand-off kitnats puts between a
// producer that must never block (a registry watch, an instancer) and a
// consumer that may be slow (a subscriber, an endpoint set's worker): the
// consumer gets the newest value when it is ready, never a backlog.
package mailbox

import "sync"

// Latest holds at most one value: the newest one put. The zero value is not
// usable; call NewLatest.
type Latest[T any] struct {
	mu   sync.Mutex
	v    T
	has  bool
	wake chan struct{}
}

// NewLatest returns an empty mailbox.
func NewLatest[T any]() *Latest[T] {
	return &Latest[T]{wake: make(chan struct{}, 1)}
}

// Put replaces whatever is held with v. It never blocks.
func (l *Latest[T]) Put(v T) {
	l.Update(func(T, bool) T { return v })
}

// Update replaces the held value with f of it (has is false when the box is
// empty), for a consumer that wants several puts merged rather than the
// newest alone. f runs under the mailbox's lock and must not block. Update
// never blocks.
func (l *Latest[T]) Update(f func(held T, has bool) T) {
	l.mu.Lock()
	l.v, l.has = f(l.v, l.has), true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Ready is signalled after a put; the consumer then calls Take. A signal may
// find the box already emptied by an earlier Take.
func (l *Latest[T]) Ready() <-chan struct{} { return l.wake }

// Take empties the box and returns what it held.
func (l *Latest[T]) Take() (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.v, l.has
	var zero T
	l.v, l.has = zero, false
	return v, ok
}

// Forwarder delivers values to a channel through a Latest: when the
// receiver is waiting and nothing is queued, a value is handed over
// directly; otherwise it replaces whatever is queued, and the forwarder's
// goroutine delivers the newest value when the receiver is ready. Offer
// never blocks.
type Forwarder[T any] struct {
	ch      chan<- T
	box     *Latest[T]
	mu      sync.Mutex // orders direct hand-offs against queued values
	sending bool       // the goroutine holds a value it is trying to deliver
	done    chan struct{}
	exited  chan struct{}
	once    sync.Once
}

// Forward starts a forwarder to ch. Stop it when done.
func Forward[T any](ch chan<- T) *Forwarder[T] {
	f := &Forwarder[T]{ch: ch, box: NewLatest[T](), done: make(chan struct{}), exited: make(chan struct{})}
	go f.run()
	return f
}

// Offer queues v for delivery, replacing any value not yet delivered.
func (f *Forwarder[T]) Offer(v T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
		return
	default:
	}
	if !f.sending {
		if _, queued := f.box.Take(); !queued {
			select {
			case f.ch <- v: // the receiver was waiting: no hand-off needed
				return
			default:
			}
		}
	}
	f.box.Put(v)
}

func (f *Forwarder[T]) take() (T, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.box.Take()
	if ok {
		f.sending = true
	}
	return v, ok
}

func (f *Forwarder[T]) delivered() {
	f.mu.Lock()
	f.sending = false
	f.mu.Unlock()
}

func (f *Forwarder[T]) run() {
	defer close(f.exited)
	for {
		select {
		case <-f.done:
			return
		case <-f.box.Ready():
		}
		v, ok := f.take()
		if !ok {
			continue
		}
	send:
		for {
			select {
			case f.ch <- v:
				break send
			case <-f.box.Ready():
				// A newer value arrived while the receiver was busy:
				// deliver that one instead.
				if nv, ok := f.box.Take(); ok {
					v = nv
				}
			case <-f.done:
				return
			}
		}
		f.delivered()
	}
}

// Stop ends delivery and waits for the forwarder's goroutine. After it
// returns nothing more is sent on the channel. Idempotent.
func (f *Forwarder[T]) Stop() {
	f.once.Do(func() {
		f.mu.Lock() // no direct hand-off after this
		close(f.done)
		f.mu.Unlock()
	})
	<-f.exited
}

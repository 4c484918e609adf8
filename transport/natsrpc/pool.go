package natsrpc

import (
	"sync"
	"sync/atomic"
	"time"
)

// pool decides, for every request of a Service, whether it runs now, waits,
// or is turned away, and it is the one place that holds requests in memory.
//
// Concurrency is a number of tokens, WithMaxConcurrent in all. Each
// method has a lane, and each lane a reserve of tokens that the other lanes
// cannot take: a request starts when its lane holds fewer tokens than its
// reserve, or when a token is free beyond the reserves the other lanes are
// not using. One method flooded with slow requests therefore takes at most
// max − (methods−1)·reserve tokens, and every sibling can always start its
// reserve's worth of requests at once.
//
// A request that cannot start waits in its lane's queue (FIFO, at most
// WithMaxPending per method), unless the queue is full or, at the lane's
// measured service time, the queue ahead of it and its own service would
// outlast its deadline: then it is refused with CodeUnavailable at once, so
// the caller retries elsewhere while it still has time. A released token goes to the
// releasing lane if it fell under its reserve, otherwise round robin to the
// lanes with waiting requests. A waiting request whose deadline passes is
// dropped unrun when its turn comes (or when a newer one arrives behind it).
//
// The pool also counts the requests it holds (queued or running), so that
// Shutdown can wait until every delivered request is replied.
type pool struct {
	mu      sync.Mutex
	max     int // tokens in all
	reserve int // tokens each lane keeps from the others
	running int // tokens held
	unmet   int // Σ over lanes of max(0, reserve − lane.running)
	lanes   []*lane
	rr      int // round-robin cursor over lanes
	stopped bool

	refuse func(j *job, code int, msg string) // replies an error without running j
	drop   func(j *job)                       // j's deadline passed before it ran

	held atomic.Int64 // queued or running
}

// lane is one method's share of the pool.
type lane struct {
	running int
	queue   []*job // ring of WithMaxPending
	head, n int
	// mean is the average time a request of this method holds a token
	// (exponentially weighted, 1/8 per request); 0 until one finishes.
	mean time.Duration
}

// reserveFor is each lane's reserve: a quarter of the pool shared equally,
// at least one token per method while the pool has as many tokens as there
// are methods, none when it has fewer (nothing can be reserved then; the
// lanes share the pool in turns).
func reserveFor(max, methods int) int {
	if methods <= 1 || max < methods {
		return 0
	}
	return maxInt(1, max/(4*methods))
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func newPool(max, pending, methods int, refuse func(*job, int, string), drop func(*job)) *pool {
	p := &pool{
		max:     max,
		reserve: reserveFor(max, methods),
		lanes:   make([]*lane, methods),
		refuse:  refuse,
		drop:    drop,
	}
	p.unmet = p.reserve * methods
	for i := range p.lanes {
		p.lanes[i] = &lane{queue: make([]*job, pending)}
	}
	return p
}

// canStart reports whether a request of l may take a token now. Lock held.
func (p *pool) canStart(l *lane) bool {
	return l.running < p.reserve || p.running+p.unmet < p.max
}

// acquire gives l a token. Lock held, canStart(l) true.
func (p *pool) acquire(l *lane) {
	if l.running < p.reserve {
		p.unmet--
	}
	l.running++
	p.running++
}

// release takes l's token back. Lock held.
func (p *pool) release(l *lane) {
	l.running--
	p.running--
	if l.running < p.reserve {
		p.unmet++
	}
}

// admit is a request's way in, called once it has been stamped with its
// arrival and deadline. It returns true when j holds a token: the caller
// runs it and then calls done. Otherwise the pool has queued j, or refused
// or dropped it.
func (p *pool) admit(j *job) bool {
	l := j.lane
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.refuse(j, CodeUnavailable, msgShuttingDown)
		return false
	}
	if p.canStart(l) {
		p.acquire(l)
		p.mu.Unlock()
		p.held.Add(1)
		return true
	}
	// Every token this lane may take is held. Requests at the head of the
	// queue whose deadline has passed go first: they would only be dropped
	// later, and they hold places a live request can use.
	var dead [4]*job
	nd := 0
	for nd < len(dead) && l.n > 0 && l.queue[l.head].expired(j.recv) {
		dead[nd] = l.pop()
		nd++
	}
	code := 0
	switch {
	case l.n == len(l.queue):
		code = CodeUnavailable
	case !j.deadline.IsZero() && l.mean > 0:
		// The queue ahead drains at l.running requests per l.mean, then j
		// takes l.mean itself: refuse it now if it would not finish in time,
		// while the caller can still go elsewhere.
		wait := time.Duration(l.n+1)*l.mean/time.Duration(maxInt(1, l.running)) + l.mean
		if j.recv.Add(wait).After(j.deadline) {
			code = CodeUnavailable
		}
	}
	if code == 0 {
		l.push(j)
		p.held.Add(1)
	}
	p.mu.Unlock()
	for _, d := range dead[:nd] {
		p.drop(d)
		p.finished()
	}
	if code != 0 {
		p.refuse(j, code, msgOverloaded)
	}
	return false
}

// done hands back the token of j, which finished at now, and returns the
// next request to run on the same token's worker, or nil. Requests whose
// deadline passed while they waited are dropped on the way.
func (p *pool) done(j *job, now time.Time) *job {
	l := j.lane
	took := now.Sub(j.start)
	p.mu.Lock()
	if l.mean == 0 {
		l.mean = took
	} else {
		l.mean += (took - l.mean) / 8
	}
	next := p.handBack(l)
	p.mu.Unlock()
	p.finished()
	for next != nil && next.expired(now) {
		p.drop(next)
		p.finished()
		p.mu.Lock()
		next = p.handBack(next.lane)
		p.mu.Unlock()
	}
	return next
}

// handBack releases l's token and gives it to the request that may use it:
// the head of l's queue if l fell under its reserve (the token is l's own),
// otherwise the head of the next lane round robin that may start. Lock
// held.
func (p *pool) handBack(l *lane) *job {
	p.release(l)
	if l.running < p.reserve {
		if l.n == 0 {
			return nil
		}
		p.acquire(l)
		return l.pop()
	}
	for i := range p.lanes {
		k := (p.rr + i) % len(p.lanes)
		c := p.lanes[k]
		if c.n > 0 && p.canStart(c) {
			p.rr = k + 1
			p.acquire(c)
			return c.pop()
		}
	}
	return nil
}

func (l *lane) push(j *job) {
	l.queue[(l.head+l.n)%len(l.queue)] = j
	l.n++
}

func (l *lane) pop() *job {
	j := l.queue[l.head]
	l.queue[l.head] = nil
	l.head = (l.head + 1) % len(l.queue)
	l.n--
	return j
}

func (p *pool) finished() {
	p.held.Add(-1)
}

// stop refuses every queued request and every later one with
// CodeUnavailable. Running requests finish; done then returns nil.
func (p *pool) stop() {
	p.mu.Lock()
	p.stopped = true
	var queued []*job
	for _, l := range p.lanes {
		for l.n > 0 {
			queued = append(queued, l.pop())
		}
	}
	p.mu.Unlock()
	for _, j := range queued {
		p.refuse(j, CodeUnavailable, msgShuttingDown)
		p.finished()
	}
}

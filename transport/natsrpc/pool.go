package natsrpc

import (
	"context"
	"sync"
	"sync/atomic"
)

// pool runs a Service's requests on at most max workers. Workers start on
// demand, one per request while under the bound, and are reused: no
// goroutine per request, and a worker keeps the stack it has grown. Past the
// bound, submit waits for a worker, so further requests wait in the
// subscription's pending buffer.
//
// submit is the one place a request enters the pool, and refuse the one way
// it leaves unrun: admission rules (how long a request may wait, which goes
// first, when to turn one away) belong in the pool, between the two.
//
// The pool also counts the requests it holds (queued or running), so that
// Shutdown can wait until every delivered request is replied.
type pool struct {
	max    int32
	run    func(*job)                         // serves a request on a worker
	refuse func(j *job, code int, msg string) // replies an error without running it

	work     chan *job     // unbuffered: a send succeeds only into an idle worker
	quit     chan struct{} // closed when the workers must exit
	nworkers atomic.Int32
	workers  sync.WaitGroup

	inflight atomic.Int64  // submitted and not yet finished
	draining atomic.Bool   // someone waits in wait for inflight to reach 0
	idle     chan struct{} // signalled when inflight drops to 0 while draining
}

func newPool(max int, run func(*job), refuse func(*job, int, string)) *pool {
	return &pool{
		max:    int32(min(max, 1<<30)),
		run:    run,
		refuse: refuse,
		work:   make(chan *job),
		quit:   make(chan struct{}),
		idle:   make(chan struct{}, 1),
	}
}

// submit runs on the subscription's goroutine: hand the job to an idle
// worker, start a new worker while under the bound, or wait for one. Once
// the pool is stopped, a job still waiting is refused as CodeUnavailable.
func (p *pool) submit(j *job) {
	p.inflight.Add(1)
	select {
	case p.work <- j:
		return
	default:
	}
	for {
		n := p.nworkers.Load()
		if n >= p.max {
			break
		}
		if p.nworkers.CompareAndSwap(n, n+1) {
			p.workers.Add(1)
			go p.worker(j)
			return
		}
	}
	select {
	case p.work <- j:
	case <-p.quit:
		p.refuse(j, CodeUnavailable, msgShuttingDown)
		p.finish()
	}
}

func (p *pool) worker(j *job) {
	defer p.workers.Done()
	for {
		p.serve(j)
		select {
		case j = <-p.work:
		case <-p.quit:
			return
		}
	}
}

// serve runs one job and counts it finished, whatever happens in run.
func (p *pool) serve(j *job) {
	defer p.finish()
	p.run(j)
}

func (p *pool) finish() {
	if p.inflight.Add(-1) == 0 && p.draining.Load() {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// wait returns once no submitted job is queued or running, or with
// ctx.Err() when ctx ends first.
func (p *pool) wait(ctx context.Context) error {
	p.draining.Store(true)
	for p.inflight.Load() > 0 {
		select {
		case <-p.idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// stop makes idle workers exit and refuses jobs still waiting in submit.
// Call it once.
func (p *pool) stop() { close(p.quit) }

// join waits for every worker to exit: after stop, once their jobs are done.
func (p *pool) join() { p.workers.Wait() }

package natsrpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is context.WithDeadline without the up-front cost: it reports
// the deadline at once, but builds the real timer-backed context only when
// someone asks for Done. Most handlers read the deadline, pass ctx on, or
// never look at it; a NATS call made with it asks for Done and gets a real
// one. Err agrees with the clock even before Done is built.
type deadlineCtx struct {
	context.Context // parent
	deadline        time.Time

	once   sync.Once
	real   atomic.Pointer[context.Context]
	cancel context.CancelFunc
}

func withLazyDeadline(parent context.Context, d time.Time) *deadlineCtx {
	c := new(deadlineCtx)
	c.init(parent, d)
	return c
}

// init sets up a zero deadlineCtx in place (the server embeds one in each
// request's job, saving an allocation). Not for reuse.
func (c *deadlineCtx) init(parent context.Context, d time.Time) {
	c.Context = parent
	c.deadline = d
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) materialize() context.Context {
	c.once.Do(func() {
		ctx, cancel := context.WithDeadline(c.Context, c.deadline)
		c.cancel = cancel
		c.real.Store(&ctx)
	})
	return *c.real.Load()
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.materialize().Done() }

func (c *deadlineCtx) Err() error {
	if r := c.real.Load(); r != nil {
		return (*r).Err()
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value is the parent's: a deadline adds no values.
func (c *deadlineCtx) Value(key any) any { return c.Context.Value(key) }

// release ends the context when the request is done, as a cancel func
// does: it stops the timer if one was built, and otherwise makes any later
// Done or Err (from a goroutine the handler left behind) report Canceled.
func (c *deadlineCtx) release() {
	c.once.Do(func() { c.real.Store(&releasedCtx) })
	if c.cancel != nil {
		c.cancel()
	}
}

var releasedCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

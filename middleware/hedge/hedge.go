package hedge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/aegis-sdk/kitnats/internal/unsent"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// The counters, named in the package documentation.
const (
	scopeName             = "github.com/aegis-sdk/kitnats/middleware/hedge"
	sentMetric            = "kitnats.hedge.sent"
	wonMetric             = "kitnats.hedge.won"
	budgetExhaustedMetric = "kitnats.hedge.budget_exhausted"
)

// ErrLost is the cause (context.Cause) of the cancellation of the attempt
// that lost the race: the other one answered first. Its ctx.Err() is
// context.Canceled, which the breaker package does not count against the
// instance.
var ErrLost = errors.New("kitnats/hedge: another attempt answered first")

// Balancer is an lb.Balancer that hedges the calls marked idempotent: Pick
// returns the instance the balancer beneath picked, with an endpoint that
// sends a backup request to another instance when the first one has not
// answered after the hedge delay, and returns the first success. A backup
// that meets an instance which costs nothing to try (its breaker open, lb
// holding it gone, no responders) goes on to another, at most four in all,
// so a first attempt stuck on a crashed instance is still rescued. Calls
// that are not marked go through untouched.
//
// A Balancer is safe for concurrent use. Build one per method: its delay
// tracks that method's latency.
type Balancer struct {
	next   lb.Balancer
	delay  *tracker
	budget *Budget

	mSent, mWon, mExhausted metric.Int64Counter
	attrs                   metric.AddOption

	calls, sent, won, exhausted, alone atomic.Uint64
}

// Stats are a Balancer's counts since New.
type Stats struct {
	Calls           uint64        // calls that could be hedged (one per retry attempt): marked idempotent, an instance picked
	Sent            uint64        // backup requests sent
	Won             uint64        // backup requests whose response was returned
	BudgetExhausted uint64        // calls due a backup that the budget refused (some got one later)
	NoOtherInstance uint64        // backup requests due but with no other instance to go to
	Delay           time.Duration // the hedge delay now
}

var _ lb.Balancer = (*Balancer)(nil)

// New returns a Balancer that hedges the idempotent calls (retry.Idempotent,
// retry.WithIdempotent) that next balances. See the package documentation.
func New(next lb.Balancer, opts ...Option) (*Balancer, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: nil balancer", ErrInvalidOption)
	}
	o := options{q: defaultQuantile, minDelay: defaultMinDelay, initial: defaultInitialDelay}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.apply(&o); err != nil {
			return nil, err
		}
	}
	h := &Balancer{next: next, budget: o.budget}
	if !o.budgetSet {
		h.budget, _ = NewBudget(defaultBudgetRatio, defaultBudgetBurst)
	}
	if o.fixed > 0 {
		h.delay = newFixed(o.fixed)
	} else {
		h.delay = newTracker(o.q, o.minDelay, o.initial)
	}

	mp := o.mp
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(scopeName)
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		c, cerr := m.Int64Counter(name, metric.WithUnit("{request}"), metric.WithDescription(desc))
		err = errors.Join(err, cerr)
		if c == nil {
			return noop.Int64Counter{}
		}
		return c
	}
	h.mSent = counter(sentMetric, "Backup requests sent by hedging.")
	h.mWon = counter(wonMetric, "Backup requests whose response was returned.")
	h.mExhausted = counter(budgetExhaustedMetric, "Calls due a backup request that the hedging budget refused.")
	if err != nil {
		otel.Handle(err) // a bad name or unit: count with what came back, or nothing
	}
	h.attrs = metric.WithAttributeSet(attribute.NewSet(o.attributes...))
	return h, nil
}

// Endpoint satisfies go-kit's lb.Balancer. It is Pick with a background
// context, which is never marked idempotent: it is never hedged.
func (h *Balancer) Endpoint() (endpoint.Endpoint, error) { return h.next.Endpoint() }

// Pick asks the balancer beneath for an instance. When ctx is marked
// idempotent it returns that instance with an endpoint that hedges; the
// backup request goes to an instance the balancer beneath picks from those
// neither in tried nor the first one. Pick allocates one closure for the
// calls it hedges, nothing for the others.
func (h *Balancer) Pick(ctx context.Context, tried []string) (lb.Pick, error) {
	p, err := h.next.Pick(ctx, tried)
	if err != nil || !retry.IsIdempotent(ctx) {
		return p, err
	}
	return lb.Pick{
		Instance: p.Instance,
		Endpoint: func(ctx context.Context, request any) (any, error) {
			return h.serve(ctx, request, p, tried)
		},
	}, nil
}

// Stats returns the counts since New, for reports; the same counts go to the
// OpenTelemetry counters.
func (h *Balancer) Stats() Stats {
	return Stats{
		Calls:           h.calls.Load(),
		Sent:            h.sent.Load(),
		Won:             h.won.Load(),
		BudgetExhausted: h.exhausted.Load(),
		NoOtherInstance: h.alone.Load(),
		Delay:           h.delay.delay(),
	}
}

// attempt is one side of a hedged call that failed.
type attempt struct {
	instance string
	err      error
}

// bothFailedError is returned when both the first attempt and the backup
// failed. It unwraps to both errors, the first attempt's first, so
// errors.Is and errors.As (and the retry package's classifier) reach each
// of them.
type bothFailedError struct {
	primary, backup attempt
}

func (e *bothFailedError) Error() string {
	return fmt.Sprintf("kitnats/hedge: both attempts failed: %s: %v; backup %s: %v",
		e.primary.instance, e.primary.err, e.backup.instance, e.backup.err)
}

func (e *bothFailedError) Unwrap() []error { return []error{e.primary.err, e.backup.err} }

// IsBackup reports whether ctx is the context of a backup request, for
// middleware beneath the balancer (logging, tracing) that wants to tell.
func IsBackup(ctx context.Context) bool {
	_, ok := ctx.Value(backupKey{}).(bool)
	return ok
}

type backupKey struct{}

// backupCtx is the context of a backup request: IsBackup answers it.
type backupCtx struct{ context.Context }

func (c backupCtx) Value(key any) any {
	if key == (backupKey{}) {
		return true
	}
	return c.Context.Value(key)
}

// race is one hedged call: the first attempt runs on the caller's
// goroutine, the backup on the timer's. mu orders their ends.
type race struct {
	h       *Balancer
	ctx     context.Context
	request any
	primary string
	tried   []string
	pcancel context.CancelCauseFunc

	mu          sync.Mutex
	timer       *time.Timer
	wait        time.Duration // until the timer fires next, from the last firing
	refused     bool          // the budget refused a backup at least once
	primaryDone bool          // the first attempt returned
	primaryWon  bool          // … with success, before the backup did
	launched    bool          // the backup was sent: done, bcancel and backup are set
	backup      string
	bcancel     context.CancelCauseFunc
	done        chan struct{} // closed when the backup returned
	bResp       any
	bErr        error
	backupWon   bool
}

// maxBackupHops bounds the instances one backup request is sent to when
// those before cost nothing to try (see fire).
const maxBackupHops = 4

// The wait between budget refusals doubles within these bounds.
const (
	minWait = 100 * time.Microsecond
	maxWait = time.Minute
)

func (h *Balancer) serve(ctx context.Context, request any, primary lb.Pick, tried []string) (any, error) {
	h.calls.Add(1)
	if h.budget != nil {
		h.budget.deposit()
	}
	pctx, pcancel := context.WithCancelCause(ctx)
	r := &race{h: h, ctx: ctx, request: request, primary: primary.Instance, tried: tried, pcancel: pcancel}
	r.mu.Lock()
	r.wait = h.delay.delay()
	r.timer = time.AfterFunc(r.wait, r.fire)
	r.mu.Unlock()

	// The first attempt runs here rather than on a goroutine of its own: no
	// goroutine and no hand-off for the calls that are not hedged (most).
	// When the backup wins, it cancels pctx and the first attempt returns at
	// once — endpoints honour their context, as natsrpc's do.
	start := time.Now()
	resp, err := primary.Endpoint(pctx, request)
	elapsed := time.Since(start)

	r.mu.Lock()
	r.primaryDone = true
	if !r.launched {
		// No backup was sent, and none will be: fire checks primaryDone.
		timer := r.timer
		r.mu.Unlock()
		timer.Stop()
		pcancel(nil)
		if err == nil {
			h.delay.observe(elapsed)
		}
		return resp, err
	}
	switch {
	case r.backupWon:
		// The backup answered first and cancelled this attempt; its
		// latency is unknown (longer than elapsed) and is not recorded —
		// recording elapsed would feed the delay back into itself.
		r.mu.Unlock()
		pcancel(nil)
		return r.bResp, nil
	case err == nil:
		r.primaryWon = true
		r.mu.Unlock()
		r.bcancel(ErrLost)
		pcancel(nil)
		h.delay.observe(elapsed)
		return resp, nil
	}
	// The first attempt failed; the backup is still running, or failed.
	done, bcancel := r.done, r.bcancel
	r.mu.Unlock()
	pcancel(nil)
	select {
	case <-done:
	case <-ctx.Done():
		bcancel(ctx.Err())
		return nil, err
	}
	if r.bErr == nil {
		return r.bResp, nil
	}
	return nil, &bothFailedError{primary: attempt{primary.Instance, err}, backup: attempt{r.backup, r.bErr}}
}

// fire runs on the timer's goroutine when the first attempt has not answered
// within the delay: it takes a backup from the budget, picks another
// instance and sends the backup request.
//
// When the budget has none, the timer is set again for twice the wait (d,
// 2d, 4d… after the start): the calls waiting longest are the likeliest to
// be stuck for good — on an instance that crashed with the request in
// flight, say — and the budget fills again with every call. The budget's
// bound holds all the same; it goes to the calls that need it most rather
// than to whichever was first to pass the delay.
func (r *race) fire() {
	h := r.h
	r.mu.Lock()
	if r.primaryDone {
		r.mu.Unlock()
		return
	}
	if h.budget != nil && !h.budget.tryWithdraw() {
		if !r.refused {
			// Counted under mu, so that the counts read after the call
			// returned are final; the counter first, then Stats.
			h.mExhausted.Add(r.ctx, 1, h.attrs)
			h.exhausted.Add(1)
		}
		r.refused = true
		r.wait = min(max(2*r.wait, minWait), maxWait)
		r.timer.Reset(r.wait)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	refund := func() {
		if h.budget != nil {
			h.budget.refund()
		}
	}

	// A copy: the caller (retry) appends to its tried slice later on.
	exclude := append(slices.Clip(r.tried), r.primary)
	var (
		resp    any
		err     error
		bcancel context.CancelCauseFunc
	)
	// A backup that meets an instance which costs nothing to try — its
	// breaker open, held gone, no responders — is sent on to another one,
	// while the first attempt runs: a backup spent on the dead would leave
	// a first attempt stuck on a crashed instance with no rescue.
	for hop := 0; ; hop++ {
		p, perr := h.next.Pick(r.ctx, exclude)
		if perr != nil || slices.Contains(exclude, p.Instance) {
			if hop == 0 {
				refund()
				h.alone.Add(1)
				return
			}
			break // the previous hop's failure stands
		}
		bctx, cancel := context.WithCancelCause(r.ctx)
		// Beneath retry, the backup is the same attempt sent to another
		// instance: AttemptFromContext names the backup's instance.
		bc := backupCtx{retry.Reroute(bctx, p.Instance)}

		r.mu.Lock()
		if r.primaryDone {
			r.mu.Unlock()
			cancel(nil)
			if hop == 0 {
				refund()
				return
			}
			break
		}
		if hop == 0 {
			r.launched, r.done = true, make(chan struct{})
			h.mSent.Add(r.ctx, 1, h.attrs)
			h.sent.Add(1)
		}
		r.backup, r.bcancel = p.Instance, cancel
		r.mu.Unlock()
		if bcancel != nil {
			bcancel(nil)
		}
		bcancel = cancel

		resp, err = p.Endpoint(bc, r.request)
		if err == nil || hop+1 >= maxBackupHops || !unsent.Is(err) {
			break
		}
		exclude = append(exclude, p.Instance)
	}

	r.mu.Lock()
	r.bResp, r.bErr = resp, err
	won := err == nil && !r.primaryWon
	r.backupWon = won
	if won {
		// Counted before the caller can return, so that the counts read
		// after a call include it.
		h.mWon.Add(r.ctx, 1, h.attrs)
		h.won.Add(1)
	}
	close(r.done)
	r.mu.Unlock()
	if won {
		r.pcancel(ErrLost)
	}
	bcancel(nil)
}

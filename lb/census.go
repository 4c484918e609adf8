package lb

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// The set's metrics, named in the package documentation.
const (
	scopeName          = "github.com/aegis-sdk/kitnats/lb"
	metricUnavailable  = "kitnats.lb.instances.unavailable"
	metricPanicMode    = "kitnats.lb.panic_mode"
	metricPanicEngaged = "kitnats.lb.panic_mode.engaged"
)

// When the set counts its unavailable instances (a census): on every view
// it publishes; at most censusMinGap after a pick meets an unavailable
// instance; and every censusPeriod while the latest census found one, to
// see instances come back without traffic. A census costs one Available
// call per instance, off the pick path, on the set's goroutine.
const (
	censusMinGap = 10 * time.Millisecond
	censusPeriod = 100 * time.Millisecond
)

// census is the set's count of unavailable instances, for View.Unavailable
// (of the view and of every view Filter made from it) and for panic mode.
//
// Availability is polled (Available), not pushed, so the count is taken by
// walking the view, off the pick path. A pick learns nothing new and pays
// nothing while the instances it meets are available; one that meets an
// unavailable instance reads engaged, and asks for a census by setting
// dirty, once per census.
type census struct {
	_       [64]byte // engaged and dirty are read by picks: keep them apart from neighbours
	engaged atomic.Bool
	dirty   atomic.Bool
	_       [62]byte

	wake      chan struct{} // to the set's worker: a census is wanted; capacity 1
	threshold float64       // 0: panic mode disabled
	logger    log.Logger

	mu      sync.Mutex // serialises censuses
	last    time.Time  // when the latest census ran
	scratch []bool     // the latest census, by position in the view

	engagedN metric.Int64Counter
	attrs    metric.MeasurementOption
	reg      metric.Registration
}

func newCensus(o *setOptions, logger log.Logger) *census {
	return &census{
		wake:      make(chan struct{}, 1),
		threshold: o.panicThreshold,
		logger:    logger,
	}
}

// excuse is called by a pick that finds an instance unavailable. It asks
// for a census (once until the next one runs) and reports whether panic
// mode excuses the instance: whether it counts as available anyway.
func (c *census) excuse() bool {
	if c == nil {
		return false
	}
	if !c.dirty.Load() && c.dirty.CompareAndSwap(false, true) {
		c.poke()
	}
	return c.engaged.Load()
}

// poke wakes the set's worker without blocking.
func (c *census) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run counts the unavailable instances of the set's current view, which it
// loads once it holds c.mu, and those of the views Filter made from it;
// then it enters or leaves panic mode. It returns how many of the view's
// instances are unavailable.
func (c *census) run(current func() *View) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.countLocked(current())
}

// publish counts v, a view the set is about to publish, and has store make
// it current, both under c.mu: a census never judges a view older than the
// latest one counted.
func (c *census) publish(v *View, store func(*View)) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.countLocked(v)
	store(v)
	return n
}

func (c *census) countLocked(v *View) int {
	c.last = time.Now()
	// Cleared first: an instance that goes down during the count asks
	// again.
	c.dirty.Store(false)
	down := c.scratch[:0]
	n := 0
	for _, in := range v.all {
		d := !in.Available()
		down = append(down, d)
		if d {
			n++
		}
	}
	c.scratch = down
	for _, sub := range v.filtered() {
		k := 0
		for _, i := range sub.idx {
			if down[i] {
				k++
			}
		}
		sub.unavailable.Store(int32(k))
	}
	// The set's view last: whoever sees its count sees its parts' too.
	v.unavailable.Store(int32(n))
	c.judge(n, len(v.all))
	return n
}

// judge enters panic mode when more than the threshold's share of the
// instances are unavailable, and leaves it when the share is back at or
// below the threshold (no hysteresis, as Envoy). c.mu is held.
func (c *census) judge(unavailable, instances int) {
	panicking := c.threshold > 0 && unavailable > 0 && float64(unavailable) > c.threshold*float64(instances)
	if panicking == c.engaged.Load() {
		return
	}
	c.engaged.Store(panicking)
	state := "disengaged"
	if panicking {
		state = "engaged"
		c.engagedN.Add(context.Background(), 1, c.attrs)
	}
	c.logger.Log("panic_mode", state, "unavailable", unavailable, "instances", instances, "threshold", c.threshold)
}

// instrument creates the set's metrics. An instrument the provider refuses
// is replaced by a no-op one; the error goes to otel's handler.
func (c *census) instrument(o *setOptions, view func() *View) {
	mp := o.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(scopeName)
	set := attribute.NewSet(o.metricAttrs...)
	c.attrs = metric.WithAttributeSet(set)
	var err, e error
	c.engagedN, err = m.Int64Counter(metricPanicEngaged, metric.WithUnit("{occurrence}"),
		metric.WithDescription("Times the endpoint set entered panic mode: balancing over every instance because too many were unavailable."))
	if c.engagedN == nil {
		c.engagedN = noop.Int64Counter{}
	}
	unavailable, e := m.Int64ObservableGauge(metricUnavailable, metric.WithUnit("{instance}"),
		metric.WithDescription("Instances of the endpoint set whose closer reports them unavailable (an open circuit breaker)."))
	err = errors.Join(err, e)
	panicMode, e := m.Int64ObservableGauge(metricPanicMode,
		metric.WithDescription("1 while the endpoint set is in panic mode, else 0."))
	err = errors.Join(err, e)
	if unavailable != nil && panicMode != nil {
		observe := metric.WithAttributeSet(set)
		c.reg, e = m.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
			obs.ObserveInt64(unavailable, int64(view().Unavailable()), observe)
			var p int64
			if c.engaged.Load() {
				p = 1
			}
			obs.ObserveInt64(panicMode, p, observe)
			return nil
		}, unavailable, panicMode)
		err = errors.Join(err, e)
	}
	if err != nil {
		otel.Handle(err)
	}
}

func (c *census) close() {
	if c.reg != nil {
		_ = c.reg.Unregister()
	}
}

// lastRun is when the latest census ran.
func (c *census) lastRun() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

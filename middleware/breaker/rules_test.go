package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestDefaultSettings(t *testing.T) {
	st := breaker.DefaultSettings()
	if st.Timeout != 5*time.Second {
		t.Errorf("open period: want 5s, have %v", st.Timeout)
	}
	if st.MaxRequests != 3 {
		t.Errorf("half-open probes: want 3, have %d", st.MaxRequests)
	}
	if st.Interval != 10*time.Second || st.BucketPeriod != time.Second {
		t.Errorf("window: want 10s in buckets of 1s, have %v in buckets of %v", st.Interval, st.BucketPeriod)
	}
	for _, tc := range []struct {
		c    gobreaker.Counts
		want bool
	}{
		{gobreaker.Counts{ConsecutiveFailures: 5, TotalFailures: 5}, false},
		{gobreaker.Counts{ConsecutiveFailures: 6, TotalFailures: 6}, true},
		// Half of ten: the ratio rule.
		{gobreaker.Counts{ConsecutiveFailures: 1, TotalFailures: 5, TotalSuccesses: 5}, true},
		{gobreaker.Counts{ConsecutiveFailures: 1, TotalFailures: 4, TotalSuccesses: 6}, false},
		// Under the minimum of ten counted calls the ratio does not apply.
		{gobreaker.Counts{ConsecutiveFailures: 1, TotalFailures: 4, TotalSuccesses: 4}, false},
		// Excluded calls are not counted calls.
		{gobreaker.Counts{ConsecutiveFailures: 1, TotalFailures: 4, TotalSuccesses: 4, TotalExclusions: 100, Requests: 108}, false},
	} {
		if have := st.ReadyToTrip(tc.c); tc.want != have {
			t.Errorf("ReadyToTrip(%+v): want %v, have %v", tc.c, tc.want, have)
		}
	}

	// WithSettings fills the fields it leaves zero with the same defaults.
	var opened time.Time
	var reopened time.Duration
	cb := breaker.New("x", breaker.WithSettings(gobreaker.Settings{Timeout: 50 * time.Millisecond}),
		breaker.WithStateChange(func(_ string, from, to string) {
			switch {
			case to == "open":
				opened = time.Now()
			case from == "open":
				reopened = time.Since(opened)
			}
		}))
	e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, errDown })
	for i := range breaker.DefaultConsecutiveFailures - 1 {
		_, _ = e(context.Background(), nil)
		if cb.State() != gobreaker.StateClosed {
			t.Fatalf("open after %d failures", i+1)
		}
	}
	_, _ = e(context.Background(), nil)
	if cb.State() != gobreaker.StateOpen {
		t.Fatalf("closed after %d consecutive failures", breaker.DefaultConsecutiveFailures)
	}
	waitFor(t, "half-open", func() bool { return cb.State() == gobreaker.StateHalfOpen })
	if reopened < 50*time.Millisecond {
		t.Errorf("half-open after %v, before the Timeout given", reopened)
	}
}

func TestTransportErrorsNeverCount(t *testing.T) {
	cb := breaker.New("x", breaker.WithSettings(tripAt3))
	errs := []error{
		nats.ErrConnectionClosed,
		nats.ErrDisconnected,
		nats.ErrConnectionReconnecting,
		fmt.Errorf("send: %w", nats.ErrReconnectBufExceeded),
		&natsrpc.CallError{Subject: "rpc.x.y.z", Err: natsrpc.ErrConnClosed},
		&natsrpc.CallError{Subject: "rpc.x.y.z", Err: natsrpc.ErrConnClosed, Cause: nats.ErrConnectionDraining},
	}
	for _, err := range errs {
		if !breaker.IsTransportError(err) {
			t.Errorf("IsTransportError(%v) = false", err)
		}
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, err })
		for range 3 {
			if _, have := e(context.Background(), nil); have != err {
				t.Fatalf("want the error unchanged, have %v", have)
			}
		}
	}
	if c := cb.Counts(); cb.State() != gobreaker.StateClosed || c.TotalFailures != 0 {
		t.Errorf("transport errors counted: %v, %+v", cb.State(), c)
	}
	for _, err := range []error{errDown, nats.ErrNoResponders, context.DeadlineExceeded, nats.ErrTimeout} {
		if breaker.IsTransportError(err) {
			t.Errorf("IsTransportError(%v) = true", err)
		}
	}
}

// TestExcludedWhileDisconnected drives a real connection through a server
// restart: failures while it is down, of calls that spanned the outage, and
// within the reconnect grace are not counted; others are.
func TestExcludedWhileDisconnected(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL(), fastReconnect...)
	connected := func() bool { return nc.Status() == nats.CONNECTED }

	t.Run("down", func(t *testing.T) {
		cb := breaker.New("x", breaker.WithSettings(tripAt3), breaker.WithConn(nc))
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, errDown })
		srv.Stop()
		waitFor(t, "disconnect", func() bool { return !connected() })
		for range 10 {
			_, _ = e(context.Background(), nil)
		}
		if err := srv.StartAgain(); err != nil {
			t.Fatal(err)
		}
		if c := cb.Counts(); cb.State() != gobreaker.StateClosed || c.TotalFailures != 0 || c.TotalExclusions != 10 {
			t.Errorf("failures while disconnected counted: %v, %+v", cb.State(), c)
		}
		waitFor(t, "reconnect", connected)
	})

	t.Run("spanning the outage", func(t *testing.T) {
		cb := breaker.New("x", breaker.WithSettings(tripAt3), breaker.WithConn(nc), breaker.WithReconnectGrace(0))
		started, release := make(chan struct{}), make(chan struct{})
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) {
			if started != nil {
				close(started)
				<-release
			}
			return nil, errDown
		})
		done := make(chan error)
		go func() { _, err := e(context.Background(), nil); done <- err }()
		<-started
		// The request was sent while connected; its failure comes after
		// the connection went down and came back.
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "reconnect", connected)
		close(release)
		if err := <-done; err != errDown {
			t.Fatalf("want the endpoint's error, have %v", err)
		}
		if c := cb.Counts(); c.TotalFailures != 0 || c.TotalExclusions != 1 {
			t.Errorf("a failure spanning the outage counted: %+v", c)
		}
		// Once the connection is back and no grace applies, failures count.
		started = nil
		waitFor(t, "a failure to count", func() bool {
			_, _ = e(context.Background(), nil)
			return cb.Counts().TotalFailures > 0
		})
	})

	t.Run("grace", func(t *testing.T) {
		cb := breaker.New("x", breaker.WithSettings(tripAt3), breaker.WithConn(nc), breaker.WithReconnectGrace(time.Hour))
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, errDown })
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "reconnect", connected)
		for range 10 {
			_, _ = e(context.Background(), nil)
		}
		if c := cb.Counts(); cb.State() != gobreaker.StateClosed || c.TotalFailures != 0 {
			t.Errorf("failures within the grace counted: %v, %+v", cb.State(), c)
		}
	})

	t.Run("connected", func(t *testing.T) {
		// A connection that never went down excuses nothing.
		other := natstest.Connect(t, srv.URL(), fastReconnect...)
		cb := breaker.New("x", breaker.WithSettings(tripAt3), breaker.WithConn(other), breaker.WithReconnectGrace(time.Hour))
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, errDown })
		for range 3 {
			_, _ = e(context.Background(), nil)
		}
		if want, have := gobreaker.StateOpen, cb.State(); want != have {
			t.Errorf("state: want %v, have %v", want, have)
		}
	})

	t.Run("closed", func(t *testing.T) {
		// A closed connection's watcher has ended; its failures are the
		// transport's for good.
		closed := natstest.Connect(t, srv.URL())
		closed.Close()
		cb := breaker.New("x", breaker.WithSettings(tripAt3), breaker.WithConn(closed))
		e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, errDown })
		for range 3 {
			_, _ = e(context.Background(), nil)
		}
		if want, have := gobreaker.StateClosed, cb.State(); want != have {
			t.Errorf("state: want %v, have %v", want, have)
		}
	})
}

// fleet is a set of fake instances behind one Factory.
type fleet struct {
	errs    map[string]error // nil: the instance answers
	eps     map[string]endpoint.Endpoint
	closers map[string]*breaker.Closer
}

func newFleet(t *testing.T, names []string, opts ...breaker.FactoryOption) *fleet {
	t.Helper()
	fl := &fleet{errs: map[string]error{}, eps: map[string]endpoint.Endpoint{}, closers: map[string]*breaker.Closer{}}
	f := breaker.Factory(func(name string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) {
			if err := fl.errs[name]; err != nil {
				return nil, err
			}
			return "ok", nil
		}, nil, nil
	}, opts...)
	for _, name := range names {
		e, c, err := f(name)
		if err != nil {
			t.Fatal(err)
		}
		fl.eps[name], fl.closers[name] = e, c.(*breaker.Closer)
	}
	return fl
}

// round calls every instance once, in order.
func (fl *fleet) round(names ...string) {
	for _, name := range names {
		_, _ = fl.eps[name](context.Background(), nil)
	}
}

func (fl *fleet) open() []string {
	var open []string
	for name, c := range fl.closers {
		if c.Breaker().State() == gobreaker.StateOpen {
			open = append(open, name)
		}
	}
	return open
}

var abc = []string{"a", "b", "c"}

func TestCorrelatedFailuresExcluded(t *testing.T) {
	t.Run("every instance the same way", func(t *testing.T) {
		fl := newFleet(t, abc)
		for _, name := range abc {
			fl.errs[name] = &natsrpc.CallError{Subject: "rpc.x.y." + name, Err: context.DeadlineExceeded}
		}
		for range 20 {
			fl.round(abc...)
		}
		if open := fl.open(); len(open) > 0 {
			t.Errorf("breakers opened: %v", open)
		}
		// The first failures count, until enough instances have failed.
		if c := fl.closers["c"].Breaker().Counts(); c.TotalExclusions != 20 {
			t.Errorf("c: want 20 exclusions, have %+v", c)
		}
		if c := fl.closers["a"].Breaker().Counts(); c.TotalExclusions != 19 || c.TotalFailures != 1 {
			t.Errorf("a: want 19 exclusions and 1 failure, have %+v", c)
		}
	})
	t.Run("not the same way", func(t *testing.T) {
		fl := newFleet(t, abc)
		fl.errs["a"] = context.DeadlineExceeded
		fl.errs["b"] = nats.ErrNoResponders
		fl.errs["c"] = errDown
		for range breaker.DefaultConsecutiveFailures {
			fl.round(abc...)
		}
		if want, have := 3, len(fl.open()); want != have {
			t.Errorf("open breakers: want %d, have %d", want, have)
		}
	})
	t.Run("ejected instances are out of the count", func(t *testing.T) {
		// a is ejected for its own fault; then b and c, all that is
		// left, fail the same way at once.
		fl := newFleet(t, abc)
		fl.errs["a"] = errDown
		for range breaker.DefaultConsecutiveFailures {
			fl.round(abc...)
		}
		if want, have := []string{"a"}, fl.open(); fmt.Sprint(want) != fmt.Sprint(have) {
			t.Fatalf("open breakers: want %v, have %v", want, have)
		}
		fl.errs["b"], fl.errs["c"] = errDown, errDown
		for range 20 {
			fl.round("b", "c")
		}
		if want, have := []string{"a"}, fl.open(); fmt.Sprint(want) != fmt.Sprint(have) {
			t.Errorf("open breakers: want %v, have %v", want, have)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		fl := newFleet(t, abc, breaker.WithCorrelation(0, 0))
		for _, name := range abc {
			fl.errs[name] = errDown
		}
		for range breaker.DefaultConsecutiveFailures {
			fl.round(abc...)
		}
		if want, have := 3, len(fl.open()); want != have {
			t.Errorf("open breakers: want %d, have %d", want, have)
		}
	})
	t.Run("share", func(t *testing.T) {
		// With a share of a half, two of three failing at once is correlated.
		fl := newFleet(t, abc, breaker.WithCorrelation(0.5, time.Minute))
		fl.errs["a"], fl.errs["b"] = errDown, errDown
		for range 20 {
			fl.round(abc...)
		}
		if open := fl.open(); len(open) > 0 {
			t.Errorf("breakers opened: %v", open)
		}
	})
	t.Run("window", func(t *testing.T) {
		// Failures further apart than the window are each their instance's.
		fl := newFleet(t, abc, breaker.WithCorrelation(1, time.Nanosecond))
		for _, name := range abc {
			fl.errs[name] = errDown
		}
		for range breaker.DefaultConsecutiveFailures {
			fl.round(abc...)
			time.Sleep(time.Millisecond)
		}
		if want, have := 3, len(fl.open()); want != have {
			t.Errorf("open breakers: want %d, have %d", want, have)
		}
	})
}

func TestSingleBadInstanceTrips(t *testing.T) {
	t.Run("one of three", func(t *testing.T) {
		fl := newFleet(t, abc)
		fl.errs["b"] = context.DeadlineExceeded
		for i := range breaker.DefaultConsecutiveFailures {
			if open := fl.open(); len(open) > 0 {
				t.Fatalf("open after %d failures: %v", i, open)
			}
			fl.round(abc...)
		}
		if want, have := []string{"b"}, fl.open(); len(have) != 1 || have[0] != want[0] {
			t.Errorf("open breakers: want %v, have %v", want, have)
		}
		if fl.closers["b"].Available() || !fl.closers["a"].Available() || !fl.closers["c"].Available() {
			t.Error("availability does not follow the breakers")
		}
	})
	t.Run("two of three", func(t *testing.T) {
		// By default the whole fleet must fail for a correlated fault.
		fl := newFleet(t, abc)
		fl.errs["a"], fl.errs["b"] = errDown, errDown
		for range breaker.DefaultConsecutiveFailures {
			fl.round(abc...)
		}
		if want, have := 2, len(fl.open()); want != have {
			t.Errorf("open breakers: want %d, have %d", want, have)
		}
	})
	t.Run("the last one left", func(t *testing.T) {
		// Instances that left are out of the count: one instance alone
		// cannot be correlated with anything.
		fl := newFleet(t, abc)
		for _, name := range abc {
			fl.errs[name] = errDown
		}
		fl.round(abc...)
		for _, name := range []string{"b", "c"} {
			if err := fl.closers[name].Close(); err != nil {
				t.Fatal(err)
			}
		}
		for range breaker.DefaultConsecutiveFailures {
			fl.round("a")
		}
		if want, have := gobreaker.StateOpen, fl.closers["a"].Breaker().State(); want != have {
			t.Errorf("state: want %v, have %v", want, have)
		}
	})
}

func TestHalfOpenProbesClose(t *testing.T) {
	var hooks hookRecorder
	fl := newFleet(t, abc,
		breaker.WithSettings(gobreaker.Settings{Timeout: 50 * time.Millisecond}), // the rest by default
		breaker.WithStateChange(hooks.hook))
	fl.errs["a"] = errDown
	for range breaker.DefaultConsecutiveFailures {
		fl.round(abc...)
	}
	a := fl.closers["a"]
	if a.Available() {
		t.Fatal("a available with its breaker open")
	}
	// The instance recovers; after the open period, DefaultMaxRequests
	// probes pass and close the breaker.
	fl.errs["a"] = nil
	waitFor(t, "half-open", a.Available)
	for i := range breaker.DefaultMaxRequests {
		if _, err := fl.eps["a"](context.Background(), nil); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		if i < breaker.DefaultMaxRequests-1 && a.Breaker().State() != gobreaker.StateHalfOpen {
			t.Fatalf("after probe %d: want half-open, have %v", i, a.Breaker().State())
		}
	}
	if want, have := gobreaker.StateClosed, a.Breaker().State(); want != have {
		t.Fatalf("state: want %v, have %v", want, have)
	}
	want := []transition{
		{"a", "closed", "open"},
		{"a", "open", "half-open"},
		{"a", "half-open", "closed"},
	}
	if have := hooks.transitions(); fmt.Sprint(want) != fmt.Sprint(have) {
		t.Errorf("transitions:\nwant %v\nhave %v", want, have)
	}
}

func TestRejectedErrorNeedsNoGobreaker(t *testing.T) {
	var err error = &breaker.RejectedError{Name: "a", Err: gobreaker.ErrOpenState}
	err = fmt.Errorf("attempt: %w", err)
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || !r.Retryable() {
		t.Error("not Retryable")
	}
	var rj interface{ Rejected() bool }
	if !errors.As(err, &rj) || !rj.Rejected() {
		t.Error("not Rejected")
	}
}

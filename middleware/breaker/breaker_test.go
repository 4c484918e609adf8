package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errDown = errors.New("instance down")

type business struct{}

func (business) Error() string   { return "business: invalid argument" }
func (business) Retryable() bool { return false }

type notProcessed struct{}

func (notProcessed) Error() string   { return "not processed" }
func (notProcessed) Retryable() bool { return true }

// trips after 3 consecutive failures and stays open for an hour.
var tripAt3 = gobreaker.Settings{
	ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
	Timeout:     time.Hour,
}

func TestOpenBreakerRejectsRetryably(t *testing.T) {
	cb := breaker.New("inst-1", breaker.WithSettings(tripAt3))
	var calls atomic.Int32
	e := breaker.Middleware(cb)(func(context.Context, any) (any, error) {
		calls.Add(1)
		return nil, errDown
	})
	for range 3 {
		if _, err := e(context.Background(), nil); err != errDown {
			t.Fatalf("want the endpoint's error, have %v", err)
		}
	}
	if want, have := gobreaker.StateOpen, cb.State(); want != have {
		t.Fatalf("state: want %v, have %v", want, have)
	}
	_, err := e(context.Background(), nil)
	if !errors.Is(err, gobreaker.ErrOpenState) {
		t.Errorf("want ErrOpenState, have %v", err)
	}
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || !r.Retryable() {
		t.Errorf("want a Retryable error, have %#v", err)
	}
	var rej *breaker.RejectedError
	if !errors.As(err, &rej) || rej.Name != "inst-1" {
		t.Errorf("want *RejectedError for inst-1, have %#v", err)
	}
	if want, have := int32(3), calls.Load(); want != have {
		t.Errorf("calls reaching the endpoint: want %d, have %d", want, have)
	}
}

func TestCancellationNotCounted(t *testing.T) {
	cb := breaker.New("x", breaker.WithSettings(tripAt3))
	e := breaker.Middleware(cb)(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("transport: %w", ctx.Err())
	})
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e(ctx, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want the cancellation back, have %v", err)
		}
		var x interface{ Retryable() bool }
		if errors.As(err, &x) {
			t.Fatalf("cancellation came back wrapped: %#v", err)
		}
	}
	c := cb.Counts()
	if want, have := gobreaker.StateClosed, cb.State(); want != have {
		t.Errorf("state: want %v, have %v", want, have)
	}
	if c.TotalFailures != 0 || c.TotalExclusions != 10 {
		t.Errorf("counts: want 0 failures and 10 exclusions, have %+v", c)
	}
}

func TestTimeoutCounted(t *testing.T) {
	cb := breaker.New("x", breaker.WithSettings(tripAt3))
	e := breaker.Middleware(cb)(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, _ = e(ctx, nil)
		cancel()
	}
	if want, have := gobreaker.StateOpen, cb.State(); want != have {
		t.Errorf("a hung instance must trip its breaker: want %v, have %v", want, have)
	}
}

func TestBusinessErrors(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opts         []breaker.Option
		wantFailures uint32
	}{
		{"default: not counted", nil, 0},
		{"nil predicate: counted", []breaker.Option{breaker.WithBusinessErrors(nil)}, 5},
		{"custom predicate", []breaker.Option{breaker.WithBusinessErrors(func(err error) bool {
			return errors.Is(err, errDown)
		})}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Never trips, so the counts are not cleared by a trip.
			opts := append(tc.opts, breaker.WithSettings(gobreaker.Settings{
				ReadyToTrip: func(gobreaker.Counts) bool { return false },
			}))
			cb := breaker.New("x", opts...)
			e := breaker.Middleware(cb)(func(context.Context, any) (any, error) { return nil, business{} })
			for range 5 {
				if _, err := e(context.Background(), nil); err != (business{}) {
					t.Fatalf("want the business error unchanged, have %v", err)
				}
			}
			if want, have := tc.wantFailures, cb.Counts().TotalFailures; want != have {
				t.Errorf("failures: want %d, have %d", want, have)
			}
		})
	}
}

func TestIsBusinessError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{business{}, true},
		{fmt.Errorf("wrapped: %w", business{}), true},
		{notProcessed{}, false},
		{errDown, false},
		{nats.ErrNoResponders, false},
		{fmt.Errorf("%w: %w", business{}, context.DeadlineExceeded), false},
		{fmt.Errorf("%w: %w", business{}, nats.ErrTimeout), false},
	} {
		if have := breaker.IsBusinessError(tc.err); tc.want != have {
			t.Errorf("IsBusinessError(%v): want %v, have %v", tc.err, tc.want, have)
		}
	}
}

func TestUserSettingsComposed(t *testing.T) {
	ignored := errors.New("ignored")
	var changes atomic.Int32
	st := gobreaker.Settings{
		ReadyToTrip:   func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
		IsExcluded:    func(err error) bool { return errors.Is(err, ignored) },
		OnStateChange: func(string, gobreaker.State, gobreaker.State) { changes.Add(1) },
		Timeout:       time.Hour,
	}
	var hooked atomic.Int32
	cb := breaker.New("x", breaker.WithSettings(st), breaker.WithStateChange(func(string, string, string) { hooked.Add(1) }))
	e := breaker.Middleware(cb)(func(_ context.Context, req any) (any, error) { return nil, req.(error) })
	_, _ = e(context.Background(), ignored)
	if want, have := gobreaker.StateClosed, cb.State(); want != have {
		t.Fatalf("user IsExcluded ignored: want %v, have %v", want, have)
	}
	_, _ = e(context.Background(), errDown)
	if want, have := gobreaker.StateOpen, cb.State(); want != have {
		t.Fatalf("state: want %v, have %v", want, have)
	}
	if changes.Load() != 1 || hooked.Load() != 1 {
		t.Errorf("state change callbacks: want 1 and 1, have %d and %d", changes.Load(), hooked.Load())
	}
}

type transition struct {
	name     string
	from, to string
}

type hookRecorder struct {
	mu sync.Mutex
	ts []transition
}

func (h *hookRecorder) hook(name string, from, to string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ts = append(h.ts, transition{name, from, to})
}

func (h *hookRecorder) transitions() []transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ts)
}

// instance is a fake instance whose health a test switches.
type instance struct {
	healthy atomic.Bool
	calls   atomic.Int32
	closed  atomic.Int32
}

func (i *instance) endpoint(context.Context, any) (any, error) {
	i.calls.Add(1)
	if i.healthy.Load() {
		return "ok", nil
	}
	return nil, notProcessed{}
}

func (i *instance) Close() error { i.closed.Add(1); return nil }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFactoryEjectsAndRecovers(t *testing.T) {
	inst := &instance{}
	var hooks hookRecorder
	f := breaker.Factory(func(string) (endpoint.Endpoint, io.Closer, error) {
		return inst.endpoint, inst, nil
	},
		breaker.WithSettings(gobreaker.Settings{
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
			Timeout:     300 * time.Millisecond,
			MaxRequests: 2,
		}),
		breaker.WithStateChange(hooks.hook),
	)
	e, closer, err := f("inst-a")
	if err != nil {
		t.Fatal(err)
	}
	avail, ok := closer.(lb.Available)
	if !ok {
		t.Fatalf("closer %T does not implement lb.Available", closer)
	}
	if !avail.Available() {
		t.Fatal("a fresh instance must be available")
	}

	// Ejection: three failures open the breaker.
	for range 3 {
		_, _ = e(context.Background(), nil)
	}
	if avail.Available() {
		t.Fatal("instance available with its breaker open")
	}
	calls := inst.calls.Load()
	if _, err := e(context.Background(), nil); !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("want ErrOpenState, have %v", err)
	}
	if inst.calls.Load() != calls {
		t.Fatal("an open breaker let a request through")
	}

	// A failed half-open probe opens it again.
	waitFor(t, "half-open", avail.Available)
	if _, err := e(context.Background(), nil); !errors.Is(err, notProcessed{}) {
		t.Fatalf("probe: want the instance's error, have %v", err)
	}
	if have := hooks.transitions(); have[len(have)-1].to != "open" {
		t.Fatalf("a failed probe must reopen the breaker; transitions %v", have)
	}

	// Recovery: after the timeout, MaxRequests successful probes close it.
	inst.healthy.Store(true)
	waitFor(t, "half-open again", avail.Available)
	for i := range 2 {
		if _, err := e(context.Background(), nil); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if want, have := gobreaker.StateClosed, closer.(*breaker.Closer).Breaker().State(); want != have {
		t.Fatalf("state after successful probes: want %v, have %v", want, have)
	}
	want := []transition{
		{"inst-a", "closed", "open"},
		{"inst-a", "open", "half-open"},
		{"inst-a", "half-open", "open"},
		{"inst-a", "open", "half-open"},
		{"inst-a", "half-open", "closed"},
	}
	if have := hooks.transitions(); !slices.Equal(want, have) {
		t.Errorf("transitions:\nwant %v\nhave %v", want, have)
	}
}

func TestHalfOpenLimitsProbes(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var failing atomic.Bool
	failing.Store(true)
	cb := breaker.New("x", breaker.WithSettings(gobreaker.Settings{
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
		Timeout:     20 * time.Millisecond,
		MaxRequests: 1,
	}))
	e := breaker.Middleware(cb)(func(context.Context, any) (any, error) {
		if failing.Load() {
			return nil, errDown
		}
		started <- struct{}{}
		<-release
		return "ok", nil
	})
	_, _ = e(context.Background(), nil)
	failing.Store(false)
	waitFor(t, "half-open", func() bool { return cb.State() == gobreaker.StateHalfOpen })
	done := make(chan error, 1)
	go func() { _, err := e(context.Background(), nil); done <- err }()
	<-started
	_, err := e(context.Background(), nil)
	if !errors.Is(err, gobreaker.ErrTooManyRequests) {
		t.Errorf("second probe: want ErrTooManyRequests, have %v", err)
	}
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || !r.Retryable() {
		t.Errorf("want Retryable, have %#v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if want, have := gobreaker.StateClosed, cb.State(); want != have {
		t.Errorf("state: want %v, have %v", want, have)
	}
}

func TestFactoryCloser(t *testing.T) {
	inst := &instance{}
	f := breaker.Factory(func(string) (endpoint.Endpoint, io.Closer, error) { return inst.endpoint, inst, nil })
	_, closer, err := f("a")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if want, have := int32(1), inst.closed.Load(); want != have {
		t.Errorf("inner closes: want %d, have %d", want, have)
	}

	// A factory without a closer still gets an Available closer.
	f = breaker.Factory(func(string) (endpoint.Endpoint, io.Closer, error) { return inst.endpoint, nil, nil })
	_, closer, err = f("b")
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := closer.(lb.Available); !ok || !a.Available() {
		t.Errorf("want an available closer, have %#v", closer)
	}
	if err := closer.Close(); err != nil {
		t.Error(err)
	}

	// Factory errors pass through.
	boom := errors.New("boom")
	f = breaker.Factory(func(string) (endpoint.Endpoint, io.Closer, error) { return nil, nil, boom })
	if _, _, err := f("c"); err != boom {
		t.Errorf("want %v, have %v", boom, err)
	}
}

func TestFactoryBreakersAreIndependent(t *testing.T) {
	healthy, sick := &instance{}, &instance{}
	healthy.healthy.Store(true)
	f := breaker.Factory(func(name string) (endpoint.Endpoint, io.Closer, error) {
		if name == "sick" {
			return sick.endpoint, sick, nil
		}
		return healthy.endpoint, healthy, nil
	}, breaker.WithSettings(tripAt3))
	es, cs, _ := f("sick")
	eh, ch, _ := f("healthy")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = es(context.Background(), nil)
				_ = cs.(lb.Available).Available()
				if _, err := eh(context.Background(), nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if cs.(lb.Available).Available() {
		t.Error("sick instance still available")
	}
	if !ch.(lb.Available).Available() {
		t.Error("healthy instance ejected")
	}
}

// TestBadOptionsPanic: New and Factory refuse a value they cannot use at
// once, naming the option, rather than clamp it into something else.
func TestBadOptionsPanic(t *testing.T) {
	nop := func(string) (endpoint.Endpoint, io.Closer, error) { return endpoint.Nop, nil, nil }
	for _, tc := range []struct {
		option string
		f      func()
	}{
		{"WithConn", func() { breaker.New("x", breaker.WithConn(nil)) }},
		{"WithConn", func() { breaker.Factory(nop, breaker.WithConn(nil)) }},
		{"WithReconnectGrace", func() { breaker.New("x", breaker.WithReconnectGrace(-time.Second)) }},
		{"WithStateChange", func() { breaker.Factory(nop, breaker.WithStateChange(nil)) }},
		{"WithCorrelation", func() { breaker.Factory(nop, breaker.WithCorrelation(1.5, time.Second)) }},
		{"WithCorrelation", func() { breaker.Factory(nop, breaker.WithCorrelation(-0.5, time.Second)) }},
		{"WithCorrelation", func() { breaker.Factory(nop, breaker.WithCorrelation(0.5, -time.Second)) }},
	} {
		func() {
			defer func() {
				if msg := fmt.Sprint(recover()); !strings.Contains(msg, tc.option) {
					t.Errorf("%s: want a panic naming it, have %q", tc.option, msg)
				}
			}()
			tc.f()
		}()
	}
}

package retry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBalancer picks the first instance, in order, that is not in tried;
// when all are tried, the first one.
type fakeBalancer struct {
	names []string
	eps   map[string]endpoint.Endpoint

	mu    sync.Mutex
	tried [][]string // a copy of tried at every Pick
}

func newFake(pairs ...any) *fakeBalancer {
	b := &fakeBalancer{eps: map[string]endpoint.Endpoint{}}
	for i := 0; i < len(pairs); i += 2 {
		name := pairs[i].(string)
		b.names = append(b.names, name)
		b.eps[name] = pairs[i+1].(endpoint.Endpoint)
	}
	return b
}

func (b *fakeBalancer) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *fakeBalancer) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	b.mu.Lock()
	b.tried = append(b.tried, slices.Clone(tried))
	b.mu.Unlock()
	if len(b.names) == 0 {
		return lb.Pick{}, lb.ErrNoInstances
	}
	for _, n := range b.names {
		if !slices.Contains(tried, n) {
			return lb.Pick{Instance: n, Endpoint: b.eps[n]}, nil
		}
	}
	return lb.Pick{Instance: b.names[0], Endpoint: b.eps[b.names[0]]}, nil
}

var _ lb.Balancer = (*fakeBalancer)(nil)

// transient is a transport error that proves the request was not processed.
type transient struct{ name string }

func (e *transient) Error() string   { return "transient " + e.name }
func (e *transient) Retryable() bool { return true }

// business is an error the server returned deliberately.
type business struct{}

func (business) Error() string   { return "business: not found" }
func (business) Retryable() bool { return false }

func fails(err error) endpoint.Endpoint {
	return func(context.Context, any) (any, error) { return nil, err }
}

func answers(resp any) endpoint.Endpoint {
	return func(context.Context, any) (any, error) { return resp, nil }
}

// recorder is an observer keeping every attempt.
type recorder struct {
	mu       sync.Mutex
	attempts []retry.Attempt
}

func (r *recorder) observe(_ context.Context, attempt int, instance string, delay time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, retry.Attempt{Number: attempt, Instance: instance, Delay: delay, Err: err})
}

func (r *recorder) instances() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, a := range r.attempts {
		s = append(s, a.Instance)
	}
	return s
}

func mustNew(t testing.TB, b lb.Balancer, opts ...retry.Option) endpoint.Endpoint {
	t.Helper()
	e, err := retry.New(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRetriesSkipTriedInstances(t *testing.T) {
	b := newFake(
		"a", fails(nats.ErrNoResponders),
		"b", fails(&transient{"b"}),
		"c", answers("from c"),
	)
	var rec recorder
	e := mustNew(t, b, retry.WithObserver(rec.observe), retry.WithBudget(nil))
	resp, err := e(context.Background(), "req")
	if err != nil {
		t.Fatal(err)
	}
	if want, have := "from c", resp; want != have {
		t.Errorf("response: want %v, have %v", want, have)
	}
	if want, have := []string{"a", "b", "c"}, rec.instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
	wantTried := [][]string{{}, {"a"}, {"a", "b"}}
	for i, tr := range b.tried {
		if !slices.Equal(wantTried[i], tr) {
			t.Errorf("pick %d: tried want %v, have %v", i, wantTried[i], tr)
		}
	}
	// Moving to a fresh instance needs no backoff.
	for _, a := range rec.attempts {
		if a.Delay != 0 {
			t.Errorf("attempt %d on %s: want no delay, have %v", a.Number, a.Instance, a.Delay)
		}
	}
}

func TestBacksOffBeforeReusingATriedInstance(t *testing.T) {
	b := newFake("a", fails(nats.ErrNoResponders), "b", fails(nats.ErrNoResponders))
	var rec recorder
	e := mustNew(t, b,
		retry.WithMaxAttempts(4),
		retry.WithBackoff(time.Millisecond, time.Millisecond),
		retry.WithSeed(1),
		retry.WithObserver(rec.observe),
		retry.WithBudget(nil),
	)
	_, err := e(context.Background(), nil)
	if !errors.Is(err, retry.ErrMaxAttempts) {
		t.Fatalf("want ErrMaxAttempts, have %v", err)
	}
	if want, have := []string{"a", "b", "a", "a"}, rec.instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
	if rec.attempts[1].Delay != 0 {
		t.Errorf("attempt 2 (fresh instance): want no delay, have %v", rec.attempts[1].Delay)
	}
	for _, a := range rec.attempts[2:] {
		if a.Delay <= 0 || a.Delay >= time.Millisecond {
			t.Errorf("attempt %d (tried instance): want delay in (0, 1ms), have %v", a.Number, a.Delay)
		}
	}
}

func TestErrorReachesEveryAttempt(t *testing.T) {
	ea, eb, ec := &transient{"a"}, &transient{"b"}, &transient{"c"}
	b := newFake("a", fails(ea), "b", fails(eb), "c", fails(ec))
	e := mustNew(t, b, retry.WithBudget(nil))
	_, err := e(context.Background(), nil)
	for _, want := range []error{ea, eb, ec, retry.ErrMaxAttempts} {
		if !errors.Is(err, want) {
			t.Errorf("errors.Is(err, %v) = false; err = %v", want, err)
		}
	}
	var re *retry.Error
	if !errors.As(err, &re) {
		t.Fatalf("want *retry.Error, have %T", err)
	}
	if want, have := 3, len(re.Attempts); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
	if want, have := error(ec), re.Last(); want != have {
		t.Errorf("last: want %v, have %v", want, have)
	}
	for _, want := range []string{"3 attempts", "a, b, c", "max attempts reached", "transient c"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err.Error(), want)
		}
	}
}

func TestBusinessErrorIsNotRetried(t *testing.T) {
	var calls atomic.Int32
	b := newFake(
		"a", endpoint.Endpoint(func(context.Context, any) (any, error) { calls.Add(1); return nil, business{} }),
		"b", answers("ok"),
	)
	e := mustNew(t, b)
	_, err := e(context.Background(), nil)
	if want, have := error(business{}), err; want != have {
		t.Errorf("want the business error unchanged, have %#v", have)
	}
	if want, have := int32(1), calls.Load(); want != have {
		t.Errorf("calls: want %d, have %d", want, have)
	}
}

func TestBusinessErrorAfterRetryIsWrapped(t *testing.T) {
	b := newFake("a", fails(nats.ErrNoResponders), "b", fails(business{}))
	e := mustNew(t, b)
	_, err := e(context.Background(), nil)
	var re *retry.Error
	if !errors.As(err, &re) {
		t.Fatalf("want *retry.Error, have %T %v", err, err)
	}
	if re.Reason != nil {
		t.Errorf("reason: want nil (not retryable), have %v", re.Reason)
	}
	if !errors.Is(err, business{}) || !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("want both attempts' errors reachable, have %v", err)
	}
}

func TestBudgetExhausted(t *testing.T) {
	budget, err := retry.NewBudget(0, 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	b := newFake("a", fails(nats.ErrNoResponders), "b", answers("ok"))
	e := mustNew(t, b, retry.WithBudget(budget), retry.WithObserver(rec.observe))
	_, err = e(context.Background(), nil)
	if !errors.Is(err, retry.ErrBudgetExhausted) || !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("want ErrBudgetExhausted and ErrNoResponders, have %v", err)
	}
	if want, have := []string{"a"}, rec.instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
}

func TestBudgetCapsRetriesAtRatioOfCalls(t *testing.T) {
	budget, err := retry.NewBudget(0.5, 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	alwaysFails := func(context.Context, any) (any, error) { attempts.Add(1); return nil, nats.ErrNoResponders }
	b := newFake("a", endpoint.Endpoint(alwaysFails), "b", endpoint.Endpoint(alwaysFails))
	e := mustNew(t, b, retry.WithBudget(budget), retry.WithMaxAttempts(5), retry.WithBackoff(0, 0))
	const calls = 10
	exhausted := 0
	for range calls {
		_, err := e(context.Background(), nil)
		if errors.Is(err, retry.ErrBudgetExhausted) {
			exhausted++
		}
	}
	// Half a retry per call: 10 calls earn 5 retries.
	if want, have := int32(calls+5), attempts.Load(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
	if want, have := calls, exhausted; want != have {
		t.Errorf("calls stopped by the budget: want %d, have %d", want, have)
	}
}

func TestBackoffInterruptedByContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan struct{})
	var once sync.Once
	e := mustNew(t, newFake(), // no instances: every retry backs off
		retry.WithBackoff(time.Hour, time.Hour),
		retry.WithMaxAttempts(100),
		retry.WithBudget(nil),
		retry.WithObserver(func(context.Context, int, string, time.Duration, error) { once.Do(func() { close(first) }) }),
	)
	errc := make(chan error, 1)
	go func() {
		_, err := e(ctx, nil)
		errc <- err
	}()
	<-first
	cancel()
	select {
	case err := <-errc:
		if want, have := context.Canceled, err; want != have {
			t.Errorf("want %v as is, have %#v", want, have)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("backoff not interrupted by the context")
	}
}

func TestStopsWhenDeadlineCannotFitAnotherAttempt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var rec recorder
	e := mustNew(t, newFake("a", fails(nats.ErrNoResponders), "b", answers("ok")),
		retry.WithMinAttemptTime(2*time.Minute),
		retry.WithObserver(rec.observe),
	)
	_, err := e(ctx, nil)
	if !errors.Is(err, retry.ErrNoTimeLeft) || !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("want ErrNoTimeLeft and ErrNoResponders, have %v", err)
	}
	if want, have := 1, len(rec.attempts); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestAttemptTimeoutInsideCallerDeadline(t *testing.T) {
	for _, tc := range []struct {
		name           string
		callerTimeout  time.Duration
		attemptTimeout time.Duration
		wantCaller     bool // attempt deadline is the caller's
	}{
		{"attempt shorter", time.Hour, time.Minute, false},
		{"caller shorter", time.Minute, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.callerTimeout)
			defer cancel()
			callerDL, _ := ctx.Deadline()
			var attemptDL time.Time
			e := mustNew(t, newFake("a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				attemptDL, _ = ctx.Deadline()
				return "ok", nil
			})), retry.WithAttemptTimeout(tc.attemptTimeout))
			if _, err := e(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if attemptDL.After(callerDL) {
				t.Errorf("attempt deadline %v after caller's %v", attemptDL, callerDL)
			}
			if want, have := tc.wantCaller, attemptDL.Equal(callerDL); want != have {
				t.Errorf("attempt deadline is the caller's: want %v, have %v", want, have)
			}
		})
	}
}

func TestAttemptTimeoutRetriedOnlyWhenIdempotent(t *testing.T) {
	hangs := endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	for _, tc := range []struct {
		name    string
		opts    []retry.Option
		ctx     func(context.Context) context.Context
		wantErr bool
	}{
		{"not idempotent", nil, nil, true},
		{"idempotent option", []retry.Option{retry.WithIdempotent()}, nil, false},
		{"idempotent context", nil, retry.Idempotent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			opts := append([]retry.Option{
				retry.WithAttemptTimeout(20 * time.Millisecond),
				retry.WithBackoff(time.Millisecond, time.Millisecond),
				retry.WithObserver(rec.observe),
			}, tc.opts...)
			e := mustNew(t, newFake("a", hangs, "b", answers("ok")), opts...)
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx(ctx)
			}
			resp, err := e(ctx, nil)
			if tc.wantErr {
				if !errors.Is(err, retry.ErrAttemptTimeout) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("want an attempt timeout, have %v", err)
				}
				if want, have := []string{"a"}, rec.instances(); !slices.Equal(want, have) {
					t.Errorf("instances: want %v, have %v", want, have)
				}
				return
			}
			if err != nil || resp != "ok" {
				t.Fatalf("want ok, have %v, %v", resp, err)
			}
			if want, have := []string{"a", "b"}, rec.instances(); !slices.Equal(want, have) {
				t.Errorf("instances: want %v, have %v", want, have)
			}
		})
	}
}

func TestCallerCancellationReturnedAsIs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := mustNew(t, newFake(
		"a", endpoint.Endpoint(func(context.Context, any) (any, error) {
			cancel()
			return nil, &transient{"a"}
		}),
		"b", answers("ok"),
	))
	_, err := e(ctx, nil)
	if want, have := context.Canceled, err; want != have {
		t.Errorf("want %v, have %#v", want, have)
	}
}

func TestAttemptFromContext(t *testing.T) {
	var mu sync.Mutex
	var seen []retry.Attempt
	record := func(err error) endpoint.Endpoint {
		return func(ctx context.Context, _ any) (any, error) {
			a, ok := retry.AttemptFromContext(ctx)
			if !ok {
				t.Error("no attempt in context")
			}
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
			return "ok", err
		}
	}
	e := mustNew(t, newFake("a", record(nats.ErrNoResponders), "b", record(nil)))
	if _, err := e(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	want := []retry.Attempt{{Number: 1, Instance: "a"}, {Number: 2, Instance: "b"}}
	if !slices.Equal(want, seen) {
		t.Errorf("want %+v, have %+v", want, seen)
	}
	if _, ok := retry.AttemptFromContext(context.Background()); ok {
		t.Error("attempt found in a plain context")
	}
}

// TestAttemptNumberByKey: middleware that cannot import this package
// (tracing) reads the attempt's number under the key "kitnats.attempt",
// through whatever contexts wrap the attempt's.
func TestAttemptNumberByKey(t *testing.T) {
	var mu sync.Mutex
	var seen []any
	record := func(err error) endpoint.Endpoint {
		return func(ctx context.Context, _ any) (any, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			mu.Lock()
			seen = append(seen, ctx.Value("kitnats.attempt"))
			mu.Unlock()
			return "ok", err
		}
	}
	e := mustNew(t, newFake("a", record(nats.ErrNoResponders), "b", record(nil)), retry.WithAttemptTimeout(time.Minute))
	if _, err := e(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if want := []any{1, 2}; !slices.Equal(want, seen) {
		t.Errorf("want %v, have %v", want, seen)
	}
}

// TestReroute: a balancer that sends an attempt's request to a second
// instance (hedge) labels the second's context with it; the attempt is
// otherwise the same, and outside retry nothing changes.
func TestReroute(t *testing.T) {
	var rerouted, original retry.Attempt
	e := mustNew(t, newFake("a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
		rerouted, _ = retry.AttemptFromContext(retry.Reroute(ctx, "b"))
		original, _ = retry.AttemptFromContext(ctx)
		if n := retry.Reroute(ctx, "b").Value("kitnats.attempt"); n != 1 {
			t.Errorf("rerouted attempt number: want 1, have %v", n)
		}
		return "ok", nil
	})))
	if _, err := e(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if want := (retry.Attempt{Number: 1, Instance: "b"}); rerouted != want {
		t.Errorf("rerouted: want %+v, have %+v", want, rerouted)
	}
	if want := (retry.Attempt{Number: 1, Instance: "a"}); original != want {
		t.Errorf("the attempt's own context: want %+v, have %+v", want, original)
	}
	if ctx := context.Background(); retry.Reroute(ctx, "b") != ctx {
		t.Error("Reroute outside retry: want the context unchanged")
	}
}

// flaky answers no-responders until it has failed n times.
type flaky struct {
	n     atomic.Int32
	calls atomic.Int32
}

func (f *flaky) endpoint(context.Context, any) (any, error) {
	f.calls.Add(1)
	if f.n.Add(-1) >= 0 {
		return nil, nats.ErrNoResponders
	}
	return "ok", nil
}

func TestNoInstancesRetriedAfterBackoff(t *testing.T) {
	var picks atomic.Int32
	var rec recorder
	okEndpoint := answers("ok")
	b := balancerFunc(func(context.Context, []string) (lb.Pick, error) {
		if picks.Add(1) <= 2 {
			return lb.Pick{}, lb.ErrNoInstances
		}
		return lb.Pick{Instance: "late", Endpoint: okEndpoint}, nil
	})
	e := mustNew(t, b, retry.WithBackoff(time.Millisecond, 4*time.Millisecond), retry.WithSeed(7), retry.WithObserver(rec.observe))
	resp, err := e(context.Background(), nil)
	if err != nil || resp != "ok" {
		t.Fatalf("want ok, have %v, %v", resp, err)
	}
	if want, have := []string{"", "", "late"}, rec.instances(); !slices.Equal(want, have) {
		t.Fatalf("instances: want %q, have %q", want, have)
	}
	if !errors.Is(rec.attempts[0].Err, lb.ErrNoInstances) {
		t.Errorf("attempt 1: want ErrNoInstances, have %v", rec.attempts[0].Err)
	}
	for _, a := range rec.attempts[1:] {
		if a.Delay <= 0 {
			t.Errorf("attempt %d: want a backoff, have %v", a.Number, a.Delay)
		}
	}
}

type balancerFunc func(context.Context, []string) (lb.Pick, error)

func (f balancerFunc) Endpoint() (endpoint.Endpoint, error) {
	p, err := f(context.Background(), nil)
	return p.Endpoint, err
}
func (f balancerFunc) Pick(ctx context.Context, tried []string) (lb.Pick, error) {
	return f(ctx, tried)
}

func TestDefaultClassifier(t *testing.T) {
	for _, tc := range []struct {
		err        error
		idempotent bool
		want       retry.Action
	}{
		{nats.ErrNoResponders, false, retry.Retry},
		{fmt.Errorf("wrapped: %w", nats.ErrNoResponders), false, retry.Retry},
		{&transient{"x"}, false, retry.Retry},
		{business{}, false, retry.Stop},
		{business{}, true, retry.Stop},
		// A breaker's refusals, known by their Retryable method.
		{&breaker.RejectedError{Name: "a", Err: errOpen}, false, retry.Retry},
		{fmt.Errorf("wrapped: %w", &breaker.RejectedError{Name: "a", Err: errTooMany}), false, retry.Retry},
		{lb.ErrNoInstances, false, retry.RetryAfterBackoff},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, context.DeadlineExceeded), false, retry.Stop},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, context.DeadlineExceeded), true, retry.RetryAfterBackoff},
		{context.DeadlineExceeded, true, retry.Stop},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, business{}), true, retry.RetryAfterBackoff},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, business{}), false, retry.Stop},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, nats.ErrNoResponders), false, retry.Stop},
		{fmt.Errorf("%w: %w", retry.ErrAttemptTimeout, &transient{"x"}), false, retry.Retry},
		{errors.New("boom"), true, retry.Stop},
	} {
		if have := retry.DefaultClassifier(tc.err, tc.idempotent); tc.want != have {
			t.Errorf("%v (idempotent %v): want %v, have %v", tc.err, tc.idempotent, tc.want, have)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	b := newFake("a", answers("ok"))
	for name, opt := range map[string]retry.Option{
		"attempts":       retry.WithMaxAttempts(0),
		"timeout":        retry.WithAttemptTimeout(-1),
		"min attempt":    retry.WithMinAttemptTime(-1),
		"backoff":        retry.WithBackoff(time.Second, time.Millisecond),
		"nil classifier": retry.WithClassifier(nil),
	} {
		if _, err := retry.New(b, opt); !errors.Is(err, retry.ErrInvalidOption) {
			t.Errorf("%s: want ErrInvalidOption, have %v", name, err)
		}
	}
	if _, err := retry.New(nil); !errors.Is(err, retry.ErrInvalidOption) {
		t.Errorf("nil balancer: want ErrInvalidOption, have %v", err)
	}
	for _, args := range [][3]float64{{-1, 0, 10}, {0, -1, 10}, {0.2, 10, 0}} {
		if _, err := retry.NewBudget(args[0], args[1], time.Duration(args[2])*time.Second); !errors.Is(err, retry.ErrInvalidOption) {
			t.Errorf("NewBudget%v: want ErrInvalidOption, have %v", args, err)
		}
	}
}

func TestCustomClassifier(t *testing.T) {
	boom := errors.New("boom")
	var rec recorder
	e := mustNew(t, newFake("a", fails(boom), "b", answers("ok")),
		retry.WithClassifier(func(err error, _ bool) retry.Action {
			if errors.Is(err, boom) {
				return retry.Retry
			}
			return retry.Stop
		}),
		retry.WithObserver(rec.observe),
	)
	if _, err := e(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if want, have := []string{"a", "b"}, rec.instances(); !slices.Equal(want, have) {
		t.Errorf("instances: want %v, have %v", want, have)
	}
}

func TestConcurrentUse(t *testing.T) {
	budget, err := retry.NewBudget(1, 1000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var fa, fb flaky
	fa.n.Store(300)
	fb.n.Store(300)
	b := newFake("a", endpoint.Endpoint(fa.endpoint), "b", endpoint.Endpoint(fb.endpoint), "c", answers("ok"))
	e := mustNew(t, b, retry.WithBudget(budget), retry.WithBackoff(0, 0))
	var wg sync.WaitGroup
	var failures atomic.Int32
	const workers, calls = 8, 200
	for range workers {
		wg.Go(func() {
			for range calls {
				if _, err := e(context.Background(), nil); err != nil {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if want, have := int32(0), failures.Load(); want != have {
		t.Errorf("failures: want %d, have %d", want, have)
	}
	if want, have := int32(workers*calls), fa.calls.Load(); want != have {
		t.Errorf("calls to the first instance: want %d, have %d", want, have)
	}
}

// The errors a breaker's refusal wraps; retry knows refusals by their
// methods, not by these.
var (
	errOpen    = errors.New("circuit breaker is open")
	errTooMany = errors.New("too many requests")
)

func TestBreakerRefusalIsFreeOfBudget(t *testing.T) {
	budget, err := retry.NewBudget(0, 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b := newFake("a", fails(&breaker.RejectedError{Name: "a", Err: errOpen}), "b", answers("ok"))
	e := mustNew(t, b, retry.WithBudget(budget))
	for range 5 {
		if _, err := e(context.Background(), nil); err != nil {
			t.Fatalf("want a free retry past the open breaker, have %v", err)
		}
	}
}

// TestWithIdempotentMarksContext: an endpoint built WithIdempotent passes the
// declaration down, so the balancer's Pick and every attempt see
// IsIdempotent — the mark the hedge package goes by.
func TestWithIdempotentMarksContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []retry.Option
		want bool
	}{
		{"not idempotent", nil, false},
		{"idempotent option", []retry.Option{retry.WithIdempotent()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var picked, attempted []bool
			b := markBalancer{pick: func(ctx context.Context) { picked = append(picked, retry.IsIdempotent(ctx)) }}
			b.fakeBalancer = newFake(
				"a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					attempted = append(attempted, retry.IsIdempotent(ctx))
					return nil, &transient{"a"}
				}),
				"b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					attempted = append(attempted, retry.IsIdempotent(ctx))
					return "ok", nil
				}))
			e := mustNew(t, b, append([]retry.Option{retry.WithBackoff(0, 0)}, tc.opts...)...)
			if _, err := e(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			want := []bool{tc.want, tc.want}
			if !slices.Equal(picked, want) || !slices.Equal(attempted, want) {
				t.Errorf("IsIdempotent at picks %v and attempts %v, want %v", picked, attempted, want)
			}
		})
	}
}

// markBalancer reports the context of every Pick.
type markBalancer struct {
	*fakeBalancer
	pick func(ctx context.Context)
}

func (b markBalancer) Pick(ctx context.Context, tried []string) (lb.Pick, error) {
	b.pick(ctx)
	return b.fakeBalancer.Pick(ctx, tried)
}

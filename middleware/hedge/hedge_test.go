package hedge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// patience bounds every wait of these tests for something that must happen;
// no test asserts how long anything takes.
const patience = 10 * time.Second

// fakeBalancer picks the first instance, in order, not in tried; when all
// are tried, the first one. It records what every Pick was asked to pass
// over.
type fakeBalancer struct {
	names []string
	eps   map[string]endpoint.Endpoint

	mu    sync.Mutex
	tried [][]string
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
	for _, n := range b.names {
		if !slices.Contains(tried, n) {
			return lb.Pick{Instance: n, Endpoint: b.eps[n]}, nil
		}
	}
	if len(b.names) == 0 {
		return lb.Pick{}, lb.ErrNoInstances
	}
	return lb.Pick{Instance: b.names[0], Endpoint: b.eps[b.names[0]]}, nil
}

func (b *fakeBalancer) picks() [][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.tried)
}

// answers returns resp at once.
func answers(resp any) endpoint.Endpoint {
	return func(context.Context, any) (any, error) { return resp, nil }
}

// cancelled is what a hanging endpoint saw when it returned.
type cancelled struct {
	err, cause error
	backup     bool
}

// hangs returns an endpoint that blocks until its context ends, and then
// reports what it saw on seen.
func hangs(seen chan<- cancelled) endpoint.Endpoint {
	return func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		seen <- cancelled{ctx.Err(), context.Cause(ctx), hedge.IsBackup(ctx)}
		return nil, ctx.Err()
	}
}

func mustNew(t testing.TB, b lb.Balancer, opts ...hedge.Option) *hedge.Balancer {
	t.Helper()
	h, err := hedge.New(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// call makes one call through h the way retry does: Pick, then the pick's
// endpoint.
func call(ctx context.Context, h lb.Balancer, tried []string) (string, any, error) {
	p, err := h.Pick(ctx, tried)
	if err != nil {
		return "", nil, err
	}
	resp, err := p.Endpoint(ctx, "req")
	return p.Instance, resp, err
}

func idempotent() context.Context { return retry.Idempotent(context.Background()) }

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatalf("gave up waiting for %s", what)
		panic("unreachable")
	}
}

func TestNew(t *testing.T) {
	b := newFake("a", answers("a"))
	for _, tc := range []struct {
		name string
		b    lb.Balancer
		opts []hedge.Option
	}{
		{"nil balancer", nil, nil},
		{"zero delay", b, []hedge.Option{hedge.WithDelay(0)}},
		{"quantile 1", b, []hedge.Option{hedge.WithQuantile(1, 0)}},
		{"quantile 0", b, []hedge.Option{hedge.WithQuantile(0, 0)}},
		{"negative min delay", b, []hedge.Option{hedge.WithQuantile(0.9, -1)}},
		{"zero initial delay", b, []hedge.Option{hedge.WithInitialDelay(0)}},
		{"nil meter provider", b, []hedge.Option{hedge.WithMeterProvider(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := hedge.New(tc.b, tc.opts...); !errors.Is(err, hedge.ErrInvalidOption) {
				t.Errorf("want ErrInvalidOption, have %v", err)
			}
		})
	}
	for _, tc := range []struct {
		ratio float64
		burst int
	}{{-0.1, 1}, {1.1, 1}, {0.1, -1}} {
		if _, err := hedge.NewBudget(tc.ratio, tc.burst); !errors.Is(err, hedge.ErrInvalidOption) {
			t.Errorf("NewBudget(%v, %d): want ErrInvalidOption, have %v", tc.ratio, tc.burst, err)
		}
	}
	h := mustNew(t, b)
	if have := h.Stats().Delay; have != hedge.DefaultInitialDelay {
		t.Errorf("delay before any call: want %v, have %v", hedge.DefaultInitialDelay, have)
	}
}

// TestLoserCancelled: the first success wins and the other attempt's
// context is cancelled, with ErrLost as its cause — whichever side loses.
func TestLoserCancelled(t *testing.T) {
	t.Run("backup wins", func(t *testing.T) {
		seen := make(chan cancelled, 1)
		b := newFake("slow", hangs(seen), "fast", answers("fast"))
		h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
		inst, resp, err := call(idempotent(), h, nil)
		if err != nil || resp != "fast" || inst != "slow" {
			t.Fatalf("want fast's answer to the call picked on slow, have %q %v %v", inst, resp, err)
		}
		loser := wait(t, seen, "the first attempt's cancellation")
		if !errors.Is(loser.err, context.Canceled) || !errors.Is(loser.cause, hedge.ErrLost) || loser.backup {
			t.Errorf("first attempt: want canceled by ErrLost, not a backup; have %+v", loser)
		}
		if s := h.Stats(); s.Calls != 1 || s.Sent != 1 || s.Won != 1 {
			t.Errorf("stats: want 1 call, 1 sent, 1 won; have %+v", s)
		}
	})
	t.Run("first attempt wins", func(t *testing.T) {
		seen := make(chan cancelled, 1)
		backupStarted := make(chan struct{})
		b := newFake(
			"first", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				<-backupStarted
				return "first", nil
			}),
			"backup", endpoint.Endpoint(func(ctx context.Context, req any) (any, error) {
				close(backupStarted)
				return hangs(seen)(ctx, req)
			}))
		h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
		_, resp, err := call(idempotent(), h, nil)
		if err != nil || resp != "first" {
			t.Fatalf("want first's answer, have %v %v", resp, err)
		}
		loser := wait(t, seen, "the backup's cancellation")
		if !errors.Is(loser.err, context.Canceled) || !errors.Is(loser.cause, hedge.ErrLost) || !loser.backup {
			t.Errorf("backup: want canceled by ErrLost, a backup; have %+v", loser)
		}
		if s := h.Stats(); s.Calls != 1 || s.Sent != 1 || s.Won != 0 {
			t.Errorf("stats: want 1 call, 1 sent, 0 won; have %+v", s)
		}
	})
}

// TestNotIdempotentNeverHedged: a call whose context is not marked goes to
// the picked instance alone, however long it takes; the same call marked
// is hedged.
func TestNotIdempotentNeverHedged(t *testing.T) {
	for _, marked := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", marked), func(t *testing.T) {
			var backups atomic.Int64
			backupCalled := make(chan struct{}, 1)
			b := newFake(
				"slow", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					// Slow enough for many hedge delays to pass; when
					// marked, until the backup has been sent.
					select {
					case <-backupCalled:
					case <-time.After(slowFor(marked)):
					}
					return "slow", nil
				}),
				"other", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					backups.Add(1)
					backupCalled <- struct{}{}
					return "other", nil
				}))
			h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
			ctx := context.Background()
			if marked {
				ctx = retry.Idempotent(ctx)
			}
			for range 3 {
				if _, _, err := call(ctx, h, nil); err != nil {
					t.Fatal(err)
				}
			}
			want := int64(0)
			if marked {
				want = 3
			}
			if have := backups.Load(); have != want {
				t.Errorf("backup requests: want %d, have %d", want, have)
			}
			if s := h.Stats(); int64(s.Sent) != want || (s.Calls == 0) == marked {
				t.Errorf("stats: %+v", s)
			}
			if ep, _ := h.Endpoint(); ep == nil {
				t.Error("Endpoint: nil")
			}
		})
	}

	// Through retry: WithIdempotent marks its calls, nothing else does.
	for _, opts := range [][]retry.Option{nil, {retry.WithIdempotent()}} {
		var backups atomic.Int64
		b := newFake(
			"slow", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				select {
				case <-ctx.Done(): // the backup won
				case <-time.After(slowFor(len(opts) > 0)):
				}
				return "slow", nil
			}),
			"other", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				backups.Add(1)
				return "other", nil
			}))
		call, err := retry.New(mustNew(t, b, hedge.WithDelay(time.Millisecond)), opts...)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := call(context.Background(), "req")
		if err != nil {
			t.Fatal(err)
		}
		if want := len(opts) > 0; (backups.Load() == 1) != want || (resp == "other") != want {
			t.Errorf("retry options %d: want hedged %v, have %d backups, answer %v", len(opts), want, backups.Load(), resp)
		}
	}
}

// slowFor is how long the slow instance of TestNotIdempotentNeverHedged
// takes: many hedge delays when the call must not be hedged, and when it
// must, until the backup ends the wait.
func slowFor(hedged bool) time.Duration {
	if hedged {
		return patience
	}
	return 50 * time.Millisecond
}

// TestBackupGoesElsewhere: the backup goes to an instance that is neither
// the first attempt's nor one retry tried; with no such instance, no backup.
func TestBackupGoesElsewhere(t *testing.T) {
	seen := make(chan cancelled, 2)
	var served sync.Map
	record := func(name string) endpoint.Endpoint {
		return func(ctx context.Context, _ any) (any, error) {
			served.Store(name, true)
			return name, nil
		}
	}
	b := newFake("a", record("a"), "b", hangs(seen), "c", record("c"))
	h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
	inst, resp, err := call(idempotent(), h, []string{"a"})
	if err != nil || inst != "b" || resp != "c" {
		t.Fatalf("want c's answer to the call picked on b, have %q %v %v", inst, resp, err)
	}
	if _, ok := served.Load("a"); ok {
		t.Error("the backup went to a, which retry had tried")
	}
	if want, have := [][]string{{"a"}, {"a", "b"}}, b.picks(); !slices.EqualFunc(want, have, slices.Equal) {
		t.Errorf("picks passed over: want %v, have %v", want, have)
	}
	wait(t, seen, "b's cancellation")

	// Every other instance tried: the pick beneath can only return one
	// of them, so nothing is sent and the first attempt is waited for.
	var b2 *fakeBalancer
	b2 = newFake("a", record("a"), "b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
		// Answer once the hedge has looked for another instance.
		for deadline := time.Now().Add(patience); len(b2.picks()) < 2 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		return "b", nil
	}))
	h2 := mustNew(t, b2, hedge.WithDelay(time.Millisecond))
	if _, resp, err := call(idempotent(), h2, []string{"a"}); err != nil || resp != "b" {
		t.Fatalf("want b's answer, have %v %v", resp, err)
	}
	for deadline := time.Now().Add(patience); h2.Stats().NoOtherInstance == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if s := h2.Stats(); s.Sent != 0 || s.NoOtherInstance != 1 {
		t.Errorf("stats: want nothing sent, 1 with no other instance; have %+v", s)
	}
}

// TestFirstSuccessWins: a failure does not end the call while the other
// attempt may still succeed; both failing returns both errors.
func TestFirstSuccessWins(t *testing.T) {
	errA, errB := errors.New("a failed"), errors.New("b failed")

	t.Run("first attempt fails, then the backup answers", func(t *testing.T) {
		backupStarted, firstFailed := make(chan struct{}), make(chan struct{})
		b := newFake(
			"a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				<-backupStarted
				close(firstFailed)
				return nil, errA
			}),
			"b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				close(backupStarted)
				<-firstFailed
				return "b", nil
			}))
		h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
		if _, resp, err := call(idempotent(), h, nil); err != nil || resp != "b" {
			t.Fatalf("want b's answer, have %v %v", resp, err)
		}
		if s := h.Stats(); s.Sent != 1 || s.Won != 1 {
			t.Errorf("stats: want 1 sent, 1 won; have %+v", s)
		}
	})

	t.Run("backup fails, then the first attempt answers", func(t *testing.T) {
		backupFailed := make(chan struct{})
		b := newFake(
			"a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				<-backupFailed
				return "a", nil
			}),
			"b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
				defer close(backupFailed)
				return nil, errB
			}))
		h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
		if _, resp, err := call(idempotent(), h, nil); err != nil || resp != "a" {
			t.Fatalf("want a's answer, have %v %v", resp, err)
		}
		if s := h.Stats(); s.Sent != 1 || s.Won != 0 {
			t.Errorf("stats: want 1 sent, 0 won; have %+v", s)
		}
	})

	for _, backupFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("both fail, backup first=%v", backupFirst), func(t *testing.T) {
			backupStarted, backupDone := make(chan struct{}), make(chan struct{})
			firstDone := make(chan struct{})
			b := newFake(
				"a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					<-backupStarted
					if backupFirst {
						<-backupDone
					}
					close(firstDone)
					return nil, errA
				}),
				"b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
					close(backupStarted)
					if !backupFirst {
						<-firstDone
					}
					defer close(backupDone)
					return nil, errB
				}))
			h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
			_, resp, err := call(idempotent(), h, nil)
			var he *hedge.Error
			if resp != nil || !errors.As(err, &he) || !errors.Is(err, errA) || !errors.Is(err, errB) {
				t.Fatalf("want a *hedge.Error matching both errors, have %v %v", resp, err)
			}
			if p, _ := he.Primary(); p != "a" {
				t.Errorf("first attempt's instance: want a, have %s", p)
			}
			if b, _ := he.Backup(); b != "b" {
				t.Errorf("backup's instance: want b, have %s", b)
			}
		})
	}

	t.Run("first attempt fails before the delay", func(t *testing.T) {
		b := newFake("a", endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, errA }),
			"b", answers("b"))
		h := mustNew(t, b, hedge.WithDelay(time.Hour))
		if _, _, err := call(idempotent(), h, nil); err != errA {
			t.Fatalf("want a's error as is, have %v", err)
		}
		if s := h.Stats(); s.Calls != 1 || s.Sent != 0 {
			t.Errorf("stats: want 1 call, nothing sent; have %+v", s)
		}
	})
}

// TestBudgetHoldsUnderBurst: a burst of calls that are all slow enough to
// hedge sends no more backups than the budget allows — burst + ratio ×
// calls — and refuses the rest, counted.
func TestBudgetHoldsUnderBurst(t *testing.T) {
	const (
		calls = 200
		ratio = 0.1
		burst = 5
	)
	release := make(chan struct{})
	b := newFake(
		"slow", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
			select {
			case <-ctx.Done(): // a backup won
				return nil, ctx.Err()
			case <-release:
				return "slow", nil
			}
		}),
		"fast", answers("fast"))
	budget, err := hedge.NewBudget(ratio, burst)
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h := mustNew(t, b, hedge.WithDelay(time.Millisecond), hedge.WithBudget(budget),
		hedge.WithMeterProvider(mp), hedge.WithMethod("svc", "m"))

	var wg sync.WaitGroup
	var answered, errs atomic.Int64
	for range calls {
		wg.Go(func() {
			if _, _, err := call(idempotent(), h, nil); err != nil {
				errs.Add(1)
				return
			}
			answered.Add(1)
		})
	}
	// Every call's delay passes while "slow" holds it: each one either
	// sends a backup or is refused by the budget (and keeps asking).
	deadline := time.Now().Add(patience)
	for s := h.Stats(); s.Calls < calls || s.Sent+s.BudgetExhausted < calls; s = h.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for every call to be hedged or refused: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	s := h.Stats()
	if limit := burst + ratio*calls; s.Sent > uint64(limit) || s.Sent < burst {
		t.Errorf("backups sent: want between %d and %v, have %d", burst, limit, s.Sent)
	}
	if s.Calls != calls || s.BudgetExhausted == 0 || s.Won != s.Sent {
		t.Errorf("stats: want %d calls, some refused, every backup winning; have %+v", calls, s)
	}
	if errs.Load() != 0 || answered.Load() != calls {
		t.Errorf("want %d answers, have %d and %d errors", calls, answered.Load(), errs.Load())
	}
	t.Logf("%d calls: %d backups sent, %d refused by the budget", calls, s.Sent, s.BudgetExhausted)

	// The same counts through OpenTelemetry.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	have := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value("rpc.method"); v.AsString() != "svc/m" {
					t.Errorf("%s: rpc.method %q", m.Name, v.AsString())
				}
				have[m.Name] += dp.Value
			}
		}
	}
	want := map[string]int64{
		"kitnats.hedge.sent":             int64(s.Sent),
		"kitnats.hedge.won":              int64(s.Won),
		"kitnats.hedge.budget_exhausted": int64(s.BudgetExhausted),
	}
	for name, w := range want {
		if have[name] != w {
			t.Errorf("%s: want %d, have %d", name, w, have[name])
		}
	}
}

// TestBudgetCounts: the bound is exact, and concurrent withdrawals never
// overdraw it.
func TestBudgetCounts(t *testing.T) {
	b, err := hedge.NewBudget(0.25, 2)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for range 2 {
		if b.TryWithdraw() {
			sent++
		}
	}
	if b.TryWithdraw() || sent != 2 {
		t.Fatalf("want exactly the burst of 2 at first, have %d", sent)
	}
	for range 3 {
		b.Deposit()
	}
	if b.TryWithdraw() {
		t.Fatal("0.75 of a backup after 3 calls at 0.25")
	}
	b.Deposit()
	if !b.TryWithdraw() {
		t.Fatal("want one backup after 4 calls at 0.25")
	}
	for range 100 {
		b.Deposit()
	}
	if have := b.Available(); have != 2 {
		t.Fatalf("the bucket holds at most the burst: want 2, have %d", have)
	}

	// 64 goroutines race for what 8,000 calls at 0.001 and a burst of 4
	// allow: 12 backups, never more.
	b, _ = hedge.NewBudget(0.001, 4)
	var got atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 125 {
				b.Deposit()
				if b.TryWithdraw() {
					got.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if have := got.Load(); have > 12 {
		t.Errorf("backups: want at most 12, have %d", have)
	}
	none, _ := hedge.NewBudget(0, 0)
	none.Deposit()
	if none.TryWithdraw() {
		t.Error("a budget of 0 and 0 allows a backup")
	}
}

// TestUnderRetry: the backup's context carries retry's attempt with the
// backup's instance, so per-instance middleware labels it right; the first
// attempt's carries its own.
func TestUnderRetry(t *testing.T) {
	type seen struct {
		attempt retry.Attempt
		backup  bool
	}
	got := make(chan seen, 2)
	b := newFake(
		"a", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
			a, _ := retry.AttemptFromContext(ctx)
			got <- seen{a, hedge.IsBackup(ctx)}
			<-ctx.Done()
			return nil, ctx.Err()
		}),
		"b", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
			a, _ := retry.AttemptFromContext(ctx)
			got <- seen{a, hedge.IsBackup(ctx)}
			return "b", nil
		}))
	call, err := retry.New(mustNew(t, b, hedge.WithDelay(time.Millisecond)), retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := call(context.Background(), "req"); err != nil || resp != "b" {
		t.Fatalf("want b's answer, have %v %v", resp, err)
	}
	first, second := wait(t, got, "one attempt"), wait(t, got, "the other")
	if first.backup {
		first, second = second, first
	}
	if first.attempt.Instance != "a" || first.attempt.Number != 1 || first.backup {
		t.Errorf("first attempt: want instance a, attempt 1, not a backup; have %+v", first)
	}
	if second.attempt.Instance != "b" || second.attempt.Number != 1 || !second.backup {
		t.Errorf("backup: want instance b, attempt 1, a backup; have %+v", second)
	}
}

// TestCallerCancels: when the caller gives up, both attempts are cancelled
// and the call returns.
func TestCallerCancels(t *testing.T) {
	seen := make(chan cancelled, 2)
	b := newFake("a", hangs(seen), "b", hangs(seen))
	h := mustNew(t, b, hedge.WithDelay(time.Millisecond))
	ctx, cancel := context.WithCancel(idempotent())
	p, err := h.Pick(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Endpoint(ctx, "req")
		done <- err
	}()
	deadline := time.Now().Add(patience)
	for h.Stats().Sent == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no backup sent")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := wait(t, done, "the call"); !errors.Is(err, context.Canceled) {
		t.Errorf("want canceled, have %v", err)
	}
	wait(t, seen, "one cancellation")
	wait(t, seen, "the other")
}

// TestRefusedHedgeAsksAgain: a call the budget refused a backup keeps
// asking, at twice the wait each time, and gets one once other calls have
// filled the budget — the call stuck longest is the one that needs it most.
func TestRefusedHedgeAsksAgain(t *testing.T) {
	seen := make(chan cancelled, 1)
	b := newFake("stuck", hangs(seen), "ok", answers("ok"))
	budget, err := hedge.NewBudget(0.5, 0) // half a backup per call, none to start with
	if err != nil {
		t.Fatal(err)
	}
	h := mustNew(t, b, hedge.WithDelay(time.Millisecond), hedge.WithBudget(budget))
	type result struct {
		resp any
		err  error
	}
	stuck := make(chan result, 1)
	go func() {
		_, resp, err := call(idempotent(), h, nil)
		stuck <- result{resp, err}
	}()
	deadline := time.Now().Add(patience)
	for h.Stats().BudgetExhausted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the budget never refused: %+v", h.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	// Another call, on "ok" at once, fills the budget to one backup.
	if _, resp, err := call(idempotent(), h, []string{"stuck"}); err != nil || resp != "ok" {
		t.Fatalf("second call: %v %v", resp, err)
	}
	r := wait(t, stuck, "the stuck call")
	if r.err != nil || r.resp != "ok" {
		t.Fatalf("stuck call: want ok's answer, have %v %v", r.resp, r.err)
	}
	wait(t, seen, "the stuck attempt's cancellation")
	if s := h.Stats(); s.Calls != 2 || s.Sent != 1 || s.Won != 1 || s.BudgetExhausted != 1 {
		t.Errorf("stats: want 2 calls, 1 refused then sent and won; have %+v", s)
	}
}

// TestPickAllocations: a call that is not marked idempotent costs Pick no
// allocation beyond the balancer's beneath.
func TestPickAllocations(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are off under the race detector")
	}
	pick := lb.Pick{Instance: "a", Endpoint: answers("a")}
	h := mustNew(t, inOrder{pick})
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := h.Pick(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Pick of a call not marked idempotent: %v allocations", n)
	}
}

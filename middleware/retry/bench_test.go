package retry_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// BenchmarkRetry measures the cost retry adds to a call that succeeds at
// once, beside the bare endpoint (raw) and go-kit's lb.Retry over a round
// robin (gokit-retry), which starts a goroutine and a timer per call.
func BenchmarkRetry(b *testing.B) {
	ok := endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, nil })
	bal := balancerFunc(func(context.Context, []string) (lb.Pick, error) {
		return lb.Pick{Instance: "a", Endpoint: ok}, nil
	})
	run := func(b *testing.B, e endpoint.Endpoint) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := e(ctx, nil); err != nil {
					b.Error(err)
				}
			}
		})
	}
	b.Run("raw", func(b *testing.B) { run(b, ok) })
	b.Run("gokit-retry", func(b *testing.B) {
		run(b, kitlb.Retry(3, time.Second, kitlb.NewRoundRobin(sd.FixedEndpointer{ok})))
	})
	b.Run("retry", func(b *testing.B) { run(b, mustNew(b, bal)) })
	b.Run("retry-no-budget", func(b *testing.B) { run(b, mustNew(b, bal, retry.WithBudget(nil))) })
	b.Run("retry-attempt-timeout", func(b *testing.B) {
		run(b, mustNew(b, bal, retry.WithAttemptTimeout(time.Second)))
	})
}

// BenchmarkBudget measures the budget's bookkeeping under contention.
func BenchmarkBudget(b *testing.B) {
	budget, err := retry.NewBudget(0.2, 10, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("deposit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				budget.Deposit()
			}
		})
	})
	b.Run("deposit+withdraw", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				budget.Deposit()
				budget.TryWithdraw()
			}
		})
	})
}

package breaker_test

import (
	"context"
	"io"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/middleware/breaker"
)

// BenchmarkBreaker compares a bare endpoint (raw), gobreaker's Execute
// wrapped the way go-kit's circuitbreaker.Gobreaker does (gobreaker), and
// this package's Middleware (breaker), on calls that succeed.
func BenchmarkBreaker(b *testing.B) {
	ok := endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, nil })
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
	b.Run("gobreaker", func(b *testing.B) {
		cb := gobreaker.NewCircuitBreaker[any](gobreaker.Settings{Name: "x"})
		run(b, func(ctx context.Context, req any) (any, error) {
			return cb.Execute(func() (any, error) { return ok(ctx, req) })
		})
	})
	b.Run("breaker", func(b *testing.B) { run(b, breaker.Middleware(breaker.New("x"))(ok)) })
}

// BenchmarkAvailable measures the check balancers make on every pick,
// beside gobreaker's State, which takes the breaker's lock.
func BenchmarkAvailable(b *testing.B) {
	f := breaker.Factory(func(string) (endpoint.Endpoint, io.Closer, error) { return nil, nil, nil })
	_, closer, _ := f("a")
	c := closer.(*breaker.Closer)
	b.Run("gobreaker-state", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = c.Breaker().State() != gobreaker.StateOpen
			}
		})
	})
	b.Run("available", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = c.Available()
			}
		})
	})
}

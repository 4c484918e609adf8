package hedge_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// inOrder is a stand-in for an lb balancer: it picks the first instance, in
// order, that it is not told to pass over.
type inOrder []lb.Pick

func (b inOrder) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b inOrder) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	for _, p := range b {
		if !slices.Contains(tried, p.Instance) {
			return p, nil
		}
	}
	return lb.Pick{}, lb.ErrNoInstances
}

func Example() {
	// Instance "a" has stalled: it answers only when its context ends.
	// Instance "b" answers at once.
	balancer := inOrder{
		{Instance: "a", Endpoint: func(ctx context.Context, _ any) (any, error) {
			<-ctx.Done()
			fmt.Println("a:", context.Cause(ctx))
			return nil, ctx.Err()
		}},
		{Instance: "b", Endpoint: func(ctx context.Context, req any) (any, error) {
			a, _ := retry.AttemptFromContext(ctx)
			return fmt.Sprintf("%v from %s (attempt %d, backup %v)", req, a.Instance, a.Number, hedge.IsBackup(ctx)), nil
		}},
	}
	hedged, err := hedge.New(balancer, hedge.WithDelay(10*time.Millisecond))
	if err != nil {
		panic(err)
	}
	// Hedging applies to idempotent calls only: WithIdempotent declares
	// every call of this endpoint so.
	call, err := retry.New(hedged, retry.WithIdempotent())
	if err != nil {
		panic(err)
	}
	resp, err := call(context.Background(), "pong")
	fmt.Println(resp, err)
	s := hedged.Stats()
	fmt.Printf("calls %d, backups sent %d, won %d\n", s.Calls, s.Sent, s.Won)
	// Output:
	// a: kitnats/hedge: another attempt answered first
	// pong from b (attempt 1, backup true) <nil>
	// calls 1, backups sent 1, won 1
}

package retry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// inOrder is a stand-in for an lb balancer: it picks the first instance,
// in order, that was not tried.
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
	// Instance "a" is gone: NATS answers no responders. "b" serves.
	balancer := inOrder{
		{Instance: "a", Endpoint: func(context.Context, any) (any, error) { return nil, nats.ErrNoResponders }},
		{Instance: "b", Endpoint: func(ctx context.Context, req any) (any, error) {
			a, _ := retry.AttemptFromContext(ctx)
			return fmt.Sprintf("%v from %s (attempt %d)", req, a.Instance, a.Number), nil
		}},
	}
	call, err := retry.New(balancer,
		retry.WithMaxAttempts(3),
		retry.WithObserver(func(_ context.Context, attempt int, instance string, _ time.Duration, err error) {
			fmt.Printf("attempt %d on %s: err=%v\n", attempt, instance, err)
		}),
	)
	if err != nil {
		panic(err)
	}
	resp, err := call(context.Background(), "pong")
	fmt.Println(resp, err)
	// Output:
	// attempt 1 on a: err=nats: no responders available for request
	// attempt 2 on b: err=<nil>
	// pong from b (attempt 2) <nil>
}

func ExampleError() {
	down := func(context.Context, any) (any, error) { return nil, nats.ErrNoResponders }
	call, _ := retry.New(inOrder{{Instance: "a", Endpoint: down}, {Instance: "b", Endpoint: down}},
		retry.WithMaxAttempts(2))
	_, err := call(context.Background(), nil)
	fmt.Println(err)
	fmt.Println(errors.Is(err, nats.ErrNoResponders), errors.Is(err, retry.ErrMaxAttempts))
	// Output:
	// kitnats/retry: 2 attempts failed (instances a, b): max attempts reached: last error: nats: no responders available for request
	// true true
}

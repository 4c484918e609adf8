package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func ExampleFactory() {
	// A transport factory whose instance is down.
	transport := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return nil, nats.ErrNoResponders }, nil, nil
	}
	factory := breaker.Factory(transport,
		breaker.WithSettings(gobreaker.Settings{
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 2 },
			Timeout:     30 * time.Second, // ejected this long, then probed
		}),
		breaker.WithStateChange(func(instance, from, to string) {
			fmt.Printf("%s: %s -> %s\n", instance, from, to)
		}),
	)
	// lb's endpoint set calls the factory once per instance.
	e, closer, _ := factory("inst-1")
	for range 3 {
		_, err := e(context.Background(), nil)
		fmt.Println(err)
	}
	fmt.Println("available:", closer.(lb.Available).Available())
	// Output:
	// nats: no responders available for request
	// inst-1: closed -> open
	// nats: no responders available for request
	// kitnats/breaker: inst-1: circuit breaker is open
	// available: false
}

func ExampleMiddleware() {
	cb := breaker.New("inventory")
	e := breaker.Middleware(cb)(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e(ctx, nil)
	fmt.Println(errors.Is(err, context.Canceled), cb.Counts().TotalFailures, cb.Counts().TotalExclusions)
	// Output:
	// true 0 1
}

func ExampleWithConn() {
	var nc *nats.Conn // the client's connection
	// One breaker per instance, with the defaults; outages of nc, and
	// failures shared by most instances, are not blamed on any instance.
	factory := breaker.Factory(natsrpc.JSONFactory[string](nc, "greeter", "hello"), breaker.WithConn(nc))
	_ = factory // for lb.NewEndpointSet
}

package kitnats_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// Example wires both sides of kitnats: a service instance that serves a
// method and registers itself, and a client that discovers it and calls
// through the balancer, retry, a per-instance breaker and tracing.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, _ := natstest.Run(natstest.Config{}) // your NATS server or cluster
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bucket, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Server side: serve "greeter/hello" as instance greeter-1, and register.
	hello := natsrpc.NewJSONServer(func(_ context.Context, name string) (string, error) {
		return "hello, " + name, nil
	})
	svc, _ := natsrpc.NewService(ctx, nc, "greeter", "greeter-1", map[string]*natsrpc.Server{"hello": hello})
	defer svc.Shutdown(context.Background())
	registrar, _ := natskv.NewRegistrar(bucket, natskv.Instance{
		ServiceName: "greeter", InstanceID: "greeter-1", Version: "1.0.0",
	}, nil, natskv.WithInstanceSubjects())
	registrar.Register()
	defer registrar.Deregister()

	// Client side: discovery, one endpoint (and breaker) per instance, a
	// balancer, retry across instances, and a client span around it all.
	instancer, _ := natskv.NewInstancer(bucket, "greeter", nil)
	defer instancer.Stop()
	factory := tracing.Factory(breaker.Factory(natsrpc.JSONFactory[string](nc, "greeter", "hello")), "greeter", "hello")
	set := lb.NewEndpointSet(instancer, factory, nil) // STANDBY and metadata come from the instancer
	defer set.Close()
	call, _ := retry.New(lb.New(set, lb.RoundRobin()), retry.WithMaxAttempts(3))
	call = tracing.Client("greeter", "hello")(call)

	greeting, err := natsrpc.Call[string](ctx, call, "gopher")
	fmt.Println(greeting, err)
	// Output: hello, gopher <nil>
}

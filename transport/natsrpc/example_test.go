package natsrpc_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

type GreetRequest struct {
	Name string `json:"name"`
}

type GreetResponse struct {
	Greeting string `json:"greeting"`
	Instance string `json:"instance"`
}

// greeter starts one instance of the "greeter" service with a typed JSON
// method "hello".
func greeter(ctx context.Context, nc *nats.Conn, instance string) (*natsrpc.Service, error) {
	hello := natsrpc.NewJSONServer(func(ctx context.Context, r GreetRequest) (GreetResponse, error) {
		if r.Name == "" {
			return GreetResponse{}, &natsrpc.Error{Code: 400, Message: "name required"}
		}
		return GreetResponse{Greeting: "hello, " + r.Name, Instance: instance}, nil
	})
	return natsrpc.NewService(ctx, nc, "greeter", instance,
		map[string]*natsrpc.Server{"hello": hello},
		natsrpc.WithVersion("1.0.0"),
		natsrpc.WithMaxConcurrent(32),
	)
}

// exampleNATS starts an embedded NATS server and connects to it, for the
// examples; an application dials its own servers with nats.Connect. stop
// closes the connection, then the server.
func exampleNATS() (nc *nats.Conn, stop func(), err error) {
	srv, err := natstest.Run(natstest.Config{})
	if err != nil {
		return nil, nil, err
	}
	if nc, err = natstest.Dial(srv.URL()); err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); srv.Shutdown() }, nil
}

// A service instance and a client calling the service-wide subject: the
// wiring without discovery.
func ExampleNewService() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, stop, err := exampleNATS()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	svc, err := greeter(ctx, nc, "g1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer svc.Shutdown(ctx) // drains: in-flight requests finish first

	client, err := natsrpc.NewServiceClient(nc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[GreetResponse])
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, err := natsrpc.Call[GreetResponse](ctx, client.Endpoint(), GreetRequest{Name: "gopher"})
	fmt.Println(resp.Greeting, "from", resp.Instance, err)

	_, err = client.Endpoint()(ctx, GreetRequest{})
	var remote *natsrpc.Error
	if errors.As(err, &remote) {
		fmt.Println(remote.Code, remote.Message)
	}
	// Output:
	// hello, gopher from g1 <nil>
	// 400 name required
}

// Factory turns the instance IDs an sd.Instancer publishes (the registry's
// Instancer in production; a fixed list here) into endpoints on each
// instance's own subject, for go-kit's Endpointer and balancers.
func ExampleFactory() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, stop, err := exampleNATS()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	for _, id := range []string{"g1", "g2"} {
		svc, err := greeter(ctx, nc, id)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer svc.Shutdown(ctx)
	}

	instancer := sd.FixedInstancer{"g1", "g2"}
	factory := natsrpc.Factory(nc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[GreetResponse])
	endpointer := sd.NewEndpointer(instancer, factory, log.NewNopLogger())
	defer endpointer.Close()
	// go-kit's Endpointer fills its cache on its own goroutine, and its Retry
	// does not back off: wait for the endpoints before the first call.
	for eps, _ := endpointer.Endpoints(); len(eps) < 2; eps, _ = endpointer.Endpoints() {
		time.Sleep(time.Millisecond)
	}
	balancer := lb.NewRoundRobin(endpointer)
	retry := lb.Retry(3, 5*time.Second, balancer)

	for range 4 {
		resp, err := natsrpc.Call[GreetResponse](ctx, retry, GreetRequest{Name: "gopher"})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(resp.Instance)
	}
	// Output:
	// g1
	// g2
	// g1
	// g2
}

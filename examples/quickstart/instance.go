package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// instance is one server process of the demo: its own NATS connection, a
// natsrpc service and a registrar.
type instance struct {
	id        string
	nc        *nats.Conn
	svc       *natsrpc.Service
	registrar *natskv.Registrar
	stopOnce  sync.Once
}

func startInstance(ctx context.Context, url string, bucket *natskv.Bucket, id string, liveness natskv.Option, otel tracing.Option) (*instance, error) {
	nc, err := connect(url, id)
	if err != nil {
		return nil, err
	}
	in := &instance{id: id, nc: nc}

	// The business logic, a plain typed function; a few hundred
	// microseconds of "work" make the latency figures worth reading.
	greet := func(ctx context.Context, req HelloRequest) (HelloResponse, error) {
		select {
		case <-time.After(time.Duration(200+rand.IntN(300)) * time.Microsecond):
		case <-ctx.Done():
			return HelloResponse{}, ctx.Err()
		}
		return HelloResponse{Greeting: "hello, " + req.Name, Instance: id}, nil
	}
	server := natsrpc.NewServer(
		tracing.Server(service, method, otel)(natsrpc.TypedEndpoint(greet)),
		natsrpc.DecodeJSONRequest[HelloRequest], natsrpc.EncodeJSONResponse)
	in.svc, err = natsrpc.NewService(ctx, nc, service, id, map[string]*natsrpc.Server{method: server},
		natsrpc.WithVersion("1.0.0"))
	if err != nil {
		nc.Close()
		return nil, err
	}

	in.registrar, err = natskv.NewRegistrar(bucket, natskv.Instance{
		ServiceName: service, InstanceID: id, Version: "1.0.0", Status: natskv.StatusActive,
	}, nil, liveness, natskv.WithInstanceSubjects())
	if err == nil {
		err = in.registrar.RegisterContext(ctx)
	}
	if err != nil {
		in.stop()
		return nil, fmt.Errorf("register %s: %w", id, err)
	}
	return in, nil
}

// crash is what a killed process looks like from outside: the connection
// drops, so its subscriptions vanish and its heartbeats stop, and nobody
// deregisters it. Its registry entry expires with its lease.
func (in *instance) crash() {
	in.registrar.Close() // stops heartbeating; does not deregister
	in.nc.Close()
}

// drain is a graceful stop: leave the registry first so clients stop picking
// this instance, then let natsrpc finish the requests in flight while new
// ones go elsewhere.
func (in *instance) drain(ctx context.Context) error {
	if err := in.registrar.DeregisterContext(ctx); err != nil {
		return err
	}
	in.registrar.Close()
	drainCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := in.svc.Shutdown(drainCtx); err != nil {
		return err
	}
	in.nc.Close()
	return nil
}

// stop releases whatever is left; every step is idempotent.
func (in *instance) stop() {
	in.stopOnce.Do(func() {
		in.registrar.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = in.svc.Shutdown(ctx)
		in.nc.Close()
	})
}

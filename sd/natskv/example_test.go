package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Server side: register an instance and keep it alive; client side: discover
// the service's healthy instances and build go-kit endpoints for them.
func Example() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{}) // an embedded NATS server for the example
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	bucket, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Server side.
	reg, err := natskv.NewRegistrar(bucket, natskv.Instance{
		ServiceName: "echo",
		InstanceID:  "echo-1",
		Version:     "1.0.0",
		Metadata:    map[string]string{"zone": "eu-1"},
	}, log.NewNopLogger())
	if err != nil {
		fmt.Println(err)
		return
	}
	reg.Register()
	defer reg.Deregister()

	// Client side.
	instancer, err := natskv.NewInstancer(bucket, "echo", log.NewNopLogger())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instancer.Stop()
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		// instance is what the formatter made of the record: here the
		// instance ID; Lookup gives the whole record.
		in, _ := instancer.Lookup(instance)
		return func(context.Context, any) (any, error) {
			return "hello from " + in.InstanceID + " in " + in.Metadata["zone"], nil
		}, nil, nil
	}
	endpointer := sd.NewEndpointer(instancer, factory, log.NewNopLogger())
	defer endpointer.Close()

	// NewInstancer returned with the set, and Register handed it to the
	// endpointer before NewEndpointer returned: the first call works.
	endpoints, _ := endpointer.Endpoints()
	resp, _ := endpoints[0](ctx, nil)
	fmt.Println(resp)
	// Output: hello from echo-1 in eu-1
}

// Subscribing to events directly, and telling a clean stop from a crash.
func ExampleNewInstancer() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bucket, _ := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})

	reasons := make(chan natskv.ChangeKind, 16)
	instancer, _ := natskv.NewInstancer(bucket, "echo", nil,
		natskv.WithChangeFunc(func(c natskv.Change) { reasons <- c.Kind }))
	defer instancer.Stop()
	events := make(chan sd.Event, 1)
	instancer.Register(events)
	defer instancer.Deregister(events)
	fmt.Println((<-events).Instances) // the bucket is empty

	reg, _ := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: "echo", InstanceID: "echo-1", Version: "1.0.0"}, nil)
	_ = reg.RegisterContext(ctx)
	fmt.Println((<-events).Instances, <-reasons)
	_ = reg.DeregisterContext(ctx)
	fmt.Println((<-events).Instances, <-reasons)
	// Output:
	// []
	// [echo-1] added
	// [] deleted
}

// Sharing a bucket with Python AegisSDK services: their bucket and key layout.
func ExampleBindBucket() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// The bucket as the Python SDK creates it.
	_, _ = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "service_registry"})

	bucket, err := natskv.BindBucket(ctx, js, "service_registry")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(bucket.Capabilities())
	reg, _ := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: "echo-service", InstanceID: "go-1", Version: "1.0.0"},
		nil, natskv.WithLayout(natskv.LayoutAegis))
	fmt.Println(reg.Key())
	// Output:
	// bucket service_registry: R1, history 1, no per-key TTL or expiry markers: a crashed instance is detected by heartbeat age only; roll-ups allowed: any writer of one key can purge the bucket
	// service-instances__echo-service__go-1
}

// The settings both sides of a bucket must agree on, set once for both;
// what concerns only the Instancer goes beside them. Bad values are refused.
func ExampleOptions() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bucket, _ := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})

	liveness := natskv.Options(natskv.WithHeartbeat(time.Second), natskv.WithTTL(3*time.Second))
	reg, _ := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: "echo", InstanceID: "echo-1", Version: "1.0.0"},
		nil, liveness)
	instancer, _ := natskv.NewInstancer(bucket, "echo", nil, liveness, natskv.WithExcludeStandby())
	defer instancer.Stop()
	fmt.Println("TTL", reg.TTL())

	_, err := natskv.NewInstancer(bucket, "echo", nil, natskv.WithPolling(0))
	fmt.Println(errors.Is(err, natskv.ErrInvalidOption), err)
	// Output:
	// TTL 3s
	// true natskv: invalid option: WithPolling: interval 0s is not positive
}

// What balancers learn of an instance beyond its name: lb.EndpointSet asks
// the Instancer (an lb.Describer) on every event, so a STANDBY instance is
// used only when no ACTIVE one can serve.
func ExampleInstancer_Describe() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bucket, _ := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})

	reg, _ := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: "echo", InstanceID: "echo-1", Version: "1.0.0",
		Metadata: map[string]string{"zone": "eu-1"}}, nil)
	_ = reg.RegisterContext(ctx)
	defer reg.Close()
	instancer, _ := natskv.NewInstancer(bucket, "echo", nil)
	defer instancer.Stop()
	events := make(chan sd.Event, 1)
	instancer.Register(events)
	defer instancer.Deregister(events)

	fmt.Println((<-events).Instances)
	attrs, _ := instancer.Describe("echo-1")
	fmt.Println("standby:", attrs.Standby, "zone:", attrs.Metadata["zone"])
	_ = reg.SetStatus(ctx, natskv.StatusStandby)
	fmt.Println((<-events).Instances) // the same set, sent again
	attrs, _ = instancer.Describe("echo-1")
	fmt.Println("standby:", attrs.Standby)
	// Output:
	// [echo-1]
	// standby: false zone: eu-1
	// [echo-1]
	// standby: true
}

// A client connection that comes back quickly after a server restart, and
// an Instancer that must have the registry's set before the program goes on.
func ExampleReconnectOptions() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL(), append(natskv.ReconnectOptions(), nats.Name("billing"))...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bucket, _ := natskv.CreateBucket(ctx, js, natskv.BucketConfig{})

	startup, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	instancer, err := natskv.NewInstancerContext(startup, bucket, "echo", nil)
	if err != nil {
		fmt.Println("registry unavailable:", err)
		return
	}
	defer instancer.Stop()
	fmt.Println(len(instancer.Instances()), "instances of echo")
	// Output: 0 instances of echo
}

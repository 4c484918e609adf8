package kitnats_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// A mixed fleet, wired as a user would: AegisSDK-style instances (written
// from AegisSDK's wire format in internal/aegistest) register in the
// AegisSDK bucket and layout as Python does — no kitnats metadata — and one
// of them is a standby answering NOT_ACTIVE; kitnats discovers them with
// natskv, builds one endpoint per instance with natsrpc.Factory (which,
// told each instance's metadata, calls these on the service-wide subject in
// envelopes), balances with lb and retries with middleware/retry. Every
// call succeeds, served by the active instance; the standby's answers are
// retried. With a kitnats instance in the fleet too, it is called on its
// own subject with the headers protocol.
//
// NATS hands a service-wide request to a random member of the queue group,
// so a call reaches the active instance with probability 1/2 per attempt
// (1/3 with the kitnats one, which serves too); 24 attempts leave a call
// failing with probability 2⁻²⁴ ≈ 6·10⁻⁸ — AegisSDK's own 3 attempts would
// fail one call in 8 here. The budget is off: with a standby in the queue
// group about every other attempt is a retry.
func TestAegisFleetThroughDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    aegistest.Mode
		kitnats bool
	}{
		{"standby answers in a result", aegistest.NotActiveResult, false},
		{"standby answers in an error", aegistest.NotActiveError, false},
		{"with a kitnats instance", aegistest.NotActiveError, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js, err := jetstream.New(natstest.Connect(t, srv.URL()))
			if err != nil {
				t.Fatal(err)
			}
			bucket, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{NoTTL: true}) // service_registry, as AegisSDK makes it
			if err != nil {
				t.Fatal(err)
			}
			layout := natskv.WithLayout(natskv.LayoutAegis)

			// The AegisSDK instances: records as Python writes them, no
			// kitnats metadata.
			active := startAegisInstance(t, srv.URL(), bucket, layout, "py-active", aegistest.Active)
			standby := startAegisInstance(t, srv.URL(), bucket, layout, "py-standby", tc.mode)
			want := 2
			var kitnatsServed atomic.Int64
			if tc.kitnats {
				startKitnatsGreeter(t, srv.URL(), bucket, layout, "go-1", &kitnatsServed)
				want = 3
			}

			// The client: discovery, one endpoint per instance, balancer, retry.
			nc := natstest.Connect(t, srv.URL())
			instancer, err := natskv.NewInstancer(bucket, "greeter", nil, layout)
			if err != nil {
				t.Fatal(err)
			}
			defer instancer.Stop()
			metadata := func(id string) (map[string]string, bool) {
				a, ok := instancer.Describe(id)
				return a.Metadata, ok
			}
			factory := natsrpc.JSONFactory[greeting](nc, "greeter", "hello",
				natsrpc.WithRegistryMetadata(metadata), natsrpc.WithEnvelope(natsrpc.EnvelopeMsgpack))
			set := lb.NewEndpointSet(instancer, factory, nil)
			defer set.Close()
			for eps, _ := set.Endpoints(); len(eps) < want; eps, _ = set.Endpoints() {
				if ctx.Err() != nil {
					t.Fatalf("%d endpoints, want %d", len(eps), want)
				}
				time.Sleep(5 * time.Millisecond)
			}
			call, err := retry.New(lb.New(set, lb.RoundRobin()), retry.WithMaxAttempts(24), retry.WithBudget(nil),
				retry.WithBackoff(time.Millisecond, 4*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}

			const calls = 200
			byInstance := map[string]int{}
			for i := range calls {
				resp, err := natsrpc.Call[greeting](ctx, call, map[string]any{"name": fmt.Sprint("caller-", i)})
				if err != nil {
					var re *retry.Error
					if errors.As(err, &re) {
						t.Fatalf("call %d: %v (%d attempts)", i, err, len(re.Attempts))
					}
					t.Fatalf("call %d: %v", i, err)
				}
				byInstance[resp.Instance]++
			}
			if byInstance["py-standby"] != 0 {
				t.Errorf("the standby served: %v", byInstance)
			}
			if byInstance["py-active"] == 0 || byInstance["py-active"]+byInstance["go-1"] != calls {
				t.Errorf("served: %v", byInstance)
			}
			if n := len(standby.Requests()); n == 0 {
				t.Error("the standby was never asked: nothing was retried")
			}
			for _, s := range []*aegistest.Server{active, standby} {
				if v := s.Violations(); len(v) > 0 {
					t.Errorf("AegisSDK's reader refused requests: %v", v)
				}
			}
			if tc.kitnats && (kitnatsServed.Load() == 0 || byInstance["go-1"] == 0) {
				t.Errorf("the kitnats instance served %d calls (%v)", kitnatsServed.Load(), byInstance)
			}
			t.Logf("served %v; the standby answered NOT_ACTIVE %d times", byInstance, len(standby.Requests()))
		})
	}
}

type greeting struct {
	Greeting string `json:"greeting"`
	Instance string `json:"instance"`
}

// startAegisInstance runs an AegisSDK-style instance of "greeter" (msgpack,
// its default) and registers it as Python does.
func startAegisInstance(t *testing.T, url string, b *natskv.Bucket, layout natskv.Option, id string, mode aegistest.Mode) *aegistest.Server {
	t.Helper()
	nc := natstest.Connect(t, url)
	s, err := aegistest.NewServer(nc, "greeter", id, aegistest.Msgpack, map[string]aegistest.Handler{
		"hello": func(p map[string]any) (any, error) {
			return map[string]any{"greeting": fmt.Sprint("hello, ", p["name"]), "instance": id}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.SetMode(mode)
	register(t, b, layout, id, map[string]string{"start_time": "2025-08-08T05:02:24.101234+00:00"})
	return s
}

// startKitnatsGreeter runs a kitnats instance of "greeter" that registers
// kitnats.rpc=instance, as kitnats services do.
func startKitnatsGreeter(t *testing.T, url string, b *natskv.Bucket, layout natskv.Option, id string, served *atomic.Int64) {
	t.Helper()
	nc := natstest.Connect(t, url)
	hello := natsrpc.NewJSONServer(func(ctx context.Context, p struct{ Name string }) (greeting, error) {
		served.Add(1)
		return greeting{Greeting: "hello, " + p.Name, Instance: id}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := natsrpc.NewService(ctx, nc, "greeter", id, map[string]*natsrpc.Server{"hello": hello})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	register(t, b, layout, id, map[string]string{wire.MetadataRPC: wire.RPCInstance})
}

func register(t *testing.T, b *natskv.Bucket, layout natskv.Option, id string, metadata map[string]string) {
	t.Helper()
	reg, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: "greeter", InstanceID: id, Version: "1.0.0",
		Metadata: metadata}, nil, layout)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.RegisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
}

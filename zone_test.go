package kitnats_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/zone"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// zonedEcho is an echo instance registered with a zone, whose service can
// stop answering while its registration stays (a process that hangs, or a
// zone cut off) and start again.
type zonedEcho struct {
	id  string
	nc  *nats.Conn
	mu  sync.Mutex
	svc *natsrpc.Service
}

func startZoned(t *testing.T, url string, b *natskv.Bucket, id, z string) *zonedEcho {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in := &zonedEcho{id: id, nc: natstest.Connect(t, url)}
	in.serve(t)
	reg, err := natskv.NewRegistrar(b, natskv.Instance{
		ServiceName: service, InstanceID: id, Version: "1.0.0",
		Metadata: map[string]string{wire.MetadataZone: z},
	}, nil, fastLiveness)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		reg.Close()
		in.stop()
	})
	return in
}

func (in *zonedEcho) serve(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := natsrpc.NewJSONServer(func(_ context.Context, req echoRequest) (echoResponse, error) {
		return echoResponse{Payload: req.Payload, Instance: in.id}, nil
	})
	svc, err := natsrpc.NewService(ctx, in.nc, service, in.id, map[string]*natsrpc.Server{method: srv})
	if err != nil {
		t.Fatal(err)
	}
	in.mu.Lock()
	in.svc = svc
	in.mu.Unlock()
}

func (in *zonedEcho) stop() {
	in.mu.Lock()
	svc := in.svc
	in.svc = nil
	in.mu.Unlock()
	if svc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	}
}

// TestZoneAwareRouting runs the whole client chain over four instances in
// two zones, with a client in zone a: its calls stay in a; when a's
// instances stop answering (their registrations stay) the calls go to b,
// with no client-visible error; when they answer again, the calls come
// back. The zones come from the registry's metadata, with no wiring.
func TestZoneAwareRouting(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	bucket := newBucket(t, nc)
	zoned := map[string]*zonedEcho{}
	for _, id := range []string{"echo-a1", "echo-a2", "echo-b1", "echo-b2"} {
		zoned[id] = startZoned(t, s.URL(), bucket, id, id[5:6])
	}
	instancer, err := natskv.NewInstancer(bucket, service, nil, fastLiveness)
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	factory := breaker.Factory(natsrpc.JSONFactory[echoResponse](nc, service, method),
		breaker.WithSettings(gobreaker.Settings{Timeout: time.Second}))
	set := lb.NewEndpointSet(instancer, factory, nil)
	defer set.Close()
	(&chain{set: set}).waitInstances(t, 4)
	call, err := retry.New(lb.New(set, zone.Policy(lb.RoundRobin(), "a")),
		retry.WithMaxAttempts(4), retry.WithAttemptTimeout(time.Second), retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}

	// calls makes n calls from 4 workers and counts them by zone.
	var errs []error
	calls := func(n int) map[string]int {
		t.Helper()
		var mu sync.Mutex
		byZone := map[string]int{}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range n / 4 {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := natsrpc.Call[echoResponse](ctx, call, echoRequest{Payload: fmt.Sprint(w, i)})
					cancel()
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						byZone[strings.TrimPrefix(resp.Instance, "echo-")[:1]]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return byZone
	}

	if z := calls(400); z["a"] < 380 {
		t.Errorf("all healthy: want ≥ 95%% of 400 calls in zone a, have %v", z)
	} else {
		t.Logf("all healthy: %v", z)
	}

	zoned["echo-a1"].stop()
	zoned["echo-a2"].stop()
	// No responders on a's instance subjects while b answers: the set
	// takes them out as gone (or, failing that, their breakers open): the
	// zone rule then sends first attempts to b, not only the retries.
	deadline := time.Now().Add(20 * time.Second)
	for v := set.View(); v.Len()-v.Unavailable() != 2; v = set.View() {
		if time.Now().After(deadline) {
			t.Fatalf("zone a not answering: want 2 instances offered and available, have %v, %d unavailable", set.Instances(), v.Unavailable())
		}
		calls(20)
	}
	if z := calls(400); z["a"] != 0 {
		t.Errorf("zone a not answering: want every call in zone b, have %v", z)
	} else {
		t.Logf("zone a not answering: %v", z)
	}

	zoned["echo-a1"].serve(t)
	zoned["echo-a2"].serve(t)
	// The breakers let a probe through after their timeout; the set sees
	// the instances available again at its next count.
	deadline = time.Now().Add(20 * time.Second)
	for {
		z := calls(100)
		if z["a"] >= 95 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zone a back: calls still elsewhere: %v", z)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if z := calls(400); z["a"] < 380 {
		t.Errorf("zone a back: want ≥ 95%% of 400 calls in zone a, have %v", z)
	} else {
		t.Logf("zone a back: %v", z)
	}
	if len(errs) != 0 {
		t.Errorf("want 0 client-visible errors, have %d; first: %v", len(errs), errs[0])
	}
}

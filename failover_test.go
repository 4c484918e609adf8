package kitnats_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/weighted"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// TestFailover runs three instances under concurrent load through the whole
// chain, kills one mid-run without deregistering and drains another: with
// retry on, no call fails, and the registry ends with the survivor only.
func TestFailover(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	bucket := newBucket(t, nc)
	instances := map[string]*echoInstance{}
	for _, id := range []string{"echo-1", "echo-2", "echo-3"} {
		instances[id] = startEcho(t, s.URL(), bucket, id)
	}
	c := newChain(t, nc, bucket,
		retry.WithMaxAttempts(4),
		retry.WithAttemptTimeout(500*time.Millisecond),
		retry.WithIdempotent())
	c.waitInstances(t, 3)

	var (
		calls    atomic.Int64
		mu       sync.Mutex
		errs     []error
		servedBy = map[string]int{}
	)
	// Phases are measured in calls, not time, so the failures land mid-run
	// however fast or loaded the machine is.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				callCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := natsrpc.Call[echoResponse](callCtx, c.endpoint, echoRequest{Payload: fmt.Sprint(w, n)})
				cancel()
				calls.Add(1)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					servedBy[resp.Instance]++
				}
				mu.Unlock()
			}
		})
	}
	waitCalls := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for target := calls.Load() + n; calls.Load() < target; {
			if time.Now().After(deadline) {
				t.Fatalf("load stalled at %d calls", calls.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}

	waitCalls(500)
	instances["echo-2"].crash()
	waitCalls(500)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := instances["echo-3"].drain(dctx); err != nil {
		t.Fatalf("drain echo-3: %v", err)
	}
	cancel()
	waitCalls(500)
	c.waitInstances(t, 1) // echo-2's lease expires, echo-3 left cleanly
	waitCalls(200)
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 0 {
		t.Errorf("want 0 client-visible errors, have %d; first: %v", len(errs), errs[0])
	}
	for _, id := range []string{"echo-1", "echo-2", "echo-3"} {
		if servedBy[id] == 0 {
			t.Errorf("%s served no call before it left: %v", id, servedBy)
		}
	}
	if have := c.set.Instances(); len(have) != 1 || have[0] != "echo-1" {
		t.Errorf("want [echo-1] left, have %v", have)
	}
	t.Logf("calls: %d, served by %v", calls.Load(), servedBy)
}

// TestStandbyAvoided: an instance that turns STANDBY stops taking calls while
// an ACTIVE one exists, and takes them again when it is ACTIVE once more: the
// registry tells the endpoint set, which re-reads the status.
func TestStandbyAvoided(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	bucket := newBucket(t, nc)
	a := startEcho(t, s.URL(), bucket, "echo-a")
	startEcho(t, s.URL(), bucket, "echo-b")
	c := newChain(t, nc, bucket)
	c.waitInstances(t, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	servedBy := func(calls int) map[string]int {
		t.Helper()
		have := map[string]int{}
		for range calls {
			resp, err := natsrpc.Call[echoResponse](ctx, c.endpoint, echoRequest{Payload: "x"})
			if err != nil {
				t.Fatal(err)
			}
			have[resp.Instance]++
		}
		return have
	}
	// until calls the chain until ok accepts a batch's spread: the status
	// reaches the client asynchronously.
	until := func(what string, ok func(map[string]int) bool) {
		t.Helper()
		var last map[string]int
		for ctx.Err() == nil {
			if last = servedBy(20); ok(last) {
				return
			}
		}
		t.Fatalf("%s: last batch served by %v", what, last)
	}

	if err := a.reg.SetStatus(ctx, natskv.StatusStandby); err != nil {
		t.Fatal(err)
	}
	until("standby avoided", func(m map[string]int) bool { return m["echo-a"] == 0 })
	if have := servedBy(200); have["echo-a"] != 0 {
		t.Errorf("a STANDBY instance took calls while an ACTIVE one was up: %v", have)
	}
	if err := a.reg.SetStatus(ctx, natskv.StatusActive); err != nil {
		t.Fatal(err)
	}
	until("active again", func(m map[string]int) bool { return m["echo-a"] > 0 })
}

// TestWeightsFromRegistry: weights an instance registers reach a policy
// written outside lb, with no wiring — the Instancer describes its
// instances to the endpoint set.
func TestWeightsFromRegistry(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	bucket := newBucket(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id, weight := range map[string]string{"echo-light": "1", "echo-heavy": "3"} {
		reg, err := natskv.NewRegistrar(bucket, natskv.Instance{
			ServiceName: service, InstanceID: id, Version: "1.0.0",
			Metadata: map[string]string{wire.MetadataWeight: weight},
		}, nil, fastLiveness)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.RegisterContext(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
	instancer, err := natskv.NewInstancer(bucket, service, nil, fastLiveness)
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	set := lb.NewEndpointSet(instancer, natsrpc.JSONFactory[echoResponse](nc, service, method), nil)
	defer set.Close()
	c := &chain{set: set}
	c.waitInstances(t, 2)

	balancer := lb.New(set, weighted.Policy())
	const picks = 10000
	counts := map[string]int{}
	for range picks {
		p, err := balancer.Pick(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Instance]++
	}
	// ±2 points of traffic: over 4.6 standard deviations.
	if share := float64(counts["echo-heavy"]) / picks; share < 0.73 || share > 0.77 {
		t.Errorf("weights 1:3: echo-heavy's share %.3f, want 0.75 ± 0.02 (%v)", share, counts)
	}
}

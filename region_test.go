package kitnats_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
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

// regionWait bounds every wait of the region tests. None asserts a
// duration: the machine is shared; the times are logged.
const regionWait = 60 * time.Second

// regionEcho is an echo instance of a region: its own connection to its
// region's server, a natsrpc service, and a registration in its region's
// home bucket.
type regionEcho struct {
	id  string
	reg *natskv.Registrar
	svc *natsrpc.Service
}

func startRegionEcho(t *testing.T, url string, r *natskv.Region, id string) *regionEcho {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), regionWait)
	defer cancel()
	nc := natstest.Connect(t, url, natskv.ReconnectOptions()...)
	srv := natsrpc.NewJSONServer(func(_ context.Context, req echoRequest) (echoResponse, error) {
		return echoResponse{Payload: req.Payload, Instance: id}, nil
	})
	svc, err := natsrpc.NewService(ctx, nc, service, id, map[string]*natsrpc.Server{method: srv})
	if err != nil {
		t.Fatal(err)
	}
	// One zone per region: {region}-a.
	reg, err := r.NewRegistrar(natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, nil,
		fastLiveness, natskv.WithZone(r.Name()+"-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		reg.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = svc.Shutdown(sctx)
	})
	return &regionEcho{id: id, reg: reg, svc: svc}
}

// provisionRegion provisions a region over its own connection, retrying
// while a supercluster's JetStream settles.
func provisionRegion(t *testing.T, url string, cfg natskv.RegionConfig) *natskv.Region {
	t.Helper()
	nc := natstest.Connect(t, url, natskv.ReconnectOptions()...)
	js := natstest.JetStream(t, nc)
	deadline := time.Now().Add(regionWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := natskv.ProvisionRegion(ctx, js, cfg)
		cancel()
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("provision %s: %v", cfg.Region, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// regionClient is a region's client chain: a watch on its region's view,
// an endpoint set, a policy preferring its zone, then its region, retries.
type regionClient struct {
	instancer *natskv.Instancer
	set       *lb.EndpointSet
	call      func(ctx context.Context, payload string) (string, error)
	guard     atomic.Int32 // stale guard engagements logged
}

func newRegionClient(t *testing.T, url string, r *natskv.Region) *regionClient {
	t.Helper()
	nc := natstest.Connect(t, url, natskv.ReconnectOptions()...)
	c := &regionClient{}
	logger := log.LoggerFunc(func(kv ...any) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == "stale_guard" && kv[i+1] == "engaged" {
				c.guard.Add(1)
			}
		}
		return nil
	})
	var err error
	c.instancer, err = natskv.NewInstancer(r.View(), service, logger, fastLiveness, natskv.WithReadyWait(regionWait))
	if err != nil {
		t.Fatal(err)
	}
	factory := breaker.Factory(natsrpc.JSONFactory[echoResponse](nc, service, method),
		breaker.WithSettings(gobreaker.Settings{Timeout: time.Second}))
	c.set = lb.NewEndpointSet(c.instancer, factory, nil)
	t.Cleanup(func() {
		c.set.Close()
		c.instancer.Stop()
	})
	policy := zone.Policy(zone.Policy(lb.RoundRobin(), r.Name()+"-a"), r.Name(), zone.WithKey(wire.MetadataRegion))
	e, err := retry.New(lb.New(c.set, policy),
		retry.WithMaxAttempts(4), retry.WithAttemptTimeout(time.Second), retry.WithIdempotent())
	if err != nil {
		t.Fatal(err)
	}
	c.call = func(ctx context.Context, payload string) (string, error) {
		resp, err := natsrpc.Call[echoResponse](ctx, e, echoRequest{Payload: payload})
		return resp.Instance, err
	}
	return c
}

// offered is the set of instances the client's endpoint set holds.
func (c *regionClient) offered() map[string]bool {
	out := map[string]bool{}
	for _, in := range c.set.Instances() {
		out[in] = true
	}
	return out
}

func (c *regionClient) waitOffered(t *testing.T, what string, cond func(map[string]bool) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond(c.offered()) {
		if time.Since(start) > regionWait {
			t.Fatalf("%s: gave up; offered %v", what, c.offered())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// callers keeps n workers calling through c until stopped, counting the
// calls by the region of the instance that answered, and every error.
type callers struct {
	mu     sync.Mutex
	served map[string]int
	errs   []error
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startCallers(c *regionClient, n int) *callers {
	cs := &callers{served: map[string]int{}, stop: make(chan struct{})}
	for w := range n {
		cs.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-cs.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				id, err := c.call(ctx, fmt.Sprint(w, i))
				cancel()
				cs.mu.Lock()
				if err != nil {
					cs.errs = append(cs.errs, err)
				} else {
					cs.served[strings.SplitN(id, "-", 2)[0]]++
				}
				cs.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return cs
}

// snapshot returns and resets the counts.
func (cs *callers) snapshot() (map[string]int, []error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s, e := cs.served, cs.errs
	cs.served, cs.errs = map[string]int{}, nil
	return s, e
}

func (cs *callers) halt() {
	close(cs.stop)
	cs.wg.Wait()
}

// TestRegionPartition runs two one-node regions, east and west, joined by
// a gateway: three echo instances in east, two in west, each registered in
// its region's home bucket, and a client in west watching west's view and
// preferring west. Both regions see all five. Then east's server is
// killed while west's callers run:
//
//   - no call from west fails, and all stay in west;
//   - west stops offering east's instances: they make up more than half
//     of the service, so the stale guard engages and holds them, for one
//     staleness threshold, never longer;
//   - a new watch cannot start in west during the cut: with one server per
//     region, neither side has the JetStream meta group's majority;
//   - when east's server is back, west's view converges to all five, and
//     no call fails through the heal.
func TestRegionPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("supercluster test skipped in -short mode")
	}
	sc := natstest.StartSupercluster(t, natstest.SuperclusterConfig{})
	east, west := sc.Region("east"), sc.Region("west")
	regions := []string{"east", "west"}
	rEast := provisionRegion(t, east.URL(), natskv.RegionConfig{Region: "east", Regions: regions})
	rWest := provisionRegion(t, west.URL(), natskv.RegionConfig{Region: "west", Regions: regions})
	for _, id := range []string{"east-1", "east-2", "east-3"} {
		startRegionEcho(t, east.URL(), rEast, id)
	}
	for _, id := range []string{"west-1", "west-2"} {
		startRegionEcho(t, west.URL(), rWest, id)
	}
	all := func(o map[string]bool) bool { return len(o) == 5 }
	westOnly := func(o map[string]bool) bool { return len(o) == 2 && o["west-1"] && o["west-2"] }
	clientWest := newRegionClient(t, west.URL(), rWest)
	clientEast := newRegionClient(t, east.URL(), rEast)
	t.Logf("registrations in both regions seen from west in %v", clientWest.waitOffered(t, "west sees both regions", all))
	t.Logf("registrations in both regions seen from east in %v", clientEast.waitOffered(t, "east sees both regions", all))
	for _, in := range clientWest.instancer.Instances() {
		if want := strings.SplitN(in.InstanceID, "-", 2)[0]; in.Metadata[wire.MetadataRegion] != want {
			t.Fatalf("%s registered region %q", in.InstanceID, in.Metadata[wire.MetadataRegion])
		}
	}

	calls := startCallers(clientWest, 4)
	defer calls.halt()
	time.Sleep(200 * time.Millisecond)
	if served, errs := calls.snapshot(); served["west"] == 0 || served["east"] != 0 || len(errs) != 0 {
		t.Fatalf("before the cut: served %v, errors %v", served, errs)
	}

	cut := time.Now()
	east.Nodes[0].Stop()
	clientWest.waitOffered(t, "east's instances leave west's view", westOnly)
	t.Logf("west stops offering east's instances %v after the cut", time.Since(cut))
	if clientWest.guard.Load() == 0 {
		t.Error("east held most of the service, but the stale guard never engaged")
	}
	if served, errs := calls.snapshot(); served["east"] != 0 || len(errs) != 0 {
		t.Fatalf("during the cut: served %v, %d errors, first %v", served, len(errs), errs)
	}

	// Another process's new watch needs a consumer, and a consumer the
	// JetStream meta leader, which neither side has. (This process's new
	// Instancers join its running watch.)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	other := natstest.JetStream(t, natstest.Connect(t, west.URL()))
	if r, err := natskv.BindRegion(ctx, other, "", "west"); err != nil {
		t.Logf("binding west's region during the cut: %v", err)
	} else if _, err := natskv.NewInstancerContext(ctx, r.View(), service, nil, fastLiveness); err == nil {
		t.Error("a new process's watch started in west during the cut: the meta group's quorum is not what this test assumes")
	} else {
		t.Logf("a new process's watch in west during the cut: %v", err)
	}
	cancel()
	if i, err := natskv.NewInstancer(rWest.View(), service, nil, fastLiveness, natskv.WithReadyWait(regionWait)); err != nil || len(i.Instances()) != 2 {
		t.Errorf("a new Instancer on west's running watch during the cut: %v, %v", err, i)
	} else {
		i.Stop()
	}

	heal := time.Now()
	if err := east.Nodes[0].StartAgain(); err != nil {
		t.Fatal(err)
	}
	clientWest.waitOffered(t, "east's instances back in west's view", all)
	t.Logf("west's view converges %v after east's server is back", time.Since(heal))
	clientEast.waitOffered(t, "east's view back", all)
	t.Logf("east's view converges %v after east's server is back", time.Since(heal))
	time.Sleep(200 * time.Millisecond)
	if served, errs := calls.snapshot(); len(errs) != 0 || served["east"] != 0 || served["west"] == 0 {
		t.Fatalf("through the heal: served %v, %d errors, first %v", served, len(errs), errs)
	}
}

// TestRegionPartitionMajority runs a three-node home region (R3 buckets)
// and a one-node region, away. With away cut off, home keeps the JetStream
// meta group's majority (three of four peers): a new process in home
// starts its watch during the cut, and offers home's instances only once
// away's have aged out of home's view.
func TestRegionPartitionMajority(t *testing.T) {
	if testing.Short() {
		t.Skip("supercluster test skipped in -short mode")
	}
	sc := natstest.StartSupercluster(t, natstest.SuperclusterConfig{Regions: []natstest.RegionConfig{{Name: "home", Nodes: 3}, {Name: "away"}}})
	home, away := sc.Region("home"), sc.Region("away")
	regions := []string{"home", "away"}
	rHome := provisionRegion(t, home.URL(), natskv.RegionConfig{Region: "home", Regions: regions, Bucket: natskv.BucketConfig{Replicas: 3}})
	rAway := provisionRegion(t, away.URL(), natskv.RegionConfig{Region: "away", Regions: regions})
	if c := rHome.View().Capabilities(); c.Replicas != 3 {
		t.Fatalf("home's view: %v", c)
	}
	startRegionEcho(t, home.URL(), rHome, "home-1")
	startRegionEcho(t, home.URL(), rHome, "home-2")
	startRegionEcho(t, away.URL(), rAway, "away-1")
	all := func(o map[string]bool) bool { return len(o) == 3 }
	homeOnly := func(o map[string]bool) bool { return len(o) == 2 && o["home-1"] && o["home-2"] }
	client := newRegionClient(t, home.URL(), rHome)
	client.waitOffered(t, "home sees both regions", all)

	cut := time.Now()
	away.Nodes[0].Stop()
	// A new process in home: it binds, watches and calls during the cut.
	late := newRegionClient(t, home.URL(), mustBindRegion(t, home.URL(), "home"))
	late.waitOffered(t, "the new process offers home's instances only", homeOnly)
	client.waitOffered(t, "the running client offers home's instances only", homeOnly)
	t.Logf("home offers its own instances only %v after the cut", time.Since(cut))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		id, err := late.call(ctx, fmt.Sprint(i))
		cancel()
		if err != nil || !strings.HasPrefix(id, "home-") {
			t.Fatalf("call %d during the cut: %q, %v", i, id, err)
		}
	}

	heal := time.Now()
	if err := away.Nodes[0].StartAgain(); err != nil {
		t.Fatal(err)
	}
	late.waitOffered(t, "away's instance back", all)
	t.Logf("home's view converges %v after away's server is back", time.Since(heal))
}

func mustBindRegion(t *testing.T, url, region string) *natskv.Region {
	t.Helper()
	js := natstest.JetStream(t, natstest.Connect(t, url, natskv.ReconnectOptions()...))
	ctx, cancel := context.WithTimeout(context.Background(), regionWait)
	defer cancel()
	r, err := natskv.BindRegion(ctx, js, "", region)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRegionLeafSite runs a leaf node with a JetStream domain of its own,
// edge, attached to a two-region supercluster (domain hub). The edge site
// is a region of the registry like the others: its instance registers in
// its own home bucket, in its own domain; its view holds its own instances
// and, sourced through the hub's domain, the hub's; the hub's views hold
// the edge's. A client at the edge calls both.
func TestRegionLeafSite(t *testing.T) {
	if testing.Short() {
		t.Skip("supercluster test skipped in -short mode")
	}
	sc := natstest.StartSupercluster(t, natstest.SuperclusterConfig{Leaf: true})
	east, west := sc.Region("east"), sc.Region("west")
	hub := []string{"east", "west"}
	edgeRemote := map[string]string{"edge": sc.LeafDomain}
	rEast := provisionRegion(t, east.URL(), natskv.RegionConfig{Region: "east", Regions: hub, Remote: edgeRemote})
	rWest := provisionRegion(t, west.URL(), natskv.RegionConfig{Region: "west", Regions: hub, Remote: edgeRemote})
	rEdge := provisionRegion(t, sc.Leaf.URL(), natskv.RegionConfig{Region: "edge", NoPlacement: true,
		Remote: map[string]string{"east": sc.HubDomain, "west": sc.HubDomain}})
	startRegionEcho(t, east.URL(), rEast, "east-1")
	startRegionEcho(t, west.URL(), rWest, "west-1")
	edgeEcho := startRegionEcho(t, sc.Leaf.URL(), rEdge, "edge-1")
	all := func(o map[string]bool) bool { return len(o) == 3 }

	edge := newRegionClient(t, sc.Leaf.URL(), rEdge)
	edge.waitOffered(t, "the edge sees its own instance and the hub's", all)
	newRegionClient(t, west.URL(), rWest).waitOffered(t, "the hub sees the edge's instance", all)

	// The edge client prefers its own site; with the edge instance gone it
	// calls the hub's, across the leaf connection, without an error.
	ctx, cancel := context.WithTimeout(context.Background(), regionWait)
	defer cancel()
	for i := range 20 {
		id, err := edge.call(ctx, fmt.Sprint(i))
		if err != nil || id != "edge-1" {
			t.Fatalf("call %d at the edge: %q, %v", i, id, err)
		}
	}
	in, ok := edge.instancer.Lookup("edge-1")
	if !ok || in.Metadata[wire.MetadataRegion] != "edge" {
		t.Fatalf("edge-1 in the edge's view: %v %v", in, ok)
	}
	if err := edgeEcho.reg.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	edge.waitOffered(t, "the edge's instance gone", func(o map[string]bool) bool { return len(o) == 2 && !o["edge-1"] })
	served := map[string]int{}
	for i := range 40 {
		id, err := edge.call(ctx, fmt.Sprint(i))
		if err != nil {
			t.Fatalf("call %d from the edge to the hub: %v", i, err)
		}
		served[id]++
	}
	if served["east-1"] == 0 || served["west-1"] == 0 {
		t.Fatalf("calls from the edge to the hub: %v", served)
	}
}

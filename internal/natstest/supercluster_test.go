package natstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

// leakCheck fails the test if it leaves goroutines behind once its
// cleanups (the servers' shutdown among them) have run.
func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func TestSuperclusterWithLeaf(t *testing.T) {
	if testing.Short() {
		t.Skip("supercluster test skipped in -short mode")
	}
	leakCheck(t)
	sc := StartSupercluster(t, SuperclusterConfig{Leaf: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	east, west := sc.Region("east"), sc.Region("west")
	if east == nil || west == nil || sc.Leaf == nil || sc.Hub() != east.Nodes[0] {
		t.Fatalf("regions %v, leaf %v", sc.Regions, sc.Leaf)
	}

	// A bucket placed in east is written from east and read from west:
	// one JetStream across the gateway.
	jsEast := JetStream(t, Connect(t, east.URL()))
	jsWest := JetStream(t, Connect(t, west.URL()))
	kv, err := jsEast.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "reg_east", Placement: &jetstream.Placement{Cluster: "east"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "from-east"); err != nil {
		t.Fatal(err)
	}
	info, err := jsWest.Stream(ctx, "KV_reg_east")
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Cluster; c == nil || c.Name != "east" {
		t.Fatalf("bucket placed in %+v, want east", c)
	}
	kvw, err := jsWest.KeyValue(ctx, "reg_east")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kvw.Get(ctx, "k"); err != nil || string(e.Value()) != "from-east" {
		t.Fatalf("read from west: %v %v", e, err)
	}

	// The leaf's own domain holds its own buckets; the hub's are reached
	// through the hub's domain, and the hub reaches the leaf's.
	leafConn := Connect(t, sc.Leaf.URL())
	jsLeaf := JetStream(t, leafConn)
	ai, err := jsLeaf.AccountInfo(ctx)
	if err != nil || ai.Domain != sc.LeafDomain {
		t.Fatalf("leaf JetStream: %+v %v", ai, err)
	}
	if _, err := jsLeaf.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "reg_edge"}); err != nil {
		t.Fatal(err)
	}
	if _, err := jsLeaf.KeyValue(ctx, "reg_east"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("the leaf's own domain must not hold the hub's bucket: %v", err)
	}
	jsHubFromLeaf, err := jetstream.NewWithDomain(leafConn, sc.HubDomain)
	if err != nil {
		t.Fatal(err)
	}
	kvh, err := jsHubFromLeaf.KeyValue(ctx, "reg_east")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kvh.Get(ctx, "k"); err != nil || string(e.Value()) != "from-east" {
		t.Fatalf("hub bucket from the leaf: %v %v", e, err)
	}
	jsEdgeFromWest, err := jetstream.NewWithDomain(Connect(t, west.URL()), sc.LeafDomain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsEdgeFromWest.KeyValue(ctx, "reg_edge"); err != nil {
		t.Fatalf("leaf bucket from west through the leaf's domain: %v", err)
	}

	// A region stopped and started again heals: gateways, meta peers.
	west.Nodes[0].Stop()
	if err := west.Nodes[0].StartAgain(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := kvw.Get(ctx, "k"); err != nil || string(e.Value()) != "from-east" {
		t.Fatalf("read from west after its restart: %v %v", e, err)
	}
	sc.Shutdown()
	sc.Shutdown() // idempotent
}

package natskv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// watchConsumerNode returns the server holding the (only) consumer on the
// bucket's stream: the Instancer's watch.
func watchConsumerNode(ctx context.Context, js jetstream.JetStream, bucket string) (string, error) {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return "", err
	}
	l := s.ListConsumers(ctx)
	leader := ""
	for ci := range l.Info() { // read to the end: the lister blocks otherwise
		if ci.Cluster != nil && ci.Cluster.Leader != "" && leader == "" {
			leader = ci.Cluster.Leader
		}
	}
	if err := l.Err(); err != nil {
		return "", err
	}
	if leader == "" {
		return "", fmt.Errorf("no consumer on %s", bucket)
	}
	return leader, nil
}

func TestClusterNodeLossKeepsUpdatesFlowing(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	c := natstest.StartCluster(t, 3)
	ctx := ctxT(t)
	js := natstest.JetStream(t, natstest.Connect(t, c.URL()))
	var b *natskv.Bucket
	eventually(t, "create R3 bucket", func() (err error) { // peers may still be joining
		b, err = natskv.CreateBucket(ctx, js, natskv.BucketConfig{Replicas: 3})
		return err
	})
	if have := b.Capabilities().Replicas; have != 3 {
		t.Fatalf("want R3, have R%d", have)
	}
	// The instancer has a connection of its own, like a separate client.
	ijs := natstest.JetStream(t, natstest.Connect(t, c.URL()))
	ib, err := natskv.BindBucket(ctx, ijs, b.Name())
	if err != nil {
		t.Fatal(err)
	}
	register(t, b, inst("svc", "a"))
	i := newInstancer(t, ib, "svc")
	ch := subscribe(t, i)
	waitSet(t, ch, "a")

	var node string
	eventually(t, "find the watch consumer", func() (err error) {
		node, err = watchConsumerNode(ctx, js, b.Name())
		return err
	})
	t.Logf("stopping %s, which holds the watch consumer", node)
	c.Node(node).Stop()
	stopped := time.Now()

	// Updates written after the loss reach the subscriber.
	r, err := natskv.NewRegistrar(b, inst("svc", "b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	eventually(t, "register after node loss", func() error {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return r.RegisterContext(wctx)
	})
	waitSet(t, ch, "a", "b")
	t.Logf("update delivered %v after the node stopped", time.Since(stopped))
	if err := c.Node(node).StartAgain(); err != nil {
		t.Fatal(err)
	}
}

package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRestartKeepsPortAndStore(t *testing.T) {
	s := Start(t)
	url := s.URL()
	reconnected := make(chan struct{}, 1)
	nc := Connect(t, url, nats.ReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}))
	js := JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if have := s.URL(); have != url {
		t.Fatalf("URL after restart: want %s, have %s", url, have)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("client did not reconnect after restart")
	}
	if err := WaitJetStream(ctx, nc); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil {
		t.Fatalf("value lost across restart: %v", err)
	}
	if string(e.Value()) != "v" {
		t.Fatalf("want v, have %q", e.Value())
	}
	s.Shutdown()
	s.Shutdown() // idempotent
}

func TestClusterR3SurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	c := StartCluster(t, 3)
	nc := Connect(t, c.URL())
	js := JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	c.Nodes[0].Stop()
	// A write must succeed once the remaining two nodes settle.
	var putErr error
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, putErr = kv.PutString(pctx, "k", "2")
		pcancel()
		if putErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if putErr != nil {
		t.Fatalf("put after node loss: %v", putErr)
	}
	if err := c.Nodes[0].StartAgain(); err != nil {
		t.Fatal(err)
	}
	if !c.Nodes[0].Running() {
		t.Fatal("node not running after StartAgain")
	}
}

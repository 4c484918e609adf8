package scale

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// NATS is the natskv backend on an embedded server: the registry's bucket
// with the dotted layout, the client on a TCP connection of its own.
type NATS struct {
	tb     testing.TB
	js     jetstream.JetStream // the writers'
	bucket *natskv.Bucket      // the client's
	per    int
}

// StartNATS starts a server and binds a bucket for the Instancers.
func StartNATS(tb testing.TB) *NATS {
	s := natstest.Start(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(tb, natstest.Connect(tb, s.URL()))
	if _, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "scale"}); err != nil {
		tb.Fatal(err)
	}
	b, err := natskv.BindBucket(ctx, natstest.JetStream(tb, natstest.Connect(tb, s.URL())), "scale")
	if err != nil {
		tb.Fatal(err)
	}
	return &NATS{tb: tb, js: js, bucket: b}
}

// Bucket is the client's bucket.
func (n *NATS) Bucket() *natskv.Bucket { return n.bucket }

func record(svc string, id int, healthy bool) (string, []byte) {
	in := natskv.Instance{ServiceName: svc, InstanceID: fmt.Sprintf("i%d", id), Version: "1.0.0",
		Status: natskv.StatusActive, LastHeartbeat: time.Now(),
		Metadata: map[string]string{"addr": fmt.Sprintf("10.0.%d.%d:8080", id/250, id%250)}}
	if !healthy {
		in.Status = natskv.StatusUnhealthy
	}
	data, _ := natskv.EncodeInstance(in)
	key, _ := natskv.LayoutDotted.Key(svc, in.InstanceID)
	return key, data
}

func (n *NATS) Fill(ctx context.Context, services []string, per int) error {
	n.per = per
	for k, svc := range services {
		for id := range per {
			key, data := record(svc, id, true)
			if _, err := n.js.PublishAsync("$KV.scale."+key, data); err != nil {
				return err
			}
		}
		if k%50 == 49 { // a bounded number in flight
			select {
			case <-n.js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	select {
	case <-n.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *NATS) Set(ctx context.Context, svc string, healthy bool) error {
	key, data := record(svc, 0, healthy)
	_, err := n.bucket.KeyValue().Put(ctx, key, data)
	return err
}

func (n *NATS) NewInstancer(svc string) (sd.Instancer, error) {
	return natskv.NewInstancer(n.bucket, svc, nil)
}

func (n *NATS) ServerWatches(ctx context.Context) (int, error) {
	s, err := n.js.Stream(ctx, "KV_scale")
	if err != nil {
		return 0, err
	}
	count := 0
	l := s.ListConsumers(ctx)
	for range l.Info() {
		count++
	}
	return count, l.Err()
}

func (n *NATS) RawWatch(ctx context.Context, svc string) (<-chan struct{}, func(), error) {
	w, err := n.bucket.KeyValue().WatchFiltered(ctx, []string{"service-instances." + svc + ".*"}, jetstream.UpdatesOnly())
	if err != nil {
		return nil, nil, err
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					select {
					case out <- struct{}{}:
					case <-done:
						return
					}
				}
			case <-done:
				return
			}
		}
	}()
	return out, func() { close(done); w.Stop() }, nil
}

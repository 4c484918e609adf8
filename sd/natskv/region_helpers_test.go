package natskv_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// rgWait bounds every wait of the region tests: generous, the machine is
// shared; none of them asserts a duration.
const rgWait = 60 * time.Second

func rgCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*rgWait)
	t.Cleanup(cancel)
	return ctx
}

// rgConn connects to url over TCP; the connection follows restarts and is
// closed at cleanup.
func rgConn(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := natstest.Connect(t, url, append(natskv.ReconnectOptions(), opts...)...)
	return nc, natstest.JetStream(t, nc)
}

// rgEventually polls cond every 10 ms until it holds, failing the test
// after rgWait.
func rgEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rgWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rgProvision provisions one region, retrying while the supercluster's
// JetStream settles (a meta leader elected moments ago may lose a request).
func rgProvision(t testing.TB, js jetstream.JetStream, cfg natskv.RegionConfig) *natskv.Region {
	t.Helper()
	var r *natskv.Region
	var err error
	rgEventually(t, "provision "+cfg.Region, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err = natskv.ProvisionRegion(ctx, js, cfg)
		if err != nil {
			t.Logf("provision %s: %v", cfg.Region, err)
		}
		return err == nil
	})
	return r
}

// rgLast is the latest raw message of key in bucket's stream, nil when
// there is none.
func rgLast(ctx context.Context, js jetstream.JetStream, bucket, key string) *jetstream.RawStreamMsg {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil
	}
	m, err := s.GetLastMsgForSubject(ctx, "$KV."+bucket+"."+key)
	if err != nil {
		return nil
	}
	return m
}

// rgIDs is the set of instance IDs an Instancer offers.
func rgIDs(i *natskv.Instancer) map[string]bool {
	out := map[string]bool{}
	for _, in := range i.Instances() {
		out[in.InstanceID] = true
	}
	return out
}

package natskv_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// A server whose account holds an admin and users with exactly the
// permissions package's templates: greeter-1 as a service instance, a
// client of greeter and billing.
func templateServer(t *testing.T, bucket string) *natstest.Server {
	t.Helper()
	tpl := permissions.Template{Bucket: bucket}
	svc, err := tpl.Service("greeter", "greeter-1")
	if err != nil {
		t.Fatal(err)
	}
	client, err := tpl.Client("greeter", "billing")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("accounts: { APP: { jetstream: enabled, users: [\n")
	b.WriteString(`{ user: "admin", password: "pw" }` + "\n")
	fmt.Fprintf(&b, "{ user: %q, password: \"pw\"\n%s}\n", "greeter-1", svc.Config())
	fmt.Fprintf(&b, "{ user: %q, password: \"pw\"\n%s}\n", "client", client.Config())
	b.WriteString("] } }\n")
	return natstest.StartConfig(t, b.String())
}

func keysOf(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	l, err := kv.ListKeys(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// A bucket CreateBucket makes refuses what a writer of one key must not
// do: with exactly the service template's permissions, greeter-1 rolls up
// (all, and sub) its own key and another's, and no other record is lost;
// meanwhile everything kitnats needs works for it and a client — register,
// heartbeats with a per-key TTL, the watch, deregister. On a bucket with
// expiry markers (where nats-server allows roll-ups) the same writer wipes
// the bucket: why markers are not the default.
func TestSingleWriterCannotWipeTheRegistry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   natskv.BucketConfig
		wiped bool
	}{
		{"default", natskv.BucketConfig{Name: "reg"}, false},
		{"with markers", natskv.BucketConfig{Name: "reg", LimitMarkerTTL: time.Minute}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := templateServer(t, "reg")
			ctx := ctxT(t)
			admin := natstest.Connect(t, srv.URL(), nats.UserInfo("admin", "pw"))
			ab, err := natskv.CreateBucket(ctx, natstest.JetStream(t, admin), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c := ab.Capabilities(); c.Rollups != tc.wiped || !c.MsgTTL {
				t.Fatalf("capabilities: %+v", c)
			}
			liveness := natskv.Options(natskv.WithHeartbeat(100*time.Millisecond), natskv.WithTTL(10*time.Second))
			// The others' records, written once (a live registrar would
			// write its record back after a roll-up).
			for _, in := range []natskv.Instance{inst("billing", "billing-1"), inst("greeter", "greeter-2")} {
				in.LastHeartbeat = time.Now()
				data, _ := natskv.EncodeInstance(in)
				key, _ := natskv.LayoutDotted.Key(in.ServiceName, in.InstanceID)
				if _, err := ab.KeyValue().Put(ctx, key, data); err != nil {
					t.Fatal(err)
				}
			}

			// greeter-1, holding the service template only.
			gnc := natstest.Connect(t, srv.URL(), nats.UserInfo("greeter-1", "pw"))
			gjs := natstest.JetStream(t, gnc)
			gb, err := natskv.BindBucket(ctx, gjs, "reg")
			if err != nil {
				t.Fatal(err)
			}
			if gb.Capabilities().Rollups != tc.wiped {
				t.Fatalf("BindBucket says roll-ups %v", gb.Capabilities().Rollups)
			}
			g1 := register(t, gb, inst("greeter", "greeter-1"), liveness)
			if g1.TTL() != 10*time.Second {
				t.Fatalf("per-key TTL %v", g1.TTL())
			}
			// The client watches greeter.
			cnc := natstest.Connect(t, srv.URL(), nats.UserInfo("client", "pw"))
			cb, err := natskv.BindBucket(ctx, natstest.JetStream(t, cnc), "reg")
			if err != nil {
				t.Fatal(err)
			}
			// (greeter-2, written once, would go stale while the test runs.)
			ch := subscribe(t, newInstancer(t, cb, "greeter", liveness, natskv.WithStaleAfter(-1)))
			waitSet(t, ch, "greeter-1", "greeter-2")
			e, _ := ab.KeyValue().Get(ctx, g1.Key())
			eventually(t, "a heartbeat", func() error {
				if e2, err := ab.KeyValue().Get(ctx, g1.Key()); err != nil || e2.Revision() == e.Revision() {
					return fmt.Errorf("revision %d", e.Revision())
				}
				return nil
			})

			all := []string{"service-instances.billing.billing-1", "service-instances.greeter.greeter-1", "service-instances.greeter.greeter-2"}
			if have := keysOf(t, ab.KeyValue()); !slices.Equal(have, all) {
				t.Fatalf("before: %v", have)
			}
			g1.Close() // its heartbeat would write over a roll-up
			for _, key := range []string{g1.Key(), "service-instances.billing.billing-1", "service-instances.greeter.greeter-2"} {
				for _, how := range []string{"all", "sub"} {
					m := nats.NewMsg("$KV.reg." + key)
					m.Header.Set("Nats-Rollup", how)
					// Another's key: the permissions refuse it, and the
					// publish waits for an acknowledgement that never comes.
					pctx, cancel := context.WithTimeout(ctx, time.Second)
					_, err := gjs.PublishMsg(pctx, m)
					cancel()
					t.Logf("rollup %s on %s: %v", how, key, err)
					if !tc.wiped && err == nil {
						t.Errorf("rollup %s on %s: accepted", how, key)
					}
				}
			}
			have := keysOf(t, ab.KeyValue())
			lost := slices.DeleteFunc(slices.Clone(all), func(k string) bool { return slices.Contains(have, k) || k == g1.Key() })
			switch {
			case !tc.wiped && len(lost) > 0:
				t.Fatalf("records lost to one writer's roll-ups: %v (left %v)", lost, have)
			case tc.wiped && len(lost) == 0:
				t.Fatalf("a bucket with markers refused the roll-up: the test no longer shows why markers are not the default (left %v)", have)
			}
			if tc.wiped {
				return
			}
			// Deregister still works: a delete, not a purge.
			g2, err := natskv.NewRegistrar(gb, inst("greeter", "greeter-1"), nil, liveness)
			if err != nil {
				t.Fatal(err)
			}
			if err := g2.RegisterContext(ctx); err != nil {
				t.Fatal(err)
			}
			if err := g2.DeregisterContext(ctx); err != nil {
				t.Fatal(err)
			}
			waitSet(t, ch, "greeter-2")
			g2.Close()
		})
	}
}

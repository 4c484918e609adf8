package permissions_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

const keyPrefix = "$KV." + bucketName + "."

// refusedNow ends when the recorder shows subject refused (or after
// waitFor): for operations that would otherwise wait out their timeouts.
func refusedNow(t *testing.T, rec *recorder, subject string) context.Context {
	return untilRefused(t, rec, permissions.Rule{Subject: subject})
}

// settle waits until the client's watch has seen a write made after
// everything before it: the admin registers a sentinel instance of service
// and the client's Instancer of service must show it. A refused write that
// had been stored would have reached the client before it.
func (w *world) settle(t *testing.T, service string, in *natskv.Instancer) {
	t.Helper()
	ctx := ctxT(t)
	r, err := natskv.NewRegistrar(w.ab, natskv.Instance{ServiceName: service, InstanceID: "sentinel", Version: "1.0.0"}, nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sentinel reaches the client", func() bool { return slices.Contains(ids(in.Instances()), "sentinel") })
	if err := r.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// TestServiceWritesItsOwnKeyOnly: a service instance that tries to register
// as another instance of its service, or as an instance of another
// service, is refused by the server; the registry never holds the fake
// record and the client never sees it. A record naming another service
// written under its own key is skipped by the client. It may subscribe
// only to its own subjects.
func TestServiceWritesItsOwnKeyOnly(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	g1 := tpl
	g1.Methods = []string{"hello", "echo"}
	users := map[string]*permissions.Permissions{
		"greeter-1": must(t)(g1.Service("greeter", "greeter-1")),
		"greeter-2": must(t)(tpl.Service("greeter", "greeter-2")),
		"client":    must(t)(tpl.Client("greeter", "billing")),
	}
	w := newWorld(t, users)
	g1i := w.startInstance("greeter-1", "greeter", "greeter-1")
	cnc, _ := w.conn("client")
	cb, err := bind(ctxT(t), cnc)
	if err != nil {
		t.Fatal(err)
	}
	var seenG, seenB changes
	greeter, err := natskv.NewInstancerContext(ctxT(t), cb, "greeter", nil, liveness, natskv.WithChangeFunc(seenG.add))
	if err != nil {
		t.Fatal(err)
	}
	defer greeter.Stop()
	billing, err := natskv.NewInstancerContext(ctxT(t), cb, "billing", nil, liveness, natskv.WithChangeFunc(seenB.add))
	if err != nil {
		t.Fatal(err)
	}
	defer billing.Stop()

	fakes := []natskv.Instance{
		{ServiceName: "greeter", InstanceID: "greeter-2", Version: "6.6.6"}, // another instance of its service
		{ServiceName: "billing", InstanceID: "billing-1", Version: "6.6.6"}, // an instance of another service
	}
	for _, fake := range fakes {
		key, _ := natskv.LayoutDotted.Key(fake.ServiceName, fake.InstanceID)
		r, err := natskv.NewRegistrar(g1i.b, fake, nil, liveness)
		if err != nil {
			t.Fatal(err)
		}
		err = r.RegisterContext(refusedNow(t, g1i.rec, keyPrefix+key))
		r.Close()
		if err == nil {
			t.Fatalf("%s: registered as %s/%s", "greeter-1", fake.ServiceName, fake.InstanceID)
		}
		if !g1i.rec.waitRefused(permissions.Rule{Subject: keyPrefix + key}) {
			t.Fatalf("write of %s not refused by the server: %v", key, err)
		}
		// A KV put, a delete, a purge of the other key: refused too.
		kv := g1i.b.KeyValue()
		for name, op := range map[string]func(context.Context) error{
			"put":    func(ctx context.Context) error { _, err := kv.Put(ctx, key, []byte("{}")); return err },
			"delete": func(ctx context.Context) error { return kv.Delete(ctx, key) },
			"purge":  func(ctx context.Context) error { return kv.Purge(ctx, key) },
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := op(ctx); err == nil {
				t.Errorf("%s of %s allowed", name, key)
			}
			cancel()
		}
	}

	// Its own key, with a record naming another service: stored, and
	// skipped by every client.
	bad, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "billing", InstanceID: "billing-9", Version: "6.6.6",
		Status: natskv.StatusActive, LastHeartbeat: time.Now(), Metadata: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g1i.b.KeyValue().Put(ctxT(t), g1i.reg.Key(), bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client skips the record", func() bool { return seenG.hasKey(natskv.ChangeSkipped, g1i.reg.Key()) })

	w.settle(t, "greeter", greeter)
	w.settle(t, "billing", billing)
	for _, k := range w.keys() {
		if k == "service-instances.greeter.greeter-2" || k == "service-instances.billing.billing-1" {
			t.Errorf("the registry holds %s", k)
		}
	}
	for _, fake := range fakes {
		s := &seenG
		if fake.ServiceName == "billing" {
			s = &seenB
		}
		if s.has(natskv.ChangeAdded, fake.InstanceID) || s.has(natskv.ChangeUpdated, fake.InstanceID) {
			t.Errorf("the client saw %s/%s", fake.ServiceName, fake.InstanceID)
		}
	}
	if s := seenB.has(natskv.ChangeAdded, "billing-9"); s {
		t.Error("the client offered billing-9")
	}

	// Subscriptions beyond its own are refused.
	for _, sub := range []struct{ subject, queue string }{
		{"rpc.greeter.hello.greeter-2", ""},   // another instance's subject
		{"rpc.greeter.hello", ""},             // the service-wide subject outside the queue group
		{"rpc.greeter.hello", "elsewhere"},    // ... or in another group
		{"rpc.billing.charge", "rpc.billing"}, // another service
		{"rpc.greeter.>", "rpc.greeter"},      // a wildcard over the other instances (methods named)
		{keyPrefix + ">", ""},                 // the registry's writes
		{"$SRV.PING.billing", ""},             // another service's discovery
	} {
		if !subscribeRefused(t, g1i.nc, sub.subject, sub.queue) {
			t.Errorf("greeter-1 may subscribe to %q in queue %q", sub.subject, sub.queue)
		}
	}
	if subscribeRefused(t, g1i.nc, "rpc.greeter.hello.greeter-1", "") || subscribeRefused(t, g1i.nc, "rpc.greeter.hello", "rpc.greeter") {
		t.Error("greeter-1 may not subscribe to its own subjects")
	}

	// Without named methods the queue wildcard is allowed: the limit the
	// package documentation states.
	g2nc, _ := w.conn("greeter-2")
	if subscribeRefused(t, g2nc, "rpc.greeter.>", "rpc.greeter") {
		t.Error("the documented limit no longer holds: update the package documentation")
	}
}

// subscribeRefused subscribes and reports whether the server refused it:
// it reports a refusal before it answers the flush's ping.
func subscribeRefused(t *testing.T, nc *nats.Conn, subject, queue string) bool {
	t.Helper()
	p := natserr.NewProbe(nc)
	var s *nats.Subscription
	var err error
	if queue != "" {
		s, err = nc.QueueSubscribe(subject, queue, func(*nats.Msg) {})
	} else {
		s, err = nc.Subscribe(subject, func(*nats.Msg) {})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pe := p.Check(subject)
	return pe != nil && pe.Op == natserr.OpSubscribe && pe.Queue == queue
}

// TestClientCannotWriteRegistry: nothing a client may publish writes a
// registry key — not KV writes, not JetStream publishes, not the stream
// APIs, not a consumer delivering into the bucket — and it may call only
// the services it was given.
func TestClientCannotWriteRegistry(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	w := newWorld(t, map[string]*permissions.Permissions{
		"client": must(t)(tpl.Client("greeter")),
		"ops":    must(t)(tpl.Operator("greeter")),
	})
	ctx := ctxT(t)
	w.startInstance("admin", "greeter", "greeter-1")
	w.startInstance("admin", "billing", "billing-1")
	before := w.keys()
	const key = "service-instances.greeter.fake"
	for _, user := range []string{"client", "ops"} {
		nc, rec := w.conn(user)
		b, err := bind(ctx, nc)
		if err != nil {
			t.Fatal(err)
		}
		js := b.JetStream()
		kv := b.KeyValue()
		type op struct {
			name    string
			subject string // refused by the server, when it is a refusal
			do      func(context.Context) error
		}
		rec2 := func(fake natskv.Instance) func(context.Context) error {
			return func(ctx context.Context) error {
				r, err := natskv.NewRegistrar(b, fake, nil, liveness)
				if err != nil {
					return err
				}
				defer r.Close()
				return r.RegisterContext(ctx)
			}
		}
		ops := []op{
			{"registrar", keyPrefix + key, rec2(natskv.Instance{ServiceName: "greeter", InstanceID: "fake", Version: "1.0.0"})},
			{"kv put", keyPrefix + key, func(ctx context.Context) error { _, err := kv.Put(ctx, key, []byte("{}")); return err }},
			{"kv create", keyPrefix + key, func(ctx context.Context) error { _, err := kv.Create(ctx, key, []byte("{}")); return err }},
			{"kv delete", keyPrefix + "service-instances.greeter.greeter-1", func(ctx context.Context) error {
				return kv.Delete(ctx, "service-instances.greeter.greeter-1")
			}},
			{"kv purge", keyPrefix + "service-instances.greeter.greeter-1", func(ctx context.Context) error {
				return kv.Purge(ctx, "service-instances.greeter.greeter-1")
			}},
			{"jetstream publish", keyPrefix + key, func(ctx context.Context) error { _, err := js.Publish(ctx, keyPrefix+key, []byte("{}")); return err }},
			{"core publish", keyPrefix + key, func(ctx context.Context) error {
				if err := nc.Publish(keyPrefix+key, []byte("{}")); err != nil {
					return err
				}
				if err := nc.FlushWithContext(ctx); err != nil {
					return err
				}
				<-ctx.Done()
				return ctx.Err()
			}},
			{"stream purge", "$JS.API.STREAM.PURGE.KV_" + bucketName, func(ctx context.Context) error {
				s, err := js.Stream(ctx, "KV_"+bucketName)
				if err != nil {
					return err
				}
				return s.Purge(ctx)
			}},
			{"message delete", "$JS.API.STREAM.MSG.DELETE.KV_" + bucketName, func(ctx context.Context) error {
				s, err := js.Stream(ctx, "KV_"+bucketName)
				if err != nil {
					return err
				}
				return s.DeleteMsg(ctx, 1)
			}},
			{"stream update", "$JS.API.STREAM.UPDATE.KV_" + bucketName, func(ctx context.Context) error {
				_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "KV_" + bucketName, Subjects: []string{keyPrefix + ">"}})
				return err
			}},
			{"stream delete", "$JS.API.STREAM.DELETE.KV_" + bucketName, func(ctx context.Context) error {
				return js.DeleteStream(ctx, "KV_"+bucketName)
			}},
			{"bucket create", "$JS.API.STREAM.CREATE.KV_other", func(ctx context.Context) error {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KV_other", Subjects: []string{"$KV.other.>"}})
				return err
			}},
			{"call billing", "rpc.billing.hello.billing-1", func(ctx context.Context) error {
				c, err := natsrpc.NewInstanceClient(nc, "billing", "hello", "billing-1", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
				if err != nil {
					return err
				}
				_, err = c.Endpoint()(ctx, "x")
				return err
			}},
			// The server refuses a consumer that delivers into its own
			// stream: an API error, not a permission.
			{"push consumer into the bucket", "", func(ctx context.Context) error {
				_, err := js.CreateConsumer(ctx, "KV_"+bucketName, jetstream.ConsumerConfig{DeliverSubject: keyPrefix + key, AckPolicy: jetstream.AckNonePolicy})
				return err
			}},
		}
		for _, o := range ops {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			if o.subject != "" {
				ctx = refusedNow(t, rec, o.subject)
			}
			err := o.do(ctx)
			cancel()
			if err == nil {
				t.Errorf("%s: %s allowed", user, o.name)
				continue
			}
			if o.subject != "" && !rec.waitRefused(permissions.Rule{Subject: o.subject}) {
				t.Errorf("%s: %s failed but not refused by the server: %v", user, o.name, err)
			}
			if o.subject == "" {
				const deliverCycle = 10081 // nats-server's JSConsumerDeliverCycleErr
				var api *jetstream.APIError
				if !errors.As(err, &api) || api.ErrorCode != deliverCycle {
					t.Errorf("%s: %s: %v", user, o.name, err)
				}
			}
		}
	}
	if after := w.keys(); !slices.Equal(before, after) {
		t.Errorf("the registry changed: %v → %v", before, after)
	}
}

// TestRepliesCannotWriteRegistry: a caller chooses the subject a service
// replies to. With allow_responses a service replies wherever it is asked —
// its allow lists and even deny lists notwithstanding — so a request whose
// reply subject is a registry key, sent to a method that echoes its input,
// writes a registry record of the caller's choosing. The templates allow
// replies to the callers' inboxes instead, and the server refuses the
// reply. The responders are plain nats.go subscriptions, as any service on
// NATS: natsrpc.Service, besides, answers no reply subject starting with
// '$' (TestServiceDoesNotReplyIntoNATS).
func TestRepliesCannotWriteRegistry(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	svc := must(t)(tpl.Service("greeter", "greeter-1"))
	// greeter-2 as the templates would be with allow_responses in place
	// of the reply prefix, and a deny list besides.
	var lists []string
	for _, r := range must(t)(tpl.Service("greeter", "greeter-2")).Subscribe {
		lists = append(lists, `"`+r.Entry()+`"`)
	}
	responder := `{ user: "greeter-2", password: "` + password + `", permissions: {
		publish: { allow: ["` + keyPrefix + `service-instances.greeter.greeter-2", "$JS.API.STREAM.INFO.KV_` + bucketName + `"], deny: ["` + keyPrefix + `service-instances.billing.>"] }
		subscribe: { allow: [` + joinComma(lists) + `] }
		allow_responses: true } }`
	w := newWorld(t, map[string]*permissions.Permissions{
		"greeter-1": svc,
		"client":    must(t)(tpl.Client("greeter")),
	}, responder)
	echo := func(user, subject string) *recorder {
		nc, rec := w.conn(user)
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	g1 := echo("greeter-1", "rpc.greeter.echo.greeter-1")
	echo("greeter-2", "rpc.greeter.echo.greeter-2")
	cnc, _ := w.conn("client")

	forge := func(id string) []byte {
		rec, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "billing", InstanceID: id, Version: "6.6.6",
			Status: natskv.StatusActive, LastHeartbeat: time.Now(), Metadata: map[string]string{}})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// Through greeter-2 (allow_responses): the forged record is written.
	if err := cnc.PublishRequest("rpc.greeter.echo.greeter-2", keyPrefix+"service-instances.billing.forged-2", forge("forged-2")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "allow_responses lets the reply into the registry", func() bool {
		return slices.Contains(w.keys(), "service-instances.billing.forged-2")
	})
	// Through greeter-1 (the template): refused.
	if err := cnc.PublishRequest("rpc.greeter.echo.greeter-1", keyPrefix+"service-instances.billing.forged-1", forge("forged-1")); err != nil {
		t.Fatal(err)
	}
	if !g1.waitRefused(permissions.Rule{Subject: keyPrefix + "service-instances.billing.forged-1"}) {
		t.Fatal("the server did not refuse greeter-1's reply")
	}
	if slices.Contains(w.keys(), "service-instances.billing.forged-1") {
		t.Error("the template's reply reached the registry")
	}
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}

// TestRollupLimit pins the limit the package documentation states: on a
// bucket with expiry markers (as this world's, where nats-server allows
// roll-ups), a writer of one key may purge the whole bucket with a
// Nats-Rollup: all header, which subject permissions do not see; the live
// registrars write their records back at their next heartbeat. (A bucket
// CreateBucket makes by default refuses it: sd/natskv's
// TestSingleWriterCannotWipeTheRegistry.)
func TestRollupLimit(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	w := newWorld(t, map[string]*permissions.Permissions{
		"greeter-1": must(t)(tpl.Service("greeter", "greeter-1")),
	})
	g1 := w.startInstance("greeter-1", "greeter", "greeter-1")
	w.startInstance("admin", "billing", "billing-1")
	g1.reg.Close() // its heartbeat would write over the roll-up
	m := nats.NewMsg(keyPrefix + g1.reg.Key())
	m.Header.Set("Nats-Rollup", "all")
	if _, err := g1.b.JetStream().PublishMsg(ctxT(t), m); err != nil {
		t.Fatalf("the documented limit no longer holds (update the package documentation): %v", err)
	}
	if keys := w.keys(); slices.Contains(keys, "service-instances.billing.billing-1") {
		t.Fatalf("the documented limit no longer holds (update the package documentation): %v", keys)
	}
	eventually(t, "billing-1's heartbeat writes it back", func() bool {
		return slices.Contains(w.keys(), "service-instances.billing.billing-1")
	})
}

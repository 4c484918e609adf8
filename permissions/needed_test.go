package permissions_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// without is p less its i-th publish rule (or, past them, subscribe rule).
func without(p *permissions.Permissions, i int) (*permissions.Permissions, permissions.Rule) {
	q := &permissions.Permissions{Role: p.Role}
	var dropped permissions.Rule
	for j, r := range p.Publish {
		if j == i {
			dropped = r
			continue
		}
		q.Publish = append(q.Publish, r)
	}
	for j, r := range p.Subscribe {
		if j+len(p.Publish) == i {
			dropped = r
			continue
		}
		q.Subscribe = append(q.Subscribe, r)
	}
	return q, dropped
}

// untilRefused is a context that ends when the recorder shows the server
// refusing what rule allows: the scenario has shown what the test wants.
func untilRefused(t *testing.T, rec *recorder, rule permissions.Rule) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			if rec.refused(rule) {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return ctx
}

// TestEveryServiceEntryIsNeeded: with any one entry of the service template
// removed, the server refuses a step of a service instance's life — bind,
// serve, answer discovery, register, heartbeat, reply, deregister.
func TestEveryServiceEntryIsNeeded(t *testing.T) {
	full, err := permissions.Template{Bucket: bucketName}.Service("greeter", "greeter-x")
	if err != nil {
		t.Fatal(err)
	}
	n := len(full.Publish) + len(full.Subscribe)
	users := map[string]*permissions.Permissions{}
	rules := make([]permissions.Rule, n)
	for i := range n {
		p, err := permissions.Template{Bucket: bucketName}.Service("greeter", fmt.Sprintf("greeter-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		users[fmt.Sprintf("svc-%d", i)], rules[i] = without(p, i)
	}
	w := newWorld(t, users)
	for i, rule := range rules {
		t.Run(rule.Entry(), func(t *testing.T) {
			t.Parallel()
			id := fmt.Sprintf("greeter-%d", i)
			nc, rec := w.conn(fmt.Sprintf("svc-%d", i))
			ctx := untilRefused(t, rec, rule)
			serviceLife(ctx, w, nc, id)
			_ = nc.Flush()
			if !rec.waitRefused(rule) {
				t.Fatalf("without %q (%s) nothing was refused; refused: %s", rule.Entry(), rule.Why, rec)
			}
		})
	}
}

// serviceLife is what one service instance does, stopping at the first
// failure: bind, serve (and so answer $SRV), register, be called, be
// asked for its stats, deregister.
func serviceLife(ctx context.Context, w *world, nc *nats.Conn, id string) {
	b, err := bind(ctx, nc)
	if err != nil {
		return
	}
	svc, err := natsrpc.NewService(ctx, nc, "greeter", id, map[string]*natsrpc.Server{"hello": helloServer(id)})
	if err != nil {
		return
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(sctx)
	}()
	r, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: "greeter", InstanceID: id, Version: "1.0.0"}, nil, liveness)
	if err != nil {
		return
	}
	defer r.Close()
	if err := r.RegisterContext(ctx); err != nil {
		return
	}
	c, err := natsrpc.NewInstanceClient(w.admin, "greeter", "hello", id, natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
	if err != nil {
		return
	}
	if _, err := c.Endpoint()(ctx, "admin"); err != nil {
		return
	}
	_ = r.DeregisterContext(ctx)
}

// TestEveryClientEntryIsNeeded: with any one entry of the client template
// removed, the server refuses a step of a client's work — bind, watch,
// follow another service once the watch runs, call, list a large registry
// by polling, stop.
func TestEveryClientEntryIsNeeded(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	full, err := tpl.Client("greeter")
	if err != nil {
		t.Fatal(err)
	}
	n := len(full.Publish) + len(full.Subscribe)
	users := map[string]*permissions.Permissions{}
	rules := make([]permissions.Rule, n)
	for i := range n {
		users[fmt.Sprintf("cli-%d", i)], rules[i] = without(full, i)
	}
	w := newWorld(t, users)
	ctx := ctxT(t)
	// An instance to call, and a service whose listing is larger than
	// the flow-control window of nats.go's KV watch.
	in := w.startInstance("admin", "greeter", "greeter-1")
	_ = in
	big := make([]byte, 60_000)
	for i := range 40 {
		if _, err := w.ab.KeyValue().Put(ctx, fmt.Sprintf("service-instances.bulk.b-%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	for i, rule := range rules {
		t.Run(rule.Entry(), func(t *testing.T) {
			t.Parallel()
			nc, rec := w.conn(fmt.Sprintf("cli-%d", i))
			ctx := untilRefused(t, rec, rule)
			clientLife(ctx, nc)
			_ = nc.Flush()
			if !rec.waitRefused(rule) {
				t.Fatalf("without %q (%s) nothing was refused; refused: %s", rule.Entry(), rule.Why, rec)
			}
		})
	}
}

// clientLife is what a client does, stopping at the first failure.
func clientLife(ctx context.Context, nc *nats.Conn) {
	b, err := bind(ctx, nc)
	if err != nil {
		return
	}
	greeter, err := natskv.NewInstancerContext(ctx, b, "greeter", nil, liveness)
	if err != nil {
		return
	}
	defer greeter.Stop()
	// Followed once the watch runs: loaded by a direct get.
	billing, err := natskv.NewInstancerContext(ctx, b, "billing", nil, liveness)
	if err != nil {
		return
	}
	defer billing.Stop()
	c, err := natsrpc.NewInstanceClient(nc, "greeter", "hello", "greeter-1", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
	if err != nil {
		return
	}
	if _, err := c.Endpoint()(ctx, "client"); err != nil {
		return
	}
	polling, err := natskv.NewInstancerContext(ctx, b, "bulk", nil, liveness, natskv.WithPolling(time.Second))
	if err != nil {
		return
	}
	polling.Stop()
}

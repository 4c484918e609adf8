package permissions_test

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// must returns a template's permissions, failing the test on an error.
func must(t testing.TB) func(*permissions.Permissions, error) *permissions.Permissions {
	return func(p *permissions.Permissions, err error) *permissions.Permissions {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// changes records what an Instancer tells WithChangeFunc.
type changes struct {
	mu sync.Mutex
	cs []natskv.Change
}

func (c *changes) add(ch natskv.Change) {
	c.mu.Lock()
	c.cs = append(c.cs, ch)
	c.mu.Unlock()
}

func (c *changes) has(kind natskv.ChangeKind, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.cs, func(ch natskv.Change) bool { return ch.Kind == kind && ch.Instance.InstanceID == id })
}

func (c *changes) hasKey(kind natskv.ChangeKind, key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.cs, func(ch natskv.Change) bool { return ch.Kind == kind && ch.Key == key })
}

// TestChain runs the whole chain with users holding exactly the templates'
// permissions: two instances of greeter (one with its methods named and an
// inbox of its own, one with the defaults), a client with an inbox of its
// own, billing — a service that calls greeter (Merge of a Service and a
// Client) — and an operator. They register, heartbeat with a per-key TTL,
// watch (and poll), call through discovery and the balancer and through
// the queue group, answer $SRV discovery, drain, deregister and crash; the
// server refuses none of it.
func TestChain(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	g1 := tpl
	g1.Methods, g1.InboxPrefix = []string{"hello", "echo"}, "_INBOX.greeter-1"
	cl := tpl
	cl.InboxPrefix = "_INBOX.client"
	users := map[string]*permissions.Permissions{
		"greeter-1": must(t)(g1.Service("greeter", "greeter-1")),
		"greeter-2": must(t)(tpl.Service("greeter", "greeter-2")),
		"client":    must(t)(cl.Client("greeter", "billing")),
		"billing-1": permissions.Merge(must(t)(tpl.Service("billing", "billing-1")), must(t)(tpl.Client("greeter"))),
		"operator":  must(t)(tpl.Operator()),
	}
	w := newWorld(t, users)
	ctx := ctxT(t)

	g1i := w.startInstance("greeter-1", "greeter", "greeter-1", nats.CustomInboxPrefix("_INBOX.greeter-1"))
	g2i := w.startInstance("greeter-2", "greeter", "greeter-2")

	// The client: watch greeter, balance over what it finds, call.
	cnc, crec := w.conn("client", nats.CustomInboxPrefix("_INBOX.client"))
	cb, err := bind(ctx, cnc)
	if err != nil {
		t.Fatal(err)
	}
	var seen changes
	instancer, err := natskv.NewInstancerContext(ctx, cb, "greeter", nil, liveness, natskv.WithChangeFunc(seen.add))
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	if got := ids(instancer.Instances()); !slices.Equal(got, []string{"greeter-1", "greeter-2"}) {
		t.Fatalf("client sees %v", got)
	}
	set := lb.NewEndpointSet(instancer, natsrpc.JSONFactory[string](cnc, "greeter", "hello"), nil)
	defer set.Close()
	rr := lb.New(set, lb.RoundRobin())
	answered := map[string]bool{}
	for range 10 {
		e, err := rr.Endpoint()
		if err != nil {
			t.Fatal(err)
		}
		got, err := natsrpc.Call[string](ctx, e, "gopher")
		if err != nil {
			t.Fatal(err)
		}
		answered[got] = true
	}
	if !answered["hello, gopher from greeter-1"] || !answered["hello, gopher from greeter-2"] {
		t.Fatalf("answers: %v", answered)
	}
	// The queue group, as callers without discovery call.
	sc, err := natsrpc.NewServiceClient(cnc, "greeter", "hello", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsrpc.Call[string](ctx, sc.Endpoint(), "queue"); err != nil {
		t.Fatal(err)
	}

	// Heartbeats carry the per-key TTL, and keep coming.
	ajs, err := jetstream.New(w.admin)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := ajs.Stream(ctx, "KV_"+bucketName)
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, "$KV."+bucketName+".service-instances.greeter.greeter-1")
	if err != nil {
		t.Fatal(err)
	}
	if ttl, ok := registry.MsgTTL(last.Header); !ok || ttl != g1i.reg.TTL() || ttl == 0 {
		t.Fatalf("record TTL %v %v, registrar's %v", ttl, ok, g1i.reg.TTL())
	}
	eventually(t, "a heartbeat", func() bool {
		m, err := stream.GetLastMsgForSubject(ctx, "$KV."+bucketName+".service-instances.greeter.greeter-1")
		return err == nil && m.Sequence > last.Sequence
	})

	// billing joins and calls greeter with its own watch; the client
	// starts following billing once its watch runs (a direct get).
	bi := w.startInstance("billing-1", "billing", "billing-1")
	bInst, err := natskv.NewInstancerContext(ctx, bi.b, "greeter", nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	defer bInst.Stop()
	bset := lb.NewEndpointSet(bInst, natsrpc.JSONFactory[string](bi.nc, "greeter", "hello"), nil)
	defer bset.Close()
	e, err := lb.New(bset, lb.RoundRobin()).Endpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsrpc.Call[string](ctx, e, "billing"); err != nil {
		t.Fatal(err)
	}
	billing, err := natskv.NewInstancerContext(ctx, cb, "billing", nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	defer billing.Stop()
	if got := ids(billing.Instances()); !slices.Equal(got, []string{"billing-1"}) {
		t.Fatalf("client sees billing %v", got)
	}
	// Polling, the AegisSDK's cached discovery.
	polling, err := natskv.NewInstancerContext(ctx, cb, "greeter", nil, liveness, natskv.WithPolling(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(polling.Instances()); !slices.Equal(got, []string{"greeter-1", "greeter-2"}) {
		t.Fatalf("polling sees %v", got)
	}
	polling.Stop()

	// $SRV discovery, as `nats micro` asks it, from the operator.
	onc, orec := w.conn("operator")
	var ping struct {
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	}
	for _, subj := range []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.PING.greeter", "$SRV.INFO.greeter", "$SRV.STATS.greeter"} {
		m, err := onc.RequestWithContext(ctx, subj, nil)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if subj == "$SRV.PING.greeter" {
			if err := json.Unmarshal(m.Data, &ping); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		if _, err := onc.RequestWithContext(ctx, "$SRV."+verb+".greeter."+ping.ID, nil); err != nil {
			t.Fatalf("%s of %s (%s): %v", verb, ping.ID, ping.Metadata[wire.MetadataInstance], err)
		}
	}

	// greeter-2 drains: unhealthy first, finish in flight, deregister.
	if err := g2i.reg.SetStatus(ctx, natskv.StatusUnhealthy); err != nil {
		t.Fatal(err)
	}
	eventually(t, "greeter-2 leaves the client's set", func() bool {
		return slices.Equal(ids(instancer.Instances()), []string{"greeter-1"})
	})
	if err := g2i.svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g2i.reg.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "greeter-2 deregistered", func() bool { return seen.has(natskv.ChangeDeleted, "greeter-2") })

	// greeter-1 crashes: its record expires on the server.
	g1i.reg.Close()
	g1i.nc.Close()
	eventually(t, "greeter-1 expired", func() bool { return seen.has(natskv.ChangeExpired, "greeter-1") })
	ch := make(chan sd.Event, 1)
	instancer.Register(ch)
	if ev := <-ch; len(ev.Instances) != 0 || ev.Err != nil {
		t.Fatalf("after the crash: %+v", ev)
	}
	instancer.Deregister(ch)

	for who, r := range map[string]*recorder{"greeter-1": g1i.rec, "greeter-2": g2i.rec, "client": crec, "billing-1": bi.rec, "operator": orec} {
		if s := r.String(); s != "" {
			t.Errorf("%s was refused:\n%s", who, s)
		}
	}
}

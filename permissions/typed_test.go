package permissions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// logs is a go-kit logger keeping its lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Log(kv ...any) error {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprint(kv...))
	l.mu.Unlock()
	return nil
}

func (l *logs) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// dropRule is p less the rules whose entry starts with prefix.
func dropRule(p *permissions.Permissions, prefix string) *permissions.Permissions {
	q := &permissions.Permissions{Role: p.Role}
	for _, r := range p.Publish {
		if !strings.HasPrefix(r.Entry(), prefix) {
			q.Publish = append(q.Publish, r)
		}
	}
	for _, r := range p.Subscribe {
		if !strings.HasPrefix(r.Entry(), prefix) {
			q.Subscribe = append(q.Subscribe, r)
		}
	}
	return q
}

// refusal checks that err is a *PermissionError for op on a subject that
// pattern matches, returned before ctx (a long one) ended: found when the
// server refused, not at the operation's timeout.
func refusal(t *testing.T, ctx context.Context, what string, err error, op, pattern string) *permissions.PermissionError {
	t.Helper()
	var pe *permissions.PermissionError
	switch {
	case !errors.As(err, &pe):
		t.Fatalf("%s: want a *PermissionError, got %v", what, err)
	case !errors.Is(err, permissions.ErrPermission) || !errors.Is(err, nats.ErrPermissionViolation):
		t.Fatalf("%s: %v does not match ErrPermission and nats.ErrPermissionViolation", what, err)
	case pe.Op != op || !natserr.Match(pattern, pe.Subject):
		t.Fatalf("%s: refused %s %q, want %s %q", what, pe.Op, pe.Subject, op, pattern)
	case ctx.Err() != nil:
		t.Fatalf("%s: the refusal came at the operation's timeout", what)
	}
	t.Logf("%s: %v", what, err)
	return pe
}

// TestTypedErrors: each piece of kitnats refused for lack of one permission
// says which, as a *PermissionError matching ErrPermission — when it is
// built (BindBucket, NewService, NewInstancer), on the first Register, on a
// call — and logs it where it keeps trying (a heartbeat).
func TestTypedErrors(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	svc := must(t)(tpl.Service("greeter", "greeter-1"))
	cli := must(t)(tpl.Client("greeter"))
	other := tpl
	other.InboxPrefix = "_INBOX.other"
	w := newWorld(t, map[string]*permissions.Permissions{
		"greeter-1":  svc,
		"no-info":    dropRule(svc, "$JS.API.STREAM.INFO"),
		"no-create":  dropRule(cli, "$JS.API.CONSUMER.CREATE"),
		"no-next":    dropRule(cli, "$JS.API.CONSUMER.MSG.NEXT"),
		"no-fc":      dropRule(cli, "$JS.FC"),
		"wrong-inbx": must(t)(other.Client("greeter")), // connects with nats.go's default inbox
		"client":     cli,
	})
	w.startInstance("admin", "billing", "billing-1")
	long := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("BindBucket", func(t *testing.T) {
		nc, _ := w.conn("no-info")
		ctx := long()
		_, err := bind(ctx, nc)
		refusal(t, ctx, "bind", err, natserr.OpPublish, "$JS.API.STREAM.INFO.KV_"+bucketName)
	})

	t.Run("BindBucket without its inbox", func(t *testing.T) {
		nc, _ := w.conn("wrong-inbx")
		ctx := long()
		_, err := bind(ctx, nc)
		refusal(t, ctx, "bind", err, natserr.OpSubscribe, "_INBOX.>")
	})

	t.Run("Registrar", func(t *testing.T) {
		nc, _ := w.conn("greeter-1")
		b, err := bind(ctxT(t), nc)
		if err != nil {
			t.Fatal(err)
		}
		var log logs
		r, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-2", Version: "1.0.0"}, &log, liveness)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx := long()
		err = r.RegisterContext(ctx)
		refusal(t, ctx, "register", err, natserr.OpPublish, keyPrefix+"service-instances.greeter.greeter-2")
		// The heartbeat keeps trying, and says why it fails.
		eventually(t, "the heartbeat logs the refusal", func() bool { return log.has("permission denied") })
		// sd.Registrar's Register logs it.
		r2, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: "billing", InstanceID: "billing-2", Version: "1.0.0"}, &log, liveness)
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		r2.Register()
		if !log.has(`may not publish to "` + keyPrefix + `service-instances.billing.billing-2"`) {
			t.Errorf("Register logged %q", log.lines)
		}
		ctx = long()
		refusal(t, ctx, "deregister", r2.DeregisterContext(ctx), natserr.OpPublish, keyPrefix+"service-instances.billing.billing-2")
	})

	t.Run("NewService", func(t *testing.T) {
		nc, _ := w.conn("greeter-1")
		for _, c := range []struct{ service, instance, subject string }{
			{"billing", "greeter-1", "rpc.billing.>"},   // another service
			{"greeter", "greeter-2", "rpc.greeter.*.*"}, // another instance
		} {
			ctx := long()
			_, err := natsrpc.NewService(ctx, nc, c.service, c.instance, map[string]*natsrpc.Server{"hello": helloServer(c.instance)})
			refusal(t, ctx, "serve "+c.service+"/"+c.instance, err, natserr.OpSubscribe, c.subject)
		}
	})

	for _, c := range []struct{ user, op, subject string }{
		{"no-create", natserr.OpPublish, "$JS.API.CONSUMER.CREATE.KV_" + bucketName + ".*"},
		{"no-next", natserr.OpPublish, "$JS.API.CONSUMER.MSG.NEXT.KV_" + bucketName + ".*"},
	} {
		t.Run("Instancer "+c.user, func(t *testing.T) {
			nc, _ := w.conn(c.user)
			b, err := bind(ctxT(t), nc)
			if err != nil {
				t.Fatal(err)
			}
			var log logs
			// NewInstancer does not return an empty set as if the
			// registry were empty.
			in, err := natskv.NewInstancer(b, "billing", &log, liveness, natskv.WithReadyWait(time.Minute))
			if in != nil {
				in.Stop()
			}
			ctx := long()
			refusal(t, ctx, "NewInstancer", err, c.op, c.subject)
			if !log.has("permission denied") {
				t.Errorf("the watch did not log the refusal: %q", log.lines)
			}
			in, err = natskv.NewInstancerContext(ctx, b, "billing", nil, liveness)
			if in != nil {
				in.Stop()
			}
			refusal(t, ctx, "NewInstancerContext", err, c.op, c.subject)
		})
	}

	t.Run("Instancer polling", func(t *testing.T) {
		nc, _ := w.conn("no-fc")
		b, err := bind(ctxT(t), nc)
		if err != nil {
			t.Fatal(err)
		}
		big := make([]byte, 60_000)
		for i := range 40 {
			if _, err := w.ab.KeyValue().Put(ctxT(t), fmt.Sprintf("service-instances.bulk.b-%d", i), big); err != nil {
				t.Fatal(err)
			}
		}
		ctx := long()
		in, err := natskv.NewInstancerContext(ctx, b, "bulk", nil, liveness, natskv.WithPolling(time.Minute))
		if in != nil {
			in.Stop()
		}
		refusal(t, ctx, "polling", err, natserr.OpPublish, "$JS.FC.KV_"+bucketName+".>")
	})

	t.Run("call", func(t *testing.T) {
		nc, _ := w.conn("client")
		ctx := long()
		c, err := natsrpc.NewInstanceClient(nc, "billing", "hello", "billing-1", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Endpoint()(ctx, "x")
		refusal(t, ctx, "call", err, natserr.OpPublish, "rpc.billing.hello.billing-1")
		var ce *natsrpc.CallError
		if !errors.As(err, &ce) || ce.Retryable() {
			t.Errorf("want a CallError that is not retryable: %#v", err)
		}
		// Calls at once, while the first is watching: each says why.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, errs[i] = c.Endpoint()(cctx, "x")
			})
		}
		wg.Wait()
		for _, err := range errs {
			if !errors.Is(err, permissions.ErrPermission) {
				t.Errorf("concurrent call: %v", err)
			}
		}
	})
}

// TestServiceDoesNotReplyIntoNATS: a request whose reply subject is the
// service's own registry key — which its connection may write — is not
// served: the record is not overwritten with a caller's forgery.
func TestServiceDoesNotReplyIntoNATS(t *testing.T) {
	tpl := permissions.Template{Bucket: bucketName}
	w := newWorld(t, map[string]*permissions.Permissions{
		"greeter-1": must(t)(tpl.Service("greeter", "greeter-1")),
		"client":    must(t)(tpl.Client("greeter")),
	})
	g1 := w.startInstance("greeter-1", "greeter", "greeter-1")
	var seen changes
	watch, err := natskv.NewInstancerContext(ctxT(t), w.ab, "greeter", nil, liveness, natskv.WithChangeFunc(seen.add))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	forged, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-1", Version: "6.6.6",
		Status: natskv.StatusActive, LastHeartbeat: time.Now(), Metadata: map[string]string{"addr": "attacker"}})
	if err != nil {
		t.Fatal(err)
	}
	cnc, _ := w.conn("client")
	for _, subj := range []string{"rpc.greeter.echo.greeter-1", "rpc.greeter.echo", "$SRV.PING.greeter"} {
		if err := cnc.PublishRequest(subj, keyPrefix+g1.reg.Key(), forged); err != nil {
			t.Fatal(err)
		}
	}
	rejected := func() uint64 {
		// As `nats micro stats greeter` reads them.
		m, err := w.admin.Request("$SRV.STATS.greeter", nil, 2*time.Second)
		if err != nil {
			t.Logf("$SRV.STATS: %v", err)
			return 0
		}
		var stats micro.Stats
		if err := json.Unmarshal(m.Data, &stats); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, e := range stats.Endpoints {
			var st struct {
				Rejected uint64 `json:"rejected"`
			}
			_ = json.Unmarshal(e.Data, &st)
			n += st.Rejected
		}
		return n
	}
	eventually(t, "both requests refused", func() bool { return rejected() == 2 })
	w.settle(t, "greeter", watch)
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, c := range seen.cs {
		if c.Instance.Version == "6.6.6" || c.Kind == natskv.ChangeSkipped {
			t.Errorf("the forgery reached the registry: %+v", c)
		}
	}
}

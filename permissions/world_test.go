package permissions_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	bucketName = "reg"
	password   = "pw"
	waitFor    = 20 * time.Second // generous: the machine is shared
)

// liveness: short heartbeats and leases, so the tests see several writes
// and an expiry.
var liveness = natskv.Options(natskv.WithHeartbeat(200*time.Millisecond), natskv.WithTTL(time.Second))

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// world is an embedded server whose account APP holds an admin (no
// permission limits: it provisions the bucket and checks what the registry
// holds) and one user per entry of users, holding exactly those
// permissions.
type world struct {
	t     testing.TB
	srv   *natstest.Server
	admin *nats.Conn
	ab    *natskv.Bucket // the bucket, as the admin sees it
}

// userConf is one user of the configuration: a password, and the
// permissions as Permissions.Config renders them (nil: none).
func userConf(name string, p *permissions.Permissions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{ user: %q, password: %q\n", name, password)
	if p != nil {
		b.WriteString(p.Config())
	}
	b.WriteString("}\n")
	return b.String()
}

func confOf(users map[string]*permissions.Permissions, extra ...string) string {
	var b strings.Builder
	b.WriteString("accounts: { APP: { jetstream: enabled, users: [\n")
	b.WriteString(userConf("admin", nil))
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b.WriteString(userConf(n, users[n]))
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	b.WriteString("] } }\n")
	return b.String()
}

func newWorld(t testing.TB, users map[string]*permissions.Permissions, extra ...string) *world {
	t.Helper()
	w := &world{t: t, srv: natstest.StartConfig(t, confOf(users, extra...))}
	w.admin = natstest.Connect(t, w.srv.URL(), nats.UserInfo("admin", password))
	js, err := jetstream.New(w.admin)
	if err != nil {
		t.Fatal(err)
	}
	if w.ab, err = natskv.CreateBucket(ctxT(t), js, natskv.BucketConfig{Name: bucketName, LimitMarkerTTL: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return w
}

// recorder keeps the permission violations the server reports on one
// connection.
type recorder struct {
	mu  sync.Mutex
	got []*permissions.PermissionError
}

func (r *recorder) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if pe := natserr.Parse(err); pe != nil {
		r.mu.Lock()
		r.got = append(r.got, pe)
		r.mu.Unlock()
	}
}

func (r *recorder) all() []*permissions.PermissionError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// refused reports whether the server refused something the rule allows.
func (r *recorder) refused(rule permissions.Rule) bool {
	for _, pe := range r.all() {
		if natserr.Match(rule.Subject, pe.Subject) && (rule.Queue == "" || rule.Queue == pe.Queue) {
			return true
		}
	}
	return false
}

// waitRefused is refused, waiting for the connection's async error handler
// (which runs on a goroutine of nats.go's) for up to waitFor.
func (r *recorder) waitRefused(rule permissions.Rule) bool {
	deadline := time.Now().Add(waitFor)
	for !r.refused(rule) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (r *recorder) String() string {
	var s []string
	for _, pe := range r.all() {
		s = append(s, pe.Error())
	}
	return strings.Join(s, "\n")
}

// conn connects as user; its violations go to the recorder returned.
func (w *world) conn(user string, opts ...nats.Option) (*nats.Conn, *recorder) {
	w.t.Helper()
	r := &recorder{}
	nc := natstest.Connect(w.t, w.srv.URL(), append([]nats.Option{nats.UserInfo(user, password), nats.ErrorHandler(r.handler)}, opts...)...)
	return nc, r
}

func bind(ctx context.Context, nc *nats.Conn) (*natskv.Bucket, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return natskv.BindBucket(ctx, js, bucketName)
}

// helloServer answers "hello, NAME from INSTANCE".
func helloServer(instance string) *natsrpc.Server {
	return natsrpc.NewJSONServer(func(_ context.Context, name string) (string, error) {
		return "hello, " + name + " from " + instance, nil
	})
}

// echoServer returns its request: the method a caller would abuse to have
// a service write what it likes where the service may write.
func echoServer() *natsrpc.Server {
	return natsrpc.NewJSONServer(func(_ context.Context, v map[string]any) (map[string]any, error) { return v, nil })
}

// instance is one service instance: its connection, service and registrar.
type instance struct {
	nc  *nats.Conn
	rec *recorder
	b   *natskv.Bucket
	svc *natsrpc.Service
	reg *natskv.Registrar
}

// startInstance runs service/id as user: bind, serve hello (and echo),
// register. Any step's error fails the test.
func (w *world) startInstance(user, service, id string, opts ...nats.Option) *instance {
	w.t.Helper()
	ctx := ctxT(w.t)
	in := &instance{}
	in.nc, in.rec = w.conn(user, opts...)
	var err error
	if in.b, err = bind(ctx, in.nc); err != nil {
		w.t.Fatalf("%s: bind: %v", user, err)
	}
	in.svc, err = natsrpc.NewService(ctx, in.nc, service, id, map[string]*natsrpc.Server{"hello": helloServer(id), "echo": echoServer()})
	if err != nil {
		w.t.Fatalf("%s: service: %v", user, err)
	}
	w.t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = in.svc.Shutdown(sctx)
	})
	in.reg, err = natskv.NewRegistrar(in.b, natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, nil, liveness)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { in.reg.Close() })
	if err := in.reg.RegisterContext(ctx); err != nil {
		w.t.Fatalf("%s: register: %v", user, err)
	}
	return in
}

// keys is what the registry holds, as the admin reads it.
func (w *world) keys() []string {
	w.t.Helper()
	l, err := w.ab.KeyValue().ListKeys(ctxT(w.t))
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ids(in []natskv.Instance) []string {
	out := make([]string, len(in))
	for i, x := range in {
		out[i] = x.InstanceID
	}
	slices.Sort(out)
	return out
}

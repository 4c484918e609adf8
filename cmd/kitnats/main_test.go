package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 30 * time.Second // generous: the machine is shared

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fixture is an embedded server with a registry bucket.
type fixture struct {
	t   testing.TB
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	b   *natskv.Bucket
	env map[string]string // the environment the command sees
}

func newFixture(t testing.TB, cfg natskv.BucketConfig) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	b, err := natskv.CreateBucket(ctxT(t), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, srv: srv, nc: nc, js: js, b: b, env: map[string]string{"HOME": t.TempDir()}}
}

// liveness is what the fixture's registrars use, and the flags that tell
// the command so.
var (
	liveness      = natskv.Options(natskv.WithHeartbeat(250*time.Millisecond), natskv.WithTTL(5*time.Second))
	livenessFlags = []string{"--heartbeat", "250ms", "--ttl", "5s"}
)

func instance(service, id string, status natskv.Status, zone string) natskv.Instance {
	in := natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.2.3", Status: status, Metadata: map[string]string{}}
	if zone != "" {
		in.Metadata["zone"] = zone
	}
	return in
}

// register registers an instance; it is closed (left to expire) at cleanup.
func (f *fixture) register(in natskv.Instance, opts ...natskv.RegistrarOption) *natskv.Registrar {
	f.t.Helper()
	r, err := natskv.NewRegistrar(f.b, in, nil, append([]natskv.RegistrarOption{liveness}, opts...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.RegisterContext(ctxT(f.t)); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { r.Close() })
	return r
}

// serve answers greeter-style calls as instance id of service: the reply
// says who answered and the trace ID the request carried.
func (f *fixture) serve(service, id string) *natsrpc.Service {
	f.t.Helper()
	nc := natstest.Connect(f.t, f.srv.URL())
	hello := natsrpc.NewJSONServer(func(ctx context.Context, name string) (map[string]string, error) {
		if name == "fail" {
			return nil, errors.New("no greeting for fail")
		}
		return map[string]string{"greeting": "hello, " + name, "instance": id,
			"trace": trace.SpanContextFromContext(ctx).TraceID().String()}, nil
	})
	svc, err := natsrpc.NewService(ctxT(f.t), nc, service, id, map[string]*natsrpc.Server{"hello": hello})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { svc.Shutdown(context.Background()) })
	return svc
}

// put writes a raw value under key (no TTL).
func (f *fixture) put(key, value string) {
	f.t.Helper()
	if _, err := f.b.KeyValue().Put(ctxT(f.t), key, []byte(value)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) getenv(k string) string { return f.env[k] }

// run runs the command against the fixture's server.
func (f *fixture) run(args ...string) (stdout, stderr string, code int) {
	f.t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--server", f.srv.URL())
	code = runWith(ctxT(f.t), args, &out, &errb, f.getenv)
	return out.String(), errb.String(), code
}

// syncBuffer is a bytes.Buffer safe for a command writing while a test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitOutput waits until out has a line containing every part.
func waitOutput(t testing.TB, out *syncBuffer, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		for _, line := range strings.Split(out.String(), "\n") {
			if containsAll(line, parts...) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q in:\n%s", parts, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// lineWith returns the first line of s containing every part, or fails.
func lineWith(t testing.TB, s string, parts ...string) string {
	t.Helper()
	for _, line := range strings.Split(s, "\n") {
		if containsAll(line, parts...) {
			return line
		}
	}
	t.Fatalf("no line with %q in:\n%s", parts, s)
	return ""
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

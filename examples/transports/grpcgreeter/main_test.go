package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aegis-sdk/kitnats/examples/transports"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// kitnats reads grpc-go's real status errors without importing grpc-go:
// the library's classifiers agree with the gRPC specification on every
// code, wrapped or not.
func TestGRPCStatusesClassified(t *testing.T) {
	for _, c := range []struct {
		code           codes.Code
		plain, idem    retry.Action
		businessAnswer bool
	}{
		{codes.Unavailable, retry.Retry, retry.Retry, false},
		{codes.ResourceExhausted, retry.Retry, retry.Retry, false},
		{codes.DeadlineExceeded, retry.Stop, retry.RetryAfterBackoff, false},
		{codes.Internal, retry.Stop, retry.Stop, false},
		{codes.Unknown, retry.Stop, retry.Stop, false},
		{codes.InvalidArgument, retry.Stop, retry.Stop, true},
		{codes.NotFound, retry.Stop, retry.Stop, true},
		{codes.PermissionDenied, retry.Stop, retry.Stop, true},
		{codes.FailedPrecondition, retry.Stop, retry.Stop, true},
		{codes.Unimplemented, retry.Stop, retry.Stop, true},
	} {
		for _, err := range []error{status.Error(c.code, "x"), fmt.Errorf("call: %w", status.Error(c.code, "x"))} {
			if got := retry.DefaultClassifier(err, false); got != c.plain {
				t.Errorf("%v: DefaultClassifier(not idempotent) = %v, want %v", err, got, c.plain)
			}
			if got := retry.DefaultClassifier(err, true); got != c.idem {
				t.Errorf("%v: DefaultClassifier(idempotent) = %v, want %v", err, got, c.idem)
			}
			if got := breaker.IsBusinessError(err); got != c.businessAnswer {
				t.Errorf("%v: IsBusinessError = %v, want %v", err, got, c.businessAnswer)
			}
		}
	}
}

// The demo: under load, an instance crashes, another drains, both come
// back on their ports; no call fails and the new instances serve.
func TestDemoCrashDrainComeBack(t *testing.T) {
	rep, err := run(ctxT(t), 3*time.Second, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if rep.Failed != 0 {
		t.Fatalf("%d of %d calls failed:\n%s", rep.Failed, rep.Calls, rep)
	}
	for _, id := range []string{"greeter-1", "greeter-1b", "greeter-2b", "greeter-3"} {
		if rep.ByInstance[id] == 0 {
			t.Errorf("%s answered nothing:\n%s", id, rep)
		}
	}
}

// testFleet is a registry and instances whose Greeters a test can break.
type testFleet struct {
	reg      *transports.Registry
	greeters map[string]*Greeter // by address
	addrs    []string
}

func newTestFleet(t *testing.T, n int, tp trace.TracerProvider) *testFleet {
	t.Helper()
	reg, err := transports.StartRegistry(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	f := &testFleet{reg: reg, greeters: map[string]*Greeter{}}
	for i := range n {
		g := NewGreeter(fmt.Sprintf("greeter-%d", i+1), tp)
		srv, err := Listen("127.0.0.1:0", g)
		if err != nil {
			t.Fatal(err)
		}
		in, err := transports.StartInstance(ctxT(t), reg.Bucket, service, g.ID, "grpc", srv, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(in.Stop)
		f.greeters[srv.Addr()] = g
		f.addrs = append(f.addrs, srv.Addr())
	}
	return f
}

func newTestClient(t *testing.T, instancer sd.Instancer, cfg transports.Config) *transports.Client {
	t.Helper()
	cfg.Service, cfg.Method = service, method
	c, err := transports.NewClient(instancer, Factory(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func natsInstancer(t *testing.T, f *testFleet) *natskv.Instancer {
	t.Helper()
	i, err := natskv.NewInstancerContext(ctxT(t), f.reg.Bucket, service, nil, transports.Liveness, natskv.WithAddresses("grpc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(i.Stop)
	return i
}

// The same client code runs over natskv and over sd.FixedInstancer: only
// the instancer changes.
func TestSameClientOverNATSOrFixed(t *testing.T) {
	f := newTestFleet(t, 2, nil)
	for name, instancer := range map[string]sd.Instancer{
		"natskv": natsInstancer(t, f),
		"fixed":  sd.FixedInstancer(f.addrs),
	} {
		t.Run(name, func(t *testing.T) {
			c := newTestClient(t, instancer, transports.Config{})
			seen := map[string]bool{}
			for range 20 {
				resp, err := Hello(ctxT(t), c, "x")
				if err != nil {
					t.Fatal(err)
				}
				seen[resp.Instance] = true
			}
			if len(seen) != 2 {
				t.Fatalf("answered by %v, want both instances", seen)
			}
		})
	}
}

// An instance whose process died while its record stands: gRPC reports
// UNAVAILABLE, and every call, idempotent or not, moves to the live one.
func TestRetryMovesOffRefusingInstance(t *testing.T) {
	f := newTestFleet(t, 1, nil)
	dead, err := Listen("127.0.0.1:0", NewGreeter("dead", nil))
	if err != nil {
		t.Fatal(err)
	}
	dead.Kill()
	in, err := transports.StartInstance(ctxT(t), f.reg.Bucket, service, "dead", "grpc", dead, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Stop)

	var mu sync.Mutex
	var failures []error
	c := newTestClient(t, natsInstancer(t, f), transports.Config{Retry: []retry.Option{
		retry.WithObserver(func(_ context.Context, _ int, instance string, _ time.Duration, err error) {
			if err != nil && instance == dead.Addr() {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
		}),
	}})
	for range 20 {
		resp, err := c.Call(ctxT(t), HelloRequest{Name: "not idempotent"})
		if err != nil {
			t.Fatalf("call failed: %v", err)
		}
		if id := resp.(HelloResponse).Instance; id != "greeter-1" {
			t.Fatalf("answered by %s", id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) == 0 {
		t.Fatal("the refusing instance was never tried")
	}
	if st, _ := status.FromError(failures[0]); st.Code() != codes.Unavailable {
		t.Fatalf("the refusing instance failed with %v, want UNAVAILABLE", failures[0])
	}
}

type breakerLog struct {
	mu     sync.Mutex
	opened []string
}

func (b *breakerLog) hook(instance, _, to string) {
	if to == "open" {
		b.mu.Lock()
		b.opened = append(b.opened, instance)
		b.mu.Unlock()
	}
}

func (b *breakerLog) open() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.opened)
}

// One instance failing with INTERNAL trips its own breaker; then calls no
// longer meet it.
func TestBreakerOpensOnOneFailingInstance(t *testing.T) {
	f := newTestFleet(t, 3, nil)
	bad := f.addrs[0]
	f.greeters[bad].Fail.Store(uint32(codes.Internal))
	var log breakerLog
	// No probe while the test runs, however slow the machine.
	c := newTestClient(t, natsInstancer(t, f), transports.Config{BreakerStateChange: log.hook, BreakerTimeout: time.Minute})
	for range 60 {
		if _, err := Hello(ctxT(t), c, "x"); err != nil && status.Code(err) != codes.Internal {
			t.Fatalf("unexpected error %v", err)
		}
	}
	if got := log.open(); !slices.Equal(got, []string{bad}) {
		t.Fatalf("breakers opened: %v, want only %s", got, bad)
	}
	for range 30 {
		if _, err := Hello(ctxT(t), c, "x"); err != nil {
			t.Fatalf("a call failed with the breaker open: %v", err)
		}
	}
}

// Every instance UNAVAILABLE at once (a dependency they share is down):
// no breaker opens, and calls succeed as soon as it is over.
func TestBreakerHoldsInNetworkWideOutage(t *testing.T) {
	f := newTestFleet(t, 3, nil)
	var log breakerLog
	c := newTestClient(t, natsInstancer(t, f), transports.Config{BreakerStateChange: log.hook})
	if _, err := Hello(ctxT(t), c, "warm up"); err != nil {
		t.Fatal(err)
	}
	for _, g := range f.greeters {
		g.Fail.Store(uint32(codes.Unavailable))
	}
	for range 40 {
		if _, err := Hello(ctxT(t), c, "x"); err == nil {
			t.Fatal("a call succeeded during the outage")
		}
	}
	if got := log.open(); len(got) != 0 {
		t.Fatalf("breakers opened in an outage of every instance: %v", got)
	}
	for _, g := range f.greeters {
		g.Fail.Store(0)
	}
	for range 10 {
		if _, err := Hello(ctxT(t), c, "x"); err != nil {
			t.Fatalf("after the outage: %v", err)
		}
	}
}

// A call is one trace across gRPC: client span, attempt span (with the
// instance's address), and the server span as the attempt's remote child.
func TestTracingAroundGRPCCalls(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newTestFleet(t, 1, tp)
	c := newTestClient(t, natsInstancer(t, f), transports.Config{TracerProvider: tp})
	if _, err := Hello(ctxT(t), c, "traced"); err != nil {
		t.Fatal(err)
	}
	var client, attempt, server sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch {
		case s.SpanKind() == trace.SpanKindServer:
			server = s
		case s.SpanKind() == trace.SpanKindClient && s.Parent().IsValid():
			attempt = s
		case s.SpanKind() == trace.SpanKindClient:
			client = s
		}
	}
	if client == nil || attempt == nil || server == nil {
		t.Fatalf("spans: client %v, attempt %v, server %v (of %d)", client, attempt, server, len(sr.Ended()))
	}
	if attempt.Parent().SpanID() != client.SpanContext().SpanID() {
		t.Errorf("the attempt's parent is not the client span")
	}
	if server.Parent().SpanID() != attempt.SpanContext().SpanID() || !server.Parent().IsRemote() {
		t.Errorf("the server span's parent %v is not the attempt %v, remote", server.Parent(), attempt.SpanContext())
	}
	var instance string
	for _, kv := range attempt.Attributes() {
		if kv.Key == "kitnats.instance" {
			instance = kv.Value.AsString()
		}
	}
	if instance != f.addrs[0] {
		t.Errorf("attempt span's kitnats.instance = %q, want %q", instance, f.addrs[0])
	}
}

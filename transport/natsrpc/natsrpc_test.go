package natsrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

// wait bounds every wait for an outcome; generous, since the machine is
// shared. No test asserts a duration.
const wait = 15 * time.Second

type echoReq struct {
	Msg   string `json:"msg"`
	Block bool   `json:"block,omitempty"` // wait until the test releases it (or ctx ends)
}

type echoResp struct {
	Msg      string `json:"msg"`
	Instance string `json:"instance"`
}

// env is one NATS server with a server-side and a client-side connection.
type env struct {
	srv *natstest.Server
	snc *nats.Conn
	cnc *nats.Conn
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := natstest.Start(t)
	return &env{srv: s, snc: natstest.Connect(t, s.URL()), cnc: natstest.Connect(t, s.URL())}
}

// gate holds requests with Block: each reports on entered (if not nil),
// then waits for release to close.
type gate struct {
	release chan struct{}
	entered chan struct{}
}

func newGate(n int) *gate {
	return &gate{release: make(chan struct{}), entered: make(chan struct{}, n)}
}

// echoService runs an "echo" service instance whose "say" method answers
// with its instance ID; requests with Block wait at g.
func (e *env) echoService(t *testing.T, instance string, g *gate, opts ...natsrpc.ServiceOption) *natsrpc.Service {
	t.Helper()
	var release <-chan struct{}
	var entered chan<- struct{}
	if g != nil {
		release, entered = g.release, g.entered
	}
	say := natsrpc.NewJSONServer(func(ctx context.Context, r echoReq) (echoResp, error) {
		if r.Block {
			if entered != nil {
				entered <- struct{}{}
			}
			select {
			case <-release:
			case <-ctx.Done():
				return echoResp{}, ctx.Err()
			}
		}
		return echoResp{Msg: r.Msg, Instance: instance}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", instance, map[string]*natsrpc.Server{"say": say}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, svc) })
	return svc
}

func shutdown(t *testing.T, svc *natsrpc.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func sayClient(t *testing.T, nc *nats.Conn, instance string, opts ...natsrpc.ClientOption) endpoint.Endpoint {
	t.Helper()
	var c *natsrpc.Client
	var err error
	if instance == "" {
		c, err = natsrpc.NewServiceClient(nc, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp], opts...)
	} else {
		c, err = natsrpc.NewInstanceClient(nc, "echo", "say", instance, natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp], opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.Endpoint()
}

// statSum adds up one EndpointStats counter over the service's endpoints, as
// `nats micro stats` reports them.
func statSum(t *testing.T, svc *natsrpc.Service, key string) uint64 {
	t.Helper()
	var sum uint64
	for _, ep := range natsrpc.StatsOf(svc).Endpoints {
		var data map[string]uint64
		if err := json.Unmarshal(ep.Data, &data); err != nil {
			t.Fatalf("stats data %s: %v", ep.Data, err)
		}
		sum += data[key]
	}
	return sum
}

func TestServiceAndInstanceSubjects(t *testing.T) {
	e := newEnv(t)
	e.echoService(t, "a", nil)
	e.echoService(t, "b", nil)
	ctx := ctxWait(t)

	for _, inst := range []string{"a", "b"} {
		for range 5 {
			have, err := natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, inst), echoReq{Msg: "hi"})
			if err != nil {
				t.Fatal(err)
			}
			if want := (echoResp{Msg: "hi", Instance: inst}); have != want {
				t.Fatalf("instance subject %s: want %+v, have %+v", inst, want, have)
			}
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		have, err := natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, ""), echoReq{Msg: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		seen[have.Instance] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("service-wide subject: want both instances to answer, have %v", seen)
	}
}

// An instance with the longest ID the registry accepts serves on its own
// subject, and a Factory endpoint reaches it.
func TestLongestInstanceServes(t *testing.T) {
	e := newEnv(t)
	longest := strings.Repeat("x", wire.MaxInstanceLen)
	e.echoService(t, longest, nil)
	factory := natsrpc.JSONFactory[echoResp](e.cnc, "echo", "say")
	ep, closer, err := factory(longest)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	have, err := natsrpc.Call[echoResp](ctxWait(t), ep, echoReq{Msg: "hi"})
	if want := (echoResp{Msg: "hi", Instance: longest}); err != nil || have != want {
		t.Fatalf("want %+v, have %+v, %v", want, have, err)
	}
}

func TestHeadersAndDeadlineRoundTrip(t *testing.T) {
	e := newEnv(t)
	type seen struct {
		deadline time.Time
		entered  time.Time
		custom   string
		hasDl    bool
	}
	got := make(chan seen, 1)
	type ctxKey struct{}
	srv := natsrpc.NewServer(
		func(ctx context.Context, _ any) (any, error) {
			dl, ok := ctx.Deadline()
			got <- seen{deadline: dl, hasDl: ok, entered: time.Now(), custom: ctx.Value(ctxKey{}).(string)}
			return echoResp{Msg: "ok"}, nil
		},
		func(context.Context, *nats.Msg) (any, error) { return nil, nil },
		func(_ context.Context, reply *nats.Msg, resp any) error {
			reply.Header = nats.Header{"X-Reply": {"from-server"}}
			return natsrpc.EncodeJSONResponse(context.Background(), reply, resp)
		},
		natsrpc.WithBefore(func(ctx context.Context, m *nats.Msg) context.Context {
			return context.WithValue(ctx, ctxKey{}, m.Header.Get("X-Custom"))
		}),
	)
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	var replyHeader string
	c, err := natsrpc.NewServiceClient(e.cnc, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp],
		natsrpc.WithBefore(func(ctx context.Context, m *nats.Msg) context.Context {
			m.Header.Set("X-Custom", "from-client")
			return ctx
		}),
		natsrpc.WithAfter(func(ctx context.Context, m *nats.Msg) context.Context {
			replyHeader = m.Header.Get("X-Reply")
			return ctx
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	start := time.Now()
	if _, err := c.Endpoint()(ctx, echoReq{}); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.custom != "from-client" {
		t.Errorf("request header: want from-client, have %q", s.custom)
	}
	if replyHeader != "from-server" {
		t.Errorf("reply header: want from-server, have %q", replyHeader)
	}
	if !s.hasDl {
		t.Fatal("handler context has no deadline")
	}
	// The header carries the remaining time truncated to the millisecond and
	// the server counts from its receive time, so the handler's deadline is
	// no later than the caller's plus the one-way trip, which is at most
	// entered−start.
	if limit := callerDeadline.Add(s.entered.Sub(start)); s.deadline.After(limit) {
		t.Errorf("handler deadline %v later than caller's %v plus the trip (%v)", s.deadline, callerDeadline, limit)
	}
	if s.deadline.Before(callerDeadline.Add(-5 * time.Second)) {
		t.Errorf("handler deadline %v far earlier than caller's %v: not propagated", s.deadline, callerDeadline)
	}
}

func TestDeadlineReachesHandler(t *testing.T) {
	e := newEnv(t)
	handlerErr := make(chan error, 1)
	srv := natsrpc.NewServer(
		func(ctx context.Context, _ any) (any, error) {
			<-ctx.Done() // only the propagated deadline can end this
			handlerErr <- ctx.Err()
			return nil, ctx.Err()
		},
		func(context.Context, *nats.Msg) (any, error) { return nil, nil },
		natsrpc.EncodeJSONResponse,
	)
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = sayClient(t, e.cnc, "")(ctx, echoReq{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("client: want DeadlineExceeded, have %v", err)
	}
	var r interface{ Retryable() bool }
	if errors.As(err, &r) && r.Retryable() {
		t.Error("a timeout must not be retryable: the handler ran")
	}
	select {
	case err := <-handlerErr:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("handler: want DeadlineExceeded, have %v", err)
		}
	case <-time.After(wait):
		t.Fatal("handler's context never ended: deadline not propagated")
	}
}

func TestCancellation(t *testing.T) {
	e := newEnv(t)
	g := newGate(1)
	defer close(g.release)
	e.echoService(t, "a", g)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := sayClient(t, e.cnc, "a")(ctx, echoReq{Block: true})
		errc <- err
	}()
	<-g.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("want Canceled, have %v", err)
	}
}

func TestTraceContextPropagates(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	tracer := tp.Tracer("test")

	srv := natsrpc.NewJSONServer(func(ctx context.Context, r echoReq) (echoResp, error) {
		_, span := tracer.Start(ctx, "server", trace.WithSpanKind(trace.SpanKindServer))
		span.End()
		return echoResp{Msg: r.Msg}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	ctx, client := tracer.Start(ctxWait(t), "client", trace.WithSpanKind(trace.SpanKindClient))
	_, err = natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, "a"), echoReq{Msg: "traced"})
	client.End()
	if err != nil {
		t.Fatal(err)
	}
	var server, cl sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "server":
			server = s
		case "client":
			cl = s
		}
	}
	if server == nil || cl == nil {
		t.Fatalf("want a client and a server span, have %d spans", len(rec.Ended()))
	}
	if want, have := cl.SpanContext().TraceID(), server.SpanContext().TraceID(); want != have {
		t.Errorf("trace ID: want %v, have %v", want, have)
	}
	if want, have := cl.SpanContext().SpanID(), server.Parent().SpanID(); want != have {
		t.Errorf("server span parent: want client span %v, have %v", want, have)
	}
	if !server.Parent().IsRemote() {
		t.Error("server span parent should be remote")
	}
}

func TestNoResponders(t *testing.T) {
	e := newEnv(t)
	ctx := ctxWait(t)
	_, err := sayClient(t, e.cnc, "gone")(ctx, echoReq{})
	if !errors.Is(err, natsrpc.ErrNoResponders) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("want ErrNoResponders and nats.ErrNoResponders, have %v", err)
	}
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || !r.Retryable() {
		t.Errorf("no responders must be retryable: %v", err)
	}
	var ce *natsrpc.CallError
	if !errors.As(err, &ce) || ce.Subject != "rpc.echo.say.gone" {
		t.Errorf("want *CallError on rpc.echo.say.gone, have %#v", err)
	}
	if ctx.Err() != nil {
		t.Error("no responders waited for the deadline")
	}
}

type statusErr struct{ code int }

func (e statusErr) Error() string   { return "status error" }
func (e statusErr) StatusCode() int { return e.code }

type failing struct{ err error }

func (f failing) Failed() error { return f.err }

func TestRemoteErrors(t *testing.T) {
	e := newEnv(t)
	srv := natsrpc.NewJSONServer(func(_ context.Context, r echoReq) (any, error) {
		switch r.Msg {
		case "typed":
			return nil, &natsrpc.Error{Code: 418, Message: "i am a teapot"}
		case "coder":
			return nil, statusErr{409}
		case "plain":
			return nil, errors.New("disk on fire\nsecond line")
		case "business":
			return failing{errors.New("insufficient funds")}, nil
		case "business-coded":
			return failing{statusErr{402}}, nil
		case "unavailable":
			return nil, &natsrpc.Error{Code: natsrpc.CodeUnavailable, Message: "not active"}
		}
		return r, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)

	ctx := ctxWait(t)
	for _, tc := range []struct {
		msg       string
		code      int
		message   string
		business  bool
		retryable bool
	}{
		{"typed", 418, "i am a teapot", false, false},
		{"coder", 409, "status error", false, false},
		{"plain", 500, "disk on fire second line", false, false},
		{"business", natsrpc.CodeUnprocessable, "insufficient funds", true, false},
		{"business-coded", 402, "status error", true, false},
		{"unavailable", 503, "not active", false, true},
	} {
		_, err := sayClient(t, e.cnc, "")(ctx, echoReq{Msg: tc.msg})
		var re *natsrpc.Error
		if !errors.As(err, &re) {
			t.Errorf("%s: want *Error, have %v", tc.msg, err)
			continue
		}
		if re.Code != tc.code || re.Message != tc.message || re.Business != tc.business {
			t.Errorf("%s: want {%d %q business=%v}, have %+v", tc.msg, tc.code, tc.message, tc.business, re)
		}
		if have := re.Retryable(); have != tc.retryable {
			t.Errorf("%s: Retryable want %v, have %v", tc.msg, tc.retryable, have)
		}
		if have := errors.Is(err, natsrpc.ErrBusiness); have != tc.business {
			t.Errorf("%s: errors.Is(ErrBusiness) want %v, have %v", tc.msg, tc.business, have)
		}
		if !errors.Is(err, natsrpc.ErrRemote) {
			t.Errorf("%s: want errors.Is(ErrRemote)", tc.msg)
		}
	}
	if want, errs := uint64(6), statSum(t, svc, "errors"); errs != want {
		t.Errorf("endpoint stats errors: want %d, have %d", want, errs)
	}
}

func TestPanicBecomesErrorReply(t *testing.T) {
	e := newEnv(t)
	srv := natsrpc.NewJSONServer(func(_ context.Context, r echoReq) (echoResp, error) {
		if r.Msg == "panic" {
			panic("handler exploded")
		}
		return echoResp{Msg: r.Msg}, nil
	})
	var finalErr atomic.Value
	srv2 := natsrpc.NewServer(
		func(context.Context, any) (any, error) { return nil, nil },
		func(context.Context, *nats.Msg) (any, error) { panic("decoder exploded") },
		natsrpc.EncodeJSONResponse,
		natsrpc.WithFinalizer(func(_ context.Context, _, _ *nats.Msg, err error) { finalErr.Store(err) }),
	)
	var logged atomic.Int32
	logger := log.LoggerFunc(func(...any) error { logged.Add(1); return nil })
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv, "dec": srv2}, natsrpc.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)

	_, err = sayClient(t, e.cnc, "")(ctx, echoReq{Msg: "panic"})
	var re *natsrpc.Error
	if !errors.As(err, &re) || re.Code != natsrpc.CodeInternal || !strings.Contains(re.Message, "handler exploded") {
		t.Fatalf("want a 500 *Error mentioning the panic, have %v", err)
	}
	dec, _ := natsrpc.NewServiceClient(e.cnc, "echo", "dec", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
	_, err = dec.Endpoint()(ctx, echoReq{})
	if !errors.As(err, &re) || re.Code != natsrpc.CodeInternal {
		t.Fatalf("decoder panic: want a 500 *Error, have %v", err)
	}
	if fe, _ := finalErr.Load().(error); fe == nil || !strings.Contains(fe.Error(), "decoder exploded") {
		t.Errorf("finalizer: want the panic error, have %v", fe)
	}
	// The service survived and still answers.
	have, err := natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, ""), echoReq{Msg: "after"})
	if err != nil || have.Msg != "after" {
		t.Fatalf("after panic: want after, have %+v, %v", have, err)
	}
	if logged.Load() < 2 {
		t.Errorf("want the panics logged, have %d log lines", logged.Load())
	}
	if panics := statSum(t, svc, "panics"); panics != 2 {
		t.Errorf("stats panics: want 2, have %d", panics)
	}
}

func TestSlowHandlerDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t)
	g := newGate(3)
	e.echoService(t, "a", g)
	ctx := ctxWait(t)
	call := sayClient(t, e.cnc, "a")

	slow := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := call(ctx, echoReq{Msg: "slow", Block: true})
			slow <- err
		}()
	}
	for range 3 {
		<-g.entered
	}
	// Same instance, same method, while three handlers are blocked.
	for range 20 {
		if _, err := natsrpc.Call[echoResp](ctx, call, echoReq{Msg: "fast"}); err != nil {
			t.Fatalf("fast request behind slow ones: %v", err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("a slow request finished before release: %v", err)
	default:
	}
	close(g.release)
	for range 3 {
		if err := <-slow; err != nil {
			t.Errorf("slow request: %v", err)
		}
	}
}

func TestConcurrencyBound(t *testing.T) {
	e := newEnv(t)
	var running, peak atomic.Int32
	release := make(chan struct{})
	srv := natsrpc.NewJSONServer(func(ctx context.Context, _ echoReq) (echoResp, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return echoResp{}, nil
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv}, natsrpc.WithMaxConcurrent(2))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)

	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := sayClient(t, e.cnc, "")(ctx, echoReq{})
			errs <- err
		}()
	}
	// Wait until the bound is reached, then let everything through.
	for running.Load() < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("handlers never started")
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("call: %v", err)
		}
	}
	if have := peak.Load(); have != 2 {
		t.Errorf("peak concurrency: want 2 (the bound), have %d", have)
	}
}

func TestDrainMovesTrafficToOtherInstance(t *testing.T) {
	e := newEnv(t)
	g := newGate(4)
	a := e.echoService(t, "a", g)
	e.echoService(t, "b", nil)
	ctx := ctxWait(t)
	toA := sayClient(t, e.cnc, "a")
	anyone := sayClient(t, e.cnc, "")

	// Requests in flight on a.
	const inflight = 4
	results := make(chan error, inflight)
	for range inflight {
		go func() {
			r, err := natsrpc.Call[echoResp](ctx, toA, echoReq{Msg: "in-flight", Block: true})
			if err == nil && r.Instance != "a" {
				err = errors.New("in-flight request answered by " + r.Instance)
			}
			results <- err
		}()
	}
	for range inflight {
		<-g.entered
	}

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- a.Shutdown(ctx) }()

	// a unsubscribes: its instance subject soon has no responders (the
	// retryable signal a client-side balancer acts on)...
	for {
		_, err := natsrpc.Call[echoResp](ctx, toA, echoReq{Msg: "probe"})
		if errors.Is(err, natsrpc.ErrNoResponders) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("a never stopped taking requests")
		}
	}
	// ...and during the drain every service-wide request reaches b.
	for range 20 {
		r, err := natsrpc.Call[echoResp](ctx, anyone, echoReq{Msg: "during"})
		if err != nil {
			t.Fatalf("request during drain: %v", err)
		}
		if r.Instance != "b" {
			t.Fatalf("request during drain answered by %q, want b", r.Instance)
		}
	}
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned with requests in flight: %v", err)
	default:
	}
	close(g.release)
	for range inflight {
		if err := <-results; err != nil {
			t.Errorf("in-flight request: %v", err)
		}
	}
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range 10 {
		r, err := natsrpc.Call[echoResp](ctx, anyone, echoReq{Msg: "after"})
		if err != nil || r.Instance != "b" {
			t.Fatalf("after drain: want b, have %+v, %v", r, err)
		}
	}
	// Idempotent: a second Shutdown returns the first one's outcome at once.
	if err := a.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestShutdownGivesUpAtContextEnd(t *testing.T) {
	e := newEnv(t)
	entered := make(chan struct{}, 1)
	handlerDone := make(chan error, 1)
	srv := natsrpc.NewJSONServer(func(ctx context.Context, _ echoReq) (echoResp, error) {
		entered <- struct{}{}
		<-ctx.Done() // no deadline was sent: ends only when Shutdown gives up
		handlerDone <- ctx.Err()
		return echoResp{}, ctx.Err()
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": srv}, natsrpc.WithMaxConcurrent(1))
	if err != nil {
		t.Fatal(err)
	}
	// Raw requests with no deadline header, replies collected on one inbox.
	inbox := e.cnc.NewRespInbox()
	replies, err := e.cnc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(echoReq{})
	if err := e.cnc.PublishRequest("rpc.echo.say", inbox, data); err != nil {
		t.Fatal(err)
	}
	<-entered
	// Three more wait behind the bound of one.
	const queued = 3
	for range queued {
		if err := e.cnc.PublishRequest("rpc.echo.say", inbox, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.cnc.Flush(); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := svc.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: want DeadlineExceeded, have %v", err)
	}
	select {
	case err := <-handlerDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ctx: want Canceled, have %v", err)
		}
	case <-time.After(wait):
		t.Fatal("handler context not cancelled when Shutdown gave up")
	}
	codes := map[int]int{}
	for range 1 + queued {
		m, err := replies.NextMsg(wait)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		re, _ := decodeError(m.Header)
		if re == nil {
			t.Fatal("want error replies, have a success")
		}
		codes[re.Code]++
		if re.Code == natsrpc.CodeUnavailable && !re.Retryable() {
			t.Error("503 reply not retryable")
		}
	}
	// The cancelled handler's own failure, and the queued requests refused
	// as not served: safe to send elsewhere.
	if codes[natsrpc.CodeInternal] != 1 || codes[natsrpc.CodeUnavailable] != queued {
		t.Errorf("reply codes: want 1×500 and %d×503, have %v", queued, codes)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	big := natsrpc.NewJSONServer(func(_ context.Context, r echoReq) (echoResp, error) {
		return echoResp{Msg: strings.Repeat("x", int(e.snc.MaxPayload())+1)}, nil
	})
	garbled := natsrpc.NewServer(
		func(context.Context, any) (any, error) { return nil, errors.New("x") },
		func(context.Context, *nats.Msg) (any, error) { return nil, nil },
		natsrpc.EncodeJSONResponse,
		natsrpc.WithErrorEncoder(func(_ context.Context, _ error, reply *nats.Msg) {
			reply.Header = nats.Header{rpcheader.Error: {"broken"}, rpcheader.ErrorCode: {"not-a-code"}}
		}),
	)
	say := natsrpc.NewJSONServer(func(_ context.Context, r echoReq) (echoResp, error) { return echoResp{Msg: r.Msg}, nil })
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": say, "big": big, "garbled": garbled})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)

	t.Run("undecodable request", func(t *testing.T) {
		m, err := e.cnc.RequestWithContext(ctx, "rpc.echo.say", []byte("{not json"))
		if err != nil {
			t.Fatal(err)
		}
		re, _ := decodeError(m.Header)
		if re == nil || re.Code != natsrpc.CodeBadRequest || !strings.HasPrefix(re.Message, "decode request") {
			t.Errorf("want a 400 decode error, have %+v", re)
		}
		// Through the client, a request that is not the server's type.
		c, _ := natsrpc.NewServiceClient(e.cnc, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
		_, err = c.Endpoint()(ctx, []int{1, 2})
		var ce *natsrpc.Error
		if !errors.As(err, &ce) || ce.Code != natsrpc.CodeBadRequest {
			t.Errorf("want a 400 *Error, have %v", err)
		}
	})
	t.Run("oversize request refused before sending", func(t *testing.T) {
		_, err := sayClient(t, e.cnc, "a")(ctx, echoReq{Msg: strings.Repeat("x", int(e.cnc.MaxPayload()))})
		var pe *natsrpc.PayloadError
		if !errors.Is(err, natsrpc.ErrPayloadTooLarge) || !errors.As(err, &pe) || pe.Max != e.cnc.MaxPayload() || pe.Size <= pe.Max {
			t.Errorf("want *PayloadError over %d, have %v", e.cnc.MaxPayload(), err)
		}
	})
	t.Run("oversize reply becomes an error", func(t *testing.T) {
		c, _ := natsrpc.NewServiceClient(e.cnc, "echo", "big", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
		_, err := c.Endpoint()(ctx, echoReq{})
		var re *natsrpc.Error
		if !errors.As(err, &re) || re.Code != natsrpc.CodeInternal || !strings.Contains(re.Message, "payload too large") {
			t.Errorf("want a 500 payload-too-large *Error, have %v", err)
		}
	})
	t.Run("malformed error headers", func(t *testing.T) {
		c, _ := natsrpc.NewServiceClient(e.cnc, "echo", "garbled", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
		_, err := c.Endpoint()(ctx, echoReq{})
		var re *natsrpc.Error
		if !errors.As(err, &re) || re.Code != natsrpc.CodeInternal || !strings.Contains(re.Message, "broken") {
			t.Errorf("want a 500 *Error keeping the message, have %v", err)
		}
	})
	t.Run("malformed deadline header is ignored and counted", func(t *testing.T) {
		data, _ := json.Marshal(echoReq{Msg: "hi"})
		m, err := e.cnc.RequestMsgWithContext(ctx, &nats.Msg{Subject: "rpc.echo.say.a", Data: data,
			Header: nats.Header{rpcheader.Timeout: {"-5s"}, rpcheader.Traceparent: {"garbage"}}})
		if err != nil {
			t.Fatal(err)
		}
		if re, _ := decodeError(m.Header); re != nil {
			t.Fatalf("want success, have %v", re)
		}
		if malformed := statSum(t, svc, "malformed_headers"); malformed != 1 {
			t.Errorf("malformed headers counted: want 1, have %d", malformed)
		}
	})
	t.Run("response of the wrong type", func(t *testing.T) {
		_, err := natsrpc.Call[string](ctx, sayClient(t, e.cnc, "a"), echoReq{Msg: "hi"})
		if !errors.Is(err, natsrpc.ErrUnexpectedType) {
			t.Errorf("want ErrUnexpectedType, have %v", err)
		}
	})
	t.Run("invalid names", func(t *testing.T) {
		for _, tc := range []struct{ svc, inst, method string }{{"echo.x", "a", "say"}, {"echo", "a.>", "say"}, {"echo", "a", "say*"}, {"", "a", "say"}} {
			_, err := natsrpc.NewService(ctxWait(t), e.snc, tc.svc, tc.inst, map[string]*natsrpc.Server{tc.method: say})
			if !errors.Is(err, wire.ErrInvalidName) {
				t.Errorf("NewService%+v: want ErrInvalidName, have %v", tc, err)
			}
		}
		if _, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", nil); err == nil {
			t.Error("NewService with no methods: want error")
		}
		if _, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"x": nil}); err == nil {
			t.Error("NewService with nil server: want error")
		}
		if _, err := natsrpc.NewServiceClient(e.cnc, "echo", "a b", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp]); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("NewServiceClient: want ErrInvalidName, have %v", err)
		}
		f := natsrpc.Factory(e.cnc, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
		if _, _, err := f("i.*"); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("Factory: want ErrInvalidName, have %v", err)
		}
		if _, _, err := natsrpc.Factory(nil, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])("a"); !errors.Is(err, natsrpc.ErrNilConn) {
			t.Errorf("Factory(nil conn): want ErrNilConn, have %v", err)
		}
		if _, err := natsrpc.NewService(ctx, nil, "echo", "a", map[string]*natsrpc.Server{"say": say}); !errors.Is(err, natsrpc.ErrNilConn) {
			t.Errorf("NewService(nil conn): want ErrNilConn, have %v", err)
		}
	})
}

func TestConnectionClosedIsRetryable(t *testing.T) {
	e := newEnv(t)
	nc := natstest.Connect(t, e.srv.URL())
	call := sayClient(t, nc, "a")
	nc.Close()
	_, err := call(ctxWait(t), echoReq{})
	var r interface{ Retryable() bool }
	if !errors.Is(err, natsrpc.ErrConnClosed) || !errors.As(err, &r) || !r.Retryable() {
		t.Errorf("want retryable ErrConnClosed, have %v", err)
	}
}

func TestFactoryWithEndpointer(t *testing.T) {
	e := newEnv(t)
	e.echoService(t, "a", nil)
	e.echoService(t, "b", nil)
	ctx := ctxWait(t)

	instancer := sd.FixedInstancer{"a", "b"}
	endpointer := sd.NewEndpointer(instancer, natsrpc.JSONFactory[echoResp](e.cnc, "echo", "say"), log.NewNopLogger())
	defer endpointer.Close()
	// go-kit's Endpointer fills its cache on its own goroutine.
	for eps, _ := endpointer.Endpoints(); len(eps) < 2; eps, _ = endpointer.Endpoints() {
		if ctx.Err() != nil {
			t.Fatalf("endpointer never saw both instances: %v", eps)
		}
		time.Sleep(time.Millisecond)
	}
	balancer := lb.NewRoundRobin(endpointer)
	seen := map[string]int{}
	for range 10 {
		ep, err := balancer.Endpoint()
		if err != nil {
			t.Fatal(err)
		}
		r, err := natsrpc.Call[echoResp](ctx, ep, echoReq{Msg: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Instance]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Errorf("round robin over the factory's endpoints: want 5 each, have %v", seen)
	}

	ep, closer, err := natsrpc.Factory(e.cnc, "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}
	_ = closer.Close()
	_, err = ep(ctx, echoReq{})
	var r interface{ Retryable() bool }
	if !errors.Is(err, natsrpc.ErrClientClosed) || !errors.As(err, &r) || !r.Retryable() {
		t.Errorf("closed endpoint: want retryable ErrClientClosed, have %v", err)
	}
}

func TestMicroDiscovery(t *testing.T) {
	e := newEnv(t)
	e.echoService(t, "a", nil, natsrpc.WithVersion("1.2.3"), natsrpc.WithMetadata(map[string]string{"zone": "z1"}))
	m, err := e.cnc.RequestWithContext(ctxWait(t), "$SRV.INFO.echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "echo" || info.Version != "1.2.3" || info.Metadata[wire.MetadataInstance] != "a" || info.Metadata["zone"] != "z1" {
		t.Errorf("info: have %+v", info)
	}
	want := map[string]string{"rpc.echo.say": "rpc.echo", "rpc.echo.say.a": ""}
	have := map[string]string{}
	for _, ep := range info.Endpoints {
		have[ep.Subject] = ep.QueueGroup
	}
	if len(have) != len(want) || have["rpc.echo.say"] != want["rpc.echo.say"] || have["rpc.echo.say.a"] != "" {
		t.Errorf("endpoints (subject → queue group): want %v, have %v", want, have)
	}
}

// The Service answers micro's PING and STATS as micro does, for the
// service, and by ID; STATS counts the requests and carries EndpointStats.
func TestMicroPingAndStats(t *testing.T) {
	e := newEnv(t)
	svc := e.echoService(t, "a", nil)
	ctx := ctxWait(t)
	for range 3 {
		if _, err := natsrpc.Call[echoResp](ctx, sayClient(t, e.cnc, "a"), echoReq{}); err != nil {
			t.Fatal(err)
		}
	}
	id := natsrpc.InfoOf(svc).ID
	for _, subject := range []string{"$SRV.PING", "$SRV.PING.echo", "$SRV.PING.echo." + id} {
		m, err := e.cnc.RequestWithContext(ctx, subject, nil)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		var ping micro.Ping
		if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Type != micro.PingResponseType || ping.Name != "echo" || ping.ID != id {
			t.Errorf("%s: have %s (%v)", subject, m.Data, err)
		}
	}
	m, err := e.cnc.RequestWithContext(ctx, "$SRV.STATS.echo."+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(m.Data, &stats); err != nil || stats.Type != micro.StatsResponseType {
		t.Fatalf("stats: have %s (%v)", m.Data, err)
	}
	requests := map[string]int{}
	for _, ep := range stats.Endpoints {
		requests[ep.Subject] = ep.NumRequests
		var data map[string]uint64
		if err := json.Unmarshal(ep.Data, &data); err != nil {
			t.Fatalf("stats data %s: %v", ep.Data, err)
		}
		for _, key := range []string{"errors", "panics", "malformed_headers", "rejected", "expired", "dropped"} {
			if _, ok := data[key]; !ok {
				t.Errorf("stats data %s: no %q", ep.Data, key)
			}
		}
	}
	if want := map[string]int{"rpc.echo.say": 0, "rpc.echo.say.a": 3}; !maps.Equal(requests, want) {
		t.Errorf("requests by subject: want %v, have %v", want, requests)
	}
	if _, err := natsrpc.NewService(ctx, e.snc, "echo", "b", map[string]*natsrpc.Server{"say": natsrpc.NewJSONServer(echoOf("b"))},
		natsrpc.WithVersion("one")); err == nil {
		t.Error("a version that is not semver: want an error")
	}
}

func echoOf(instance string) func(context.Context, echoReq) (echoResp, error) {
	return func(_ context.Context, r echoReq) (echoResp, error) {
		return echoResp{Msg: r.Msg, Instance: instance}, nil
	}
}

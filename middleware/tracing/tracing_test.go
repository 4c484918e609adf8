package tracing_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The attributes this package adds to spans beside the semantic conventions'.
const (
	instanceKey  = attribute.Key("kitnats.instance")
	attemptKey   = attribute.Key("kitnats.attempt")
	breakerToKey = attribute.Key("kitnats.breaker.to")
)

type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	opts   []tracing.Option
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return &telemetry{spans, reader, []tracing.Option{tracing.WithTracerProvider(tp), tracing.WithMeterProvider(mp)}}
}

func (tel *telemetry) metrics(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/aegis-sdk/kitnats/middleware/tracing" {
			t.Errorf("scope: want %s, have %s", "github.com/aegis-sdk/kitnats/middleware/tracing", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// sums returns a counter's values keyed by one attribute's value.
func sums(t *testing.T, data metricdata.Aggregation, key attribute.Key) map[string]int64 {
	t.Helper()
	s, ok := data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("want an int64 sum, have %T", data)
	}
	out := map[string]int64{}
	for _, dp := range s.DataPoints {
		v, _ := dp.Attributes.Value(key)
		out[v.String()] += dp.Value
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

func TestClientSpan(t *testing.T) {
	tel := newTelemetry(t)
	boom := errors.New("boom")
	ok := tracing.Client("echo", "Echo", tel.opts...)(func(ctx context.Context, req any) (any, error) {
		if !trace.SpanContextFromContext(ctx).IsValid() {
			t.Error("no span in the endpoint's context")
		}
		if req == "fail" {
			return nil, boom
		}
		return "pong", nil
	})
	if _, err := ok(context.Background(), "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := ok(context.Background(), "fail"); err != boom {
		t.Fatalf("want %v unchanged, have %v", boom, err)
	}
	spans := tel.spans.Ended()
	if want, have := 2, len(spans); want != have {
		t.Fatalf("spans: want %d, have %d", want, have)
	}
	for i, s := range spans {
		if want, have := "echo/Echo", s.Name(); want != have {
			t.Errorf("name: want %q, have %q", want, have)
		}
		if want, have := trace.SpanKindClient, s.SpanKind(); want != have {
			t.Errorf("kind: want %v, have %v", want, have)
		}
		a := attrs(s)
		if a["rpc.system.name"] != "nats" || a["rpc.method"] != "echo/Echo" {
			t.Errorf("span %d attributes: %v", i, a)
		}
	}
	if _, has := attrs(spans[0])["error.type"]; has || spans[0].Status().Code == codes.Error {
		t.Errorf("successful span marked failed: %v %v", attrs(spans[0]), spans[0].Status())
	}
	if want, have := "*errors.errorString", attrs(spans[1])["error.type"]; want != have {
		t.Errorf("error.type: want %q, have %q", want, have)
	}
	if want, have := codes.Error, spans[1].Status().Code; want != have {
		t.Errorf("status: want %v, have %v", want, have)
	}

	hist, ok2 := tel.metrics(t)["rpc.client.call.duration"].(metricdata.Histogram[float64])
	if !ok2 {
		t.Fatal("no rpc.client.call.duration histogram")
	}
	var total uint64
	for _, dp := range hist.DataPoints {
		total += dp.Count
		if v, _ := dp.Attributes.Value("rpc.method"); v.AsString() != "echo/Echo" {
			t.Errorf("duration without rpc.method: %v", dp.Attributes)
		}
	}
	if want, have := uint64(2), total; want != have {
		t.Errorf("durations recorded: want %d, have %d", want, have)
	}
}

func TestServerSpanIsChildOfRemoteParent(t *testing.T) {
	tel := newTelemetry(t)
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1},
		SpanID:     trace.SpanID{2},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	e := tracing.Server("echo", "Echo", tel.opts...)(func(context.Context, any) (any, error) { return "pong", nil })
	if _, err := e(trace.ContextWithRemoteSpanContext(context.Background(), parent), nil); err != nil {
		t.Fatal(err)
	}
	spans := tel.spans.Ended()
	if len(spans) != 1 {
		t.Fatalf("spans: want 1, have %d", len(spans))
	}
	s := spans[0]
	if want, have := trace.SpanKindServer, s.SpanKind(); want != have {
		t.Errorf("kind: want %v, have %v", want, have)
	}
	if s.Parent().SpanID() != parent.SpanID() || s.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("parent: want %v, have %v", parent.SpanID(), s.Parent().SpanID())
	}
	if _, ok := tel.metrics(t)["rpc.server.call.duration"]; !ok {
		t.Error("no rpc.server.call.duration")
	}
}

// memBalancer picks, in order, the first instance not tried.
type memBalancer struct {
	names []string
	eps   map[string]endpoint.Endpoint
}

func newMemBalancer(f sd.Factory, names ...string) (*memBalancer, []io.Closer) {
	b := &memBalancer{names: names, eps: map[string]endpoint.Endpoint{}}
	var closers []io.Closer
	for _, n := range names {
		e, c, err := f(n)
		if err != nil {
			panic(err)
		}
		b.eps[n] = e
		closers = append(closers, c)
	}
	return b, closers
}

func (b *memBalancer) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *memBalancer) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	for _, n := range b.names {
		if !slices.Contains(tried, n) {
			return lb.Pick{Instance: n, Endpoint: b.eps[n]}, nil
		}
	}
	return lb.Pick{}, lb.ErrNoInstances
}

// chain builds tracing → retry → balancer → tracing.Factory → breaker →
// an in-memory transport to servers traced by tracing.Server. Instances in
// down answer no responders without reaching a server.
func chain(t *testing.T, tel *telemetry, down ...string) endpoint.Endpoint {
	t.Helper()
	server := tracing.Server("echo", "Echo", tel.opts...)(func(_ context.Context, req any) (any, error) {
		return req, nil
	})
	transport := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(ctx context.Context, req any) (any, error) {
			if slices.Contains(down, instance) {
				return nil, nats.ErrNoResponders
			}
			// The transport propagates the attempt's span context.
			remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.SpanContextFromContext(ctx))
			return server(remote, req)
		}, nil, nil
	}
	factory := tracing.Factory(breaker.Factory(transport,
		breaker.WithStateChange(tracing.BreakerStateHook(tel.opts...))), "echo", "Echo", tel.opts...)
	b, _ := newMemBalancer(factory, "a", "b", "c")
	e, err := retry.New(b, retry.WithObserver(tracing.RetryObserver("echo", "Echo", tel.opts...)))
	if err != nil {
		t.Fatal(err)
	}
	return tracing.Client("echo", "Echo", tel.opts...)(e)
}

func TestRetriesAreChildSpans(t *testing.T) {
	tel := newTelemetry(t)
	e := chain(t, tel, "a")
	if resp, err := e(context.Background(), "ping"); err != nil || resp != "ping" {
		t.Fatalf("want ping, have %v, %v", resp, err)
	}
	spans := tel.spans.Ended()
	if want, have := 4, len(spans); want != have {
		t.Fatalf("spans: want %d (call, 2 attempts, server), have %d", want, have)
	}
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var root sdktrace.ReadOnlySpan
	var attempts []sdktrace.ReadOnlySpan
	var server sdktrace.ReadOnlySpan
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
		switch {
		case s.SpanKind() == trace.SpanKindServer:
			server = s
		case !s.Parent().IsValid():
			root = s
		default:
			attempts = append(attempts, s)
		}
	}
	if root == nil || server == nil || len(attempts) != 2 {
		t.Fatalf("want a root, 2 attempts and a server span; have %v", spans)
	}
	slices.SortFunc(attempts, func(x, y sdktrace.ReadOnlySpan) int {
		return x.StartTime().Compare(y.StartTime())
	})
	for i, want := range []map[attribute.Key]string{
		{instanceKey: "a", attemptKey: "1", "error.type": "no_responders", "rpc.method": "echo/Echo"},
		{instanceKey: "b", attemptKey: "2", "rpc.method": "echo/Echo"},
	} {
		s := attempts[i]
		if s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("attempt %d: not a child of the call span", i+1)
		}
		if want, have := trace.SpanKindClient, s.SpanKind(); want != have {
			t.Errorf("attempt %d kind: want %v, have %v", i+1, want, have)
		}
		have := attrs(s)
		for k, v := range want {
			if have[k] != v {
				t.Errorf("attempt %d: %s want %q, have %q", i+1, k, v, have[k])
			}
		}
	}
	if _, has := attrs(attempts[1])["error.type"]; has {
		t.Error("successful attempt has error.type")
	}
	if server.Parent().SpanID() != attempts[1].SpanContext().SpanID() {
		t.Error("server span is not a child of the attempt that reached it")
	}
	// The call span carries an event per attempt.
	var events []string
	for _, ev := range root.Events() {
		if ev.Name != "kitnats.attempt" {
			continue
		}
		for _, kv := range ev.Attributes {
			if kv.Key == instanceKey {
				events = append(events, kv.Value.AsString())
			}
		}
	}
	if want := []string{"a", "b"}; !slices.Equal(want, events) {
		t.Errorf("attempt events: want %v, have %v", want, events)
	}
}

func TestRetryAndBreakerMetrics(t *testing.T) {
	tel := newTelemetry(t)
	e := chain(t, tel, "a")
	const calls = 10
	for range calls {
		if _, err := e(context.Background(), "ping"); err != nil {
			t.Fatal(err)
		}
	}
	m := tel.metrics(t)
	// Every call tries a, then b: the default breaker trips a after 6
	// consecutive failures, and a closed balancer still offers a first,
	// so the breaker rejects it from then on.
	if want, have := map[string]int64{"no_responders": 6, "circuit_open": 4, "": calls}, sums(t, m["kitnats.rpc.client.attempts"], "error.type"); !mapsEqual(want, have) {
		t.Errorf("attempts by error.type: want %v, have %v", want, have)
	}
	if want, have := map[string]int64{"": calls}, sums(t, m["kitnats.rpc.client.retries"], "rpc.method"); want[""] != have["echo/Echo"] {
		t.Errorf("retries: want %v, have %v", want[""], have)
	}
	if want, have := map[string]int64{"a": calls, "b": calls}, sums(t, m["kitnats.lb.picks"], instanceKey); !mapsEqual(want, have) {
		t.Errorf("picks: want %v, have %v", want, have)
	}
	if want, have := map[string]int64{"a": 1}, sums(t, m["kitnats.breaker.state_changes"], instanceKey); !mapsEqual(want, have) {
		t.Errorf("breaker changes: want %v, have %v", want, have)
	}
	if want, have := map[string]int64{"": 1}, sums(t, m["kitnats.breaker.open"], "none"); !mapsEqual(want, have) {
		t.Errorf("open breakers: want %v, have %v", want, have)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestBreakerStateHookCountsOpenBreakers(t *testing.T) {
	tel := newTelemetry(t)
	hook := tracing.BreakerStateHook(tel.opts...)
	hook("x", gobreaker.StateClosed.String(), gobreaker.StateOpen.String())
	hook("y", gobreaker.StateClosed.String(), gobreaker.StateOpen.String())
	hook("x", gobreaker.StateOpen.String(), gobreaker.StateHalfOpen.String())
	m := tel.metrics(t)
	if want, have := map[string]int64{"open": 2, "half-open": 1}, sums(t, m["kitnats.breaker.state_changes"], breakerToKey); !mapsEqual(want, have) {
		t.Errorf("changes by state: want %v, have %v", want, have)
	}
	if want, have := int64(1), sums(t, m["kitnats.breaker.open"], "none")[""]; want != have {
		t.Errorf("open: want %d, have %d", want, have)
	}
}

type typed struct{}

func (typed) Error() string     { return "typed" }
func (typed) ErrorType() string { return "my_type" }

type plain struct{}

func (*plain) Error() string { return "plain" }

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{context.Canceled, "canceled"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "deadline_exceeded"},
		{nats.ErrNoResponders, "no_responders"},
		{&breaker.RejectedError{Name: "a", Err: gobreaker.ErrOpenState}, "circuit_open"},
		{gobreaker.ErrTooManyRequests, "too_many_requests"},
		{&breaker.RejectedError{Name: "a", Err: gobreaker.ErrTooManyRequests}, "too_many_requests"},
		{errors.Join(errors.New("call failed"), fmt.Errorf("cause: %w", nats.ErrNoResponders)), "no_responders"},
		{lb.ErrNoInstances, "no_instances"},
		{typed{}, "my_type"},
		{fmt.Errorf("wrapped: %w", &plain{}), "*tracing_test.plain"},
		{&retry.Error{Attempts: []retry.Attempt{{Err: nats.ErrNoResponders}, {Err: typed{}}}, Reason: retry.ErrMaxAttempts}, "my_type"},
	} {
		if have := tracing.ErrorType(tc.err); tc.want != have {
			t.Errorf("ErrorType(%v): want %q, have %q", tc.err, tc.want, have)
		}
	}
}

func TestConcurrentChain(t *testing.T) {
	tel := newTelemetry(t)
	e := chain(t, tel, "a")
	var wg sync.WaitGroup
	const workers, calls = 8, 100
	errs := make(chan error, workers*calls)
	for range workers {
		wg.Go(func() {
			for range calls {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if _, err := e(ctx, "ping"); err != nil {
					errs <- err
				}
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var roots int
	for _, s := range tel.spans.Ended() {
		if !s.Parent().IsValid() {
			roots++
		}
	}
	if want, have := workers*calls, roots; want != have {
		t.Errorf("call spans: want %d, have %d", want, have)
	}
}

// TestBadOptionsPanic: a nil provider is refused at once, naming the option.
func TestBadOptionsPanic(t *testing.T) {
	for _, tc := range []struct {
		option string
		f      func()
	}{
		{"WithTracerProvider", func() { tracing.Client("echo", "Echo", tracing.WithTracerProvider(nil)) }},
		{"WithMeterProvider", func() { tracing.RetryObserver("echo", "Echo", tracing.WithMeterProvider(nil)) }},
	} {
		func() {
			defer func() {
				if msg := fmt.Sprint(recover()); !strings.Contains(msg, tc.option) {
					t.Errorf("%s: want a panic naming it, have %q", tc.option, msg)
				}
			}()
			tc.f()
		}()
	}
}

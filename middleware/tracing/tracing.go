package tracing

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/aegis-sdk/kitnats/middleware/tracing"

// SystemName is the rpc.system.name of calls over NATS.
const SystemName = "nats"

// Attributes the RPC semantic conventions have no name for.
const (
	// InstanceKey names the instance an attempt was sent to.
	InstanceKey = attribute.Key("kitnats.instance")
	// AttemptKey is the attempt's number, 1 for the first try.
	AttemptKey = attribute.Key("kitnats.attempt")
	// DelayKey is the backoff slept before an attempt, in seconds.
	DelayKey = attribute.Key("kitnats.retry.delay")
	// BreakerFromKey and BreakerToKey are a breaker's state change.
	BreakerFromKey = attribute.Key("kitnats.breaker.from")
	BreakerToKey   = attribute.Key("kitnats.breaker.to")
)

// AttemptEvent is the name of the span event RetryObserver adds per attempt.
const AttemptEvent = "kitnats.attempt"

// Metric names beside the semantic conventions' rpc.client.call.duration and
// rpc.server.call.duration.
const (
	AttemptsMetric      = "kitnats.rpc.client.attempts"
	RetriesMetric       = "kitnats.rpc.client.retries"
	PicksMetric         = "kitnats.lb.picks"
	BreakerChangeMetric = "kitnats.breaker.state_changes"
	BreakerOpenMetric   = "kitnats.breaker.open"
)

var systemName = semconv.RPCSystemNameKey.String(SystemName)

// Option configures the middleware and hooks of this package.
type Option func(*config)

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// WithTracerProvider sets where spans go. The default is otel's global
// provider, at the time the middleware is built.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go. The default is otel's global
// provider, at the time the middleware is built.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	return c
}

func (c config) tracer() trace.Tracer { return c.tp.Tracer(ScopeName) }
func (c config) meter() metric.Meter  { return c.mp.Meter(ScopeName) }

// FullMethod is the rpc.method of a call: "{service}/{method}".
func FullMethod(service, method string) string { return service + "/" + method }

// ErrorType returns the error.type of err: the ErrorType() string of an
// error in its chain, when there is one; a short name for the failures every
// kitnats call can meet (canceled, deadline_exceeded, no_responders,
// circuit_open, too_many_requests, no_instances); else the error's type, as
// semconv.ErrorType gives it. A *retry.Error is typed by its last attempt.
func ErrorType(err error) string {
	if err == nil {
		return ""
	}
	var re *retry.Error
	if errors.As(err, &re) && re.Last() != nil {
		err = re.Last()
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if s := typed.ErrorType(); s != "" {
			return s
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, nats.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, gobreaker.ErrOpenState):
		return "circuit_open"
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return "too_many_requests"
	case errors.Is(err, lb.ErrNoInstances):
		return "no_instances"
	}
	return semconv.ErrorType(err).Value.AsString()
}

// call is what Client, Server and Attempt share: one span per call and its
// duration.
type call struct {
	tracer    trace.Tracer
	name      string
	start     []trace.SpanStartOption
	duration  metric.Float64Histogram
	okRecord  []metric.RecordOption
	baseAttrs []attribute.KeyValue
}

func newCall(c config, kind trace.SpanKind, service, method string, hist metric.Float64Histogram, extra ...attribute.KeyValue) *call {
	full := FullMethod(service, method)
	attrs := append([]attribute.KeyValue{systemName, semconv.RPCMethod(full)}, extra...)
	return &call{
		tracer:    c.tracer(),
		name:      full,
		start:     []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(attrs...)},
		duration:  hist,
		okRecord:  []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs[:2]...))},
		baseAttrs: attrs[:2],
	}
}

func (k *call) wrap(next endpoint.Endpoint, annotate func(context.Context, trace.Span)) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		ctx, span := k.tracer.Start(ctx, k.name, k.start...)
		if annotate != nil && span.IsRecording() {
			annotate(ctx, span)
		}
		var begin time.Time
		measure := k.duration != nil && k.duration.Enabled(ctx)
		if measure {
			begin = time.Now()
		}
		resp, err := next(ctx, request)
		if measure {
			secs := time.Since(begin).Seconds()
			if err == nil {
				k.duration.Record(ctx, secs, k.okRecord...)
			} else {
				attrs := append(k.baseAttrs[:len(k.baseAttrs):len(k.baseAttrs)], semconv.ErrorTypeKey.String(ErrorType(err)))
				k.duration.Record(ctx, secs, metric.WithAttributes(attrs...))
			}
		}
		if err != nil && span.IsRecording() {
			span.SetAttributes(semconv.ErrorTypeKey.String(ErrorType(err)))
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		return resp, err
	}
}

// Client traces the calls of a client endpoint: one span of kind CLIENT per
// call, named "{service}/{method}" with rpc.system.name "nats" and
// rpc.method, error.type and an error status on failure; and the
// rpc.client.call.duration histogram. Put it outermost, above retry, so the
// span covers every attempt; Attempt and RetryObserver show the attempts.
func Client(service, method string, opts ...Option) endpoint.Middleware {
	c := newConfig(opts)
	hist, err := rpcconv.NewClientCallDuration(c.meter())
	if err != nil {
		otel.Handle(err)
	}
	k := newCall(c, trace.SpanKindClient, service, method, hist.Inst())
	return func(next endpoint.Endpoint) endpoint.Endpoint { return k.wrap(next, nil) }
}

// Server traces a server endpoint: one span of kind SERVER per request, a
// child of the span context the transport extracted from the request's
// headers into ctx, and the rpc.server.call.duration histogram.
func Server(service, method string, opts ...Option) endpoint.Middleware {
	c := newConfig(opts)
	hist, err := rpcconv.NewServerCallDuration(c.meter())
	if err != nil {
		otel.Handle(err)
	}
	k := newCall(c, trace.SpanKindServer, service, method, hist.Inst())
	return func(next endpoint.Endpoint) endpoint.Endpoint { return k.wrap(next, nil) }
}

// Attempt traces the attempts of a call: put it beneath retry, on every
// instance's endpoint (Factory does), and each attempt becomes a span of
// kind CLIENT, a child of the Client span, carrying the instance (InstanceKey)
// and the attempt number (AttemptKey) that retry puts in the context. Its
// span is the one the transport propagates, so the server's span is its
// child.
func Attempt(service, method string, opts ...Option) endpoint.Middleware {
	k := newCall(newConfig(opts), trace.SpanKindClient, service, method, nil)
	return func(next endpoint.Endpoint) endpoint.Endpoint { return k.wrap(next, annotateAttempt("")) }
}

func annotateAttempt(instance string) func(context.Context, trace.Span) {
	return func(ctx context.Context, span trace.Span) {
		a, ok := retry.AttemptFromContext(ctx)
		switch {
		case ok:
			span.SetAttributes(InstanceKey.String(a.Instance), AttemptKey.Int(a.Number))
		case instance != "":
			span.SetAttributes(InstanceKey.String(instance))
		}
	}
}

// Factory wraps f so that every instance's endpoint is traced by Attempt,
// the instance recorded even when no retry runs above it. The io.Closer of f
// is returned unchanged, so an lb.Available closer (a breaker's) keeps
// steering the balancer. Wrap the breaker's factory with it, so rejected
// attempts show too:
//
//	tracing.Factory(breaker.Factory(transportFactory), "svc", "Method")
func Factory(f sd.Factory, service, method string, opts ...Option) sd.Factory {
	k := newCall(newConfig(opts), trace.SpanKindClient, service, method, nil)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := f(instance)
		if err != nil {
			return nil, closer, err
		}
		return k.wrap(e, annotateAttempt(instance)), closer, nil
	}
}

// RetryObserver returns a retry.Observer (see retry.WithObserver) that
// counts attempts (kitnats.rpc.client.attempts, with error.type when one
// failed), retries (kitnats.rpc.client.retries) and picks per instance
// (kitnats.lb.picks, with kitnats.instance), and adds an event per attempt
// to the span in the caller's context — the Client span — so retries are
// visible even without Attempt spans.
func RetryObserver(service, method string, opts ...Option) retry.Observer {
	c := newConfig(opts)
	m := c.meter()
	attempts, err := m.Int64Counter(AttemptsMetric, metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts of outgoing RPC calls, the first included."))
	if err != nil {
		otel.Handle(err)
	}
	retries, err := m.Int64Counter(RetriesMetric, metric.WithUnit("{retry}"),
		metric.WithDescription("Attempts of outgoing RPC calls after the first."))
	if err != nil {
		otel.Handle(err)
	}
	picks, err := m.Int64Counter(PicksMetric, metric.WithUnit("{pick}"),
		metric.WithDescription("Instances picked by the balancer, per instance."))
	if err != nil {
		otel.Handle(err)
	}
	base := []attribute.KeyValue{systemName, semconv.RPCMethod(FullMethod(service, method))}
	baseOpt := metric.WithAttributeSet(attribute.NewSet(base...))
	with := func(kv ...attribute.KeyValue) metric.AddOption {
		return metric.WithAttributes(append(base[:len(base):len(base)], kv...)...)
	}
	return func(ctx context.Context, a retry.Attempt) {
		if attempts.Enabled(ctx) {
			if a.Err == nil {
				attempts.Add(ctx, 1, baseOpt)
			} else {
				attempts.Add(ctx, 1, with(semconv.ErrorTypeKey.String(ErrorType(a.Err))))
			}
		}
		if a.Number > 1 && retries.Enabled(ctx) {
			retries.Add(ctx, 1, baseOpt)
		}
		if a.Instance != "" && picks.Enabled(ctx) {
			picks.Add(ctx, 1, with(InstanceKey.String(a.Instance)))
		}
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			attrs := []attribute.KeyValue{AttemptKey.Int(a.Number), InstanceKey.String(a.Instance)}
			if a.Delay > 0 {
				attrs = append(attrs, DelayKey.Float64(a.Delay.Seconds()))
			}
			if a.Err != nil {
				attrs = append(attrs, semconv.ErrorTypeKey.String(ErrorType(a.Err)))
			}
			span.AddEvent(AttemptEvent, trace.WithAttributes(attrs...))
		}
	}
}

// BreakerStateHook returns a hook for breaker.WithStateChange (or
// gobreaker's Settings.OnStateChange) that counts state changes
// (kitnats.breaker.state_changes, with the instance and both states) and
// keeps kitnats.breaker.open, the number of open breakers.
func BreakerStateHook(opts ...Option) func(name string, from, to gobreaker.State) {
	c := newConfig(opts)
	m := c.meter()
	changes, err := m.Int64Counter(BreakerChangeMetric, metric.WithUnit("{change}"),
		metric.WithDescription("Circuit breaker state changes, per instance."))
	if err != nil {
		otel.Handle(err)
	}
	open, err := m.Int64UpDownCounter(BreakerOpenMetric, metric.WithUnit("{breaker}"),
		metric.WithDescription("Circuit breakers open now."))
	if err != nil {
		otel.Handle(err)
	}
	return func(name string, from, to gobreaker.State) {
		ctx := context.Background()
		changes.Add(ctx, 1, metric.WithAttributes(
			InstanceKey.String(name), BreakerFromKey.String(from.String()), BreakerToKey.String(to.String())))
		switch {
		case to == gobreaker.StateOpen:
			open.Add(ctx, 1)
		case from == gobreaker.StateOpen:
			open.Add(ctx, -1)
		}
	}
}

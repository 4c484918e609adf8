package tracing

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
	"go.opentelemetry.io/otel/trace"
)

const scopeName = "github.com/aegis-sdk/kitnats/middleware/tracing"

// Attributes, events and metrics the RPC semantic conventions have no name
// for; the package documentation lists them.
const (
	attrInstance    = attribute.Key("kitnats.instance")
	attrAttempt     = attribute.Key("kitnats.attempt")
	attrDelay       = attribute.Key("kitnats.retry.delay")
	attrBreakerFrom = attribute.Key("kitnats.breaker.from")
	attrBreakerTo   = attribute.Key("kitnats.breaker.to")

	attemptEvent = "kitnats.attempt"

	attemptsMetric      = "kitnats.rpc.client.attempts"
	retriesMetric       = "kitnats.rpc.client.retries"
	picksMetric         = "kitnats.lb.picks"
	breakerChangeMetric = "kitnats.breaker.state_changes"
	breakerOpenMetric   = "kitnats.breaker.open"
)

// attemptNumberKey is where package retry's attempt contexts answer the
// attempt's number (an int): this package labels attempt spans with it
// without importing retry.
const attemptNumberKey = "kitnats.attempt"

var systemName = semconv.RPCSystemNameKey.String("nats")

// Option configures the middleware and hooks of this package. They return
// no error, as go-kit's middleware does not: an option given a value it
// cannot use (a nil provider) is a programming error, and they panic with a
// message naming the option.
type Option interface {
	apply(*config) error
}

type option func(*config) error

func (f option) apply(c *config) error { return f(c) }

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// WithTracerProvider sets where spans go. The default is otel's global
// provider, at the time the middleware is built.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return option(func(c *config) error {
		if tp == nil {
			return errorf("WithTracerProvider: nil provider")
		}
		c.tp = tp
		return nil
	})
}

// WithMeterProvider sets where metrics go. The default is otel's global
// provider, at the time the middleware is built.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return option(func(c *config) error {
		if mp == nil {
			return errorf("WithMeterProvider: nil provider")
		}
		c.mp = mp
		return nil
	})
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("kitnats/tracing: invalid option "+format, args...)
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&c); err != nil {
			panic(err)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	return c
}

func (c config) tracer() trace.Tracer { return c.tp.Tracer(scopeName) }
func (c config) meter() metric.Meter  { return c.mp.Meter(scopeName) }

// call is what Client, Server and Factory share: one span per call and its
// duration.
type call struct {
	tracer    trace.Tracer
	name      string
	start     []trace.SpanStartOption
	duration  metric.Float64Histogram
	okRecord  []metric.RecordOption
	baseAttrs []attribute.KeyValue
}

func newCall(c config, kind trace.SpanKind, service, method string, hist metric.Float64Histogram) *call {
	full := service + "/" + method
	attrs := []attribute.KeyValue{systemName, semconv.RPCMethod(full)}
	return &call{
		tracer:    c.tracer(),
		name:      full,
		start:     []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(attrs...)},
		duration:  hist,
		okRecord:  []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))},
		baseAttrs: attrs,
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
				attrs := append(k.baseAttrs[:len(k.baseAttrs):len(k.baseAttrs)], semconv.ErrorTypeKey.String(errorType(err)))
				k.duration.Record(ctx, secs, metric.WithAttributes(attrs...))
			}
		}
		if err != nil && span.IsRecording() {
			span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
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
// span covers every attempt; Factory and RetryObserver show the attempts.
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

// Factory wraps f so that every call through an instance's endpoint is a
// span of kind CLIENT carrying the instance (kitnats.instance) and, beneath
// retry, the attempt's number (kitnats.attempt): a child of the Client span,
// and the span the transport propagates, so the server's span is its child.
// The io.Closer of f is returned unchanged, so a closer that reports
// lb.Available (a breaker's) keeps steering the balancer. Wrap the breaker's
// factory with it, so rejected attempts show too:
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

func annotateAttempt(instance string) func(context.Context, trace.Span) {
	return func(ctx context.Context, span trace.Span) {
		if n, ok := ctx.Value(attemptNumberKey).(int); ok {
			span.SetAttributes(attrInstance.String(instance), attrAttempt.Int(n))
			return
		}
		span.SetAttributes(attrInstance.String(instance))
	}
}

// RetryObserver returns an observer for retry.WithObserver that counts
// attempts (kitnats.rpc.client.attempts, with error.type when one failed),
// retries (kitnats.rpc.client.retries) and picks per instance
// (kitnats.lb.picks, with kitnats.instance), and adds an event
// (kitnats.attempt) per attempt to the span in the caller's context — the
// Client span — so retries are visible even without Factory's spans.
func RetryObserver(service, method string, opts ...Option) func(ctx context.Context, attempt int, instance string, delay time.Duration, err error) {
	c := newConfig(opts)
	m := c.meter()
	attempts, err := m.Int64Counter(attemptsMetric, metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts of outgoing RPC calls, the first included."))
	if err != nil {
		otel.Handle(err)
	}
	retries, err := m.Int64Counter(retriesMetric, metric.WithUnit("{retry}"),
		metric.WithDescription("Attempts of outgoing RPC calls after the first."))
	if err != nil {
		otel.Handle(err)
	}
	picks, err := m.Int64Counter(picksMetric, metric.WithUnit("{pick}"),
		metric.WithDescription("Instances picked by the balancer, per instance."))
	if err != nil {
		otel.Handle(err)
	}
	base := []attribute.KeyValue{systemName, semconv.RPCMethod(service + "/" + method)}
	baseOpt := metric.WithAttributeSet(attribute.NewSet(base...))
	with := func(kv ...attribute.KeyValue) metric.AddOption {
		return metric.WithAttributes(append(base[:len(base):len(base)], kv...)...)
	}
	return func(ctx context.Context, attempt int, instance string, delay time.Duration, err error) {
		if attempts.Enabled(ctx) {
			if err == nil {
				attempts.Add(ctx, 1, baseOpt)
			} else {
				attempts.Add(ctx, 1, with(semconv.ErrorTypeKey.String(errorType(err))))
			}
		}
		if attempt > 1 && retries.Enabled(ctx) {
			retries.Add(ctx, 1, baseOpt)
		}
		if instance != "" && picks.Enabled(ctx) {
			picks.Add(ctx, 1, with(attrInstance.String(instance)))
		}
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			attrs := []attribute.KeyValue{attrAttempt.Int(attempt), attrInstance.String(instance)}
			if delay > 0 {
				attrs = append(attrs, attrDelay.Float64(delay.Seconds()))
			}
			if err != nil {
				attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
			}
			span.AddEvent(attemptEvent, trace.WithAttributes(attrs...))
		}
	}
}

// BreakerStateHook returns a hook for breaker.WithStateChange that counts
// state changes (kitnats.breaker.state_changes, with the instance and both
// states, kitnats.breaker.from and kitnats.breaker.to) and keeps
// kitnats.breaker.open, the number of open breakers. States are named as
// gobreaker names them: "closed", "half-open", "open".
func BreakerStateHook(opts ...Option) func(name, from, to string) {
	c := newConfig(opts)
	m := c.meter()
	changes, err := m.Int64Counter(breakerChangeMetric, metric.WithUnit("{change}"),
		metric.WithDescription("Circuit breaker state changes, per instance."))
	if err != nil {
		otel.Handle(err)
	}
	open, err := m.Int64UpDownCounter(breakerOpenMetric, metric.WithUnit("{breaker}"),
		metric.WithDescription("Circuit breakers open now."))
	if err != nil {
		otel.Handle(err)
	}
	return func(name, from, to string) {
		ctx := context.Background()
		changes.Add(ctx, 1, metric.WithAttributes(
			attrInstance.String(name), attrBreakerFrom.String(from), attrBreakerTo.String(to)))
		switch {
		case to == "open":
			open.Add(ctx, 1)
		case from == "open":
			open.Add(ctx, -1)
		}
	}
}

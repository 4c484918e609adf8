package lb

import (
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// EndpointSetOption configures NewEndpointSet. NewEndpointSet, like go-kit's
// constructors, returns no error: an option given a value it cannot use
// (WithPanicThreshold(-1), say) is a programming error, and NewEndpointSet
// panics with a message naming the option.
type EndpointSetOption interface {
	applyEndpointSet(*setOptions) error
}

type setOption func(*setOptions) error

func (f setOption) applyEndpointSet(o *setOptions) error { return f(o) }

type setOptions struct {
	attributes        func(instance string) Attributes
	invalidateTimeout time.Duration
	invalidate        bool
	retryMin          time.Duration
	retryMax          time.Duration
	panicThreshold    float64
	drainTimeout      time.Duration
	meterProvider     metric.MeterProvider
	metricAttrs       []attribute.KeyValue
}

// defaultPanicThreshold is Envoy's default panic threshold.
const defaultPanicThreshold = 0.5

// defaultDrainTimeout bounds how long a departed instance's calls in flight
// keep its closer open: longer than natsrpc's default call timeout (10 s),
// so only a call that outlives its own deadline is cut off.
const defaultDrainTimeout = 30 * time.Second

func defaultSetOptions() setOptions {
	return setOptions{
		retryMin:       250 * time.Millisecond,
		retryMax:       30 * time.Second,
		panicThreshold: defaultPanicThreshold,
		drainTimeout:   defaultDrainTimeout,
	}
}

func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("kitnats/lb: invalid option %s: %s", option, fmt.Sprintf(format, args...))
}

// must panics with a refused option's error: the constructors of this
// package keep go-kit's shape, which has no error to return.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// WithAttributes tells the set how to learn an instance's attributes,
// overriding the instancer's Describer if it has one. fn is called for every
// instance each time a view is built (membership change, factory retry,
// Refresh), from the set's own goroutine; it must be fast and must not call
// back into the set. Without it, and over an instancer that is not a
// Describer, every instance is ACTIVE with no metadata. fn may not be nil.
func WithAttributes(fn func(instance string) Attributes) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		if fn == nil {
			return invalidOption("WithAttributes", "nil function")
		}
		o.attributes = fn
		return nil
	})
}

// WithInvalidateOnError makes the set drop its endpoints when the instancer
// reports an error (sd.Event.Err) and no good event follows within timeout
// (0 or more); picks then fail with an error that wraps both ErrNoInstances
// and the instancer's error. It is go-kit's sd.InvalidateOnError. By default
// the set keeps serving the last known instances, which is what you want
// when the discovery system, not the service, is down.
func WithInvalidateOnError(timeout time.Duration) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		if timeout < 0 {
			return invalidOption("WithInvalidateOnError", "timeout %v < 0", timeout)
		}
		o.invalidate, o.invalidateTimeout = true, timeout
		return nil
	})
}

// WithFactoryRetry sets the backoff for retrying instances whose sd.Factory
// failed: the first retry comes after initial (> 0), each further one
// doubles up to limit (≥ initial), each with ±50% jitter. Failed instances
// are also retried on every instancer event. Defaults: 250ms and 30s.
func WithFactoryRetry(initial, limit time.Duration) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		if initial <= 0 || limit < initial {
			return invalidOption("WithFactoryRetry", "initial %v, limit %v: want 0 < initial ≤ limit", initial, limit)
		}
		o.retryMin, o.retryMax = initial, limit
		return nil
	})
}

// WithPanicThreshold sets the share of the set's instances that may be
// unavailable (their closer's Available() is false: breakers open) before
// the set enters panic mode: while more than share of them are
// unavailable, the shared rules count every instance as available, so
// picks spread over all of them — ranked by tried and STANDBY only —
// rather than pile onto the few survivors. An instance whose breaker is
// open then answers its own error at once, and a retry moves on.
//
// The default, 0.5, is Envoy's panic threshold. 0 disables panic mode; 1
// or more can never engage it; a negative share is refused.
func WithPanicThreshold(share float64) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		if math.IsNaN(share) || share < 0 {
			return invalidOption("WithPanicThreshold", "share %v < 0", share)
		}
		o.panicThreshold = share
		return nil
	})
}

// WithMeterProvider sets where the set's metrics go (see the package
// documentation). The default is otel's global provider, at the time
// NewEndpointSet is called.
func WithMeterProvider(mp metric.MeterProvider) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		if mp == nil {
			return invalidOption("WithMeterProvider", "nil provider")
		}
		o.meterProvider = mp
		return nil
	})
}

// WithMetricAttributes labels the set's metrics, with the service it
// balances, say.
func WithMetricAttributes(attrs ...attribute.KeyValue) EndpointSetOption {
	return setOption(func(o *setOptions) error {
		o.metricAttrs = append(o.metricAttrs, attrs...)
		return nil
	})
}

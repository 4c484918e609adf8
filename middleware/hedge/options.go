package hedge

import (
	"errors"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// ErrInvalidOption is wrapped by every error New and NewBudget return for a
// bad option.
var ErrInvalidOption = errors.New("kitnats/hedge: invalid option")

// Defaults. A backup request goes out when the first attempt has taken
// longer than the 95th percentile of recent first attempts, never sooner
// than a millisecond (so that scheduler noise on a sub-millisecond service
// does not double its load) and after 10 ms until enough latencies have been
// seen. At most one call in ten is hedged, plus a burst of ten: with the
// delay at p95, about one call in twenty is slow enough to hedge when all
// is well, and the budget leaves as much again for the moment an instance
// fails — and no more, so that hedging cannot double the load of a service
// that is slow because it is overloaded.
const (
	defaultQuantile     = 0.95
	defaultMinDelay     = time.Millisecond
	defaultInitialDelay = 10 * time.Millisecond
	defaultBudgetRatio  = 0.1
	defaultBudgetBurst  = 10
)

// Option configures New. Each one validates its input and New reports the
// first error.
type Option interface {
	apply(*options) error
}

type option func(*options) error

func (f option) apply(o *options) error { return f(o) }

func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidOption, option, fmt.Sprintf(format, args...))
}

type options struct {
	fixed      time.Duration // > 0: a fixed delay
	q          float64
	minDelay   time.Duration
	initial    time.Duration
	budget     *Budget
	budgetSet  bool
	mp         metric.MeterProvider
	attributes []attribute.KeyValue
}

// WithDelay sends the backup request a fixed d after the first attempt,
// instead of tracking a latency quantile.
func WithDelay(d time.Duration) Option {
	return option(func(o *options) error {
		if d <= 0 {
			return invalidOption("WithDelay", "%v <= 0", d)
		}
		o.fixed = d
		return nil
	})
}

// WithQuantile sends the backup request once the first attempt has taken
// longer than the q-quantile of the latencies of recent first attempts that
// succeeded (the last 1,024), and never sooner than minDelay. The default is
// WithQuantile(0.95, time.Millisecond). Hedging at the q-quantile
// hedges about 1-q of the calls while the service is healthy: keep the
// budget's ratio above that.
func WithQuantile(q float64, minDelay time.Duration) Option {
	return option(func(o *options) error {
		if math.IsNaN(q) || q <= 0 || q >= 1 {
			return invalidOption("WithQuantile", "quantile %v not in (0, 1)", q)
		}
		if minDelay < 0 {
			return invalidOption("WithQuantile", "min delay %v < 0", minDelay)
		}
		o.fixed, o.q, o.minDelay = 0, q, minDelay
		return nil
	})
}

// WithInitialDelay is the delay of a tracked quantile before enough
// latencies have been seen to compute one (64). Default 10ms.
func WithInitialDelay(d time.Duration) Option {
	return option(func(o *options) error {
		if d <= 0 {
			return invalidOption("WithInitialDelay", "%v <= 0", d)
		}
		o.initial = d
		return nil
	})
}

// WithBudget shares b between balancers, or replaces the default budget
// (a tenth of the calls plus a burst of 10, per balancer). A nil b disables
// the budget: every call still slow after the delay is hedged.
func WithBudget(b *Budget) Option {
	return option(func(o *options) error {
		o.budget, o.budgetSet = b, true
		return nil
	})
}

// WithMeterProvider sets where the counters go (see the package
// documentation). The default is otel's global provider, at the time New is
// called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return option(func(o *options) error {
		if mp == nil {
			return invalidOption("WithMeterProvider", "nil provider")
		}
		o.mp = mp
		return nil
	})
}

// WithMethod labels the counters with rpc.system.name "nats" and rpc.method
// "{service}/{method}", as the tracing package labels its metrics: one
// hedging balancer serves one method.
func WithMethod(service, method string) Option {
	return option(func(o *options) error {
		o.attributes = append(o.attributes,
			semconv.RPCSystemNameKey.String("nats"),
			semconv.RPCMethod(service+"/"+method))
		return nil
	})
}

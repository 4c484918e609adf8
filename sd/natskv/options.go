package natskv

import (
	"time"

	"go.opentelemetry.io/otel/metric"
)

// Defaults shared by Registrar and Instancer.
const (
	// DefaultHeartbeat is how often a Registrar rewrites its record, as
	// AegisSDK does.
	DefaultHeartbeat = 10 * time.Second
	// DefaultPollInterval is how often a polling Instancer re-lists, the
	// AegisSDK's cache TTL.
	DefaultPollInterval = 10 * time.Second
	// DefaultWatchHeartbeat is the idle heartbeat of the watch's consumer: a
	// lost consumer is noticed after two missed beats.
	DefaultWatchHeartbeat = 500 * time.Millisecond
)

// Option configures a Registrar or an Instancer. Both take the same option
// type, so a layout or heartbeat can be set once and passed to both; options
// that do not concern a constructor are ignored by it.
type Option func(*options)

type options struct {
	layout         Layout
	heartbeat      time.Duration
	ttl            time.Duration
	staleAfter     time.Duration
	format         func(Instance) string
	excludeStandby bool
	polling        bool
	pollInterval   time.Duration
	meter          metric.MeterProvider
	onChange       func(Change)
	watchHeartbeat time.Duration
	retryWait      time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		layout:         LayoutDotted,
		heartbeat:      DefaultHeartbeat,
		format:         func(i Instance) string { return i.InstanceID },
		watchHeartbeat: DefaultWatchHeartbeat,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.ttl <= 0 {
		o.ttl = 3 * o.heartbeat
	}
	if o.pollInterval <= 0 {
		o.pollInterval = DefaultPollInterval
	}
	if o.retryWait <= 0 {
		o.retryWait = min(o.heartbeat/4, time.Second)
	}
	return o
}

// WithLayout selects the key layout (default LayoutDotted). Use LayoutAegis to
// share a bucket with Python AegisSDK services.
func WithLayout(l Layout) Option { return func(o *options) { o.layout = l } }

// WithHeartbeat sets the Registrar's heartbeat interval (default 10 s). An
// Instancer derives its default staleness threshold from it (3 heartbeats),
// so pass the same value to both.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.heartbeat = d
		}
	}
}

// WithTTL sets the per-write TTL a Registrar asks for on buckets that support
// it (default 3 heartbeats; the server counts whole seconds, at least 1 s).
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithStaleAfter sets how old an instance's last heartbeat may be before an
// Instancer stops offering it. It is what notices a crash on a bucket without
// expiry markers. The default is 3 heartbeats; on a bucket with markers it is
// 3 heartbeats rounded up to a whole second plus one, so the server's expiry
// (counted in whole seconds) normally comes first. Negative disables the
// check.
func WithStaleAfter(d time.Duration) Option { return func(o *options) { o.staleAfter = d } }

// WithFormatter sets the string an instance becomes in sd.Event.Instances
// and in Lookup (default: the instance ID). A formatter that reads an address
// from metadata lets the same registry serve HTTP or gRPC clients. Instances
// formatted to the empty string are left out.
func WithFormatter(f func(Instance) string) Option {
	return func(o *options) {
		if f != nil {
			o.format = f
		}
	}
}

// WithExcludeStandby leaves STANDBY instances out of an Instancer's healthy set.
func WithExcludeStandby() Option { return func(o *options) { o.excludeStandby = true } }

// WithPolling makes an Instancer re-list the bucket every interval (0: the
// default 10 s) instead of watching it: the AegisSDK's cached discovery, for
// deployments that do not want a long-lived consumer.
func WithPolling(interval time.Duration) Option {
	return func(o *options) {
		o.polling = true
		o.pollInterval = interval
	}
}

// WithMeterProvider sets where metrics go (default otel.GetMeterProvider()).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.meter = mp } }

// WithChangeFunc is told of every change to an instance an Instancer sees:
// added, updated, deleted cleanly, purged, expired on the server, gone stale,
// skipped as malformed. A change is told before subscribers get the event it
// causes (for the initial values and a rebuilt watch, just after). It runs on
// the Instancer's goroutines, possibly two at once, and must not block.
func WithChangeFunc(f func(Change)) Option { return func(o *options) { o.onChange = f } }

// WithWatchHeartbeat sets the idle heartbeat of the watch's consumer (default
// 500 ms). Two missed beats count as a lost watch, which the Instancer
// rebuilds at once.
func WithWatchHeartbeat(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.watchHeartbeat = d
		}
	}
}

// WithRetryWait sets how soon a failed write or watch is retried (default a
// quarter heartbeat, at most 1 s).
func WithRetryWait(d time.Duration) Option { return func(o *options) { o.retryWait = d } }

package natskv

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-kit/log"
	"go.opentelemetry.io/otel/metric"

	"github.com/aegis-sdk/kitnats/internal/registry"
)

// The defaults the options document.
const (
	// defaultWatchHeartbeat is the idle heartbeat of the watch's consumer: a
	// lost consumer is noticed after two missed beats.
	defaultWatchHeartbeat = 500 * time.Millisecond
	// defaultReadyWait is how long NewInstancer waits for the service's
	// current set at most. It normally has it within a millisecond; the
	// wait only matters when the registry cannot be read.
	defaultReadyWait = 2 * time.Second
)

// ErrInvalidOption is matched (errors.Is) by the error NewRegistrar or
// NewInstancer returns for an option value it cannot use: values are
// refused, never clamped.
var ErrInvalidOption = registry.ErrInvalidOption

var errNilBucket = errors.New("natskv: nil bucket")

// RegistrarOption configures a Registrar. Options of both constructors are
// of type Option, which is also a RegistrarOption.
type RegistrarOption interface {
	applyRegistrar(*registrarOptions) error
}

// InstancerOption configures an Instancer. Options of both constructors are
// of type Option, which is also an InstancerOption; an option that only
// concerns an Instancer (WithPolling, WithFormatter...) is an
// InstancerOption alone, so passing it to NewRegistrar does not compile.
type InstancerOption interface {
	applyInstancer(*instancerOptions) error
}

// Option configures both a Registrar and an Instancer: the settings both
// sides of a bucket must agree on (WithLayout, WithHeartbeat, WithTTL).
// Set them once and pass them to both constructors; Options bundles
// several into one.
type Option interface {
	RegistrarOption
	InstancerOption
}

// commonOptions are the settings of an Option.
type commonOptions struct {
	layout    Layout
	heartbeat time.Duration
	ttl       time.Duration // 0: not set, derived from the heartbeat
	retryWait time.Duration // 0: not set, derived from the heartbeat
}

type registrarOptions struct {
	commonOptions
	zone             string // "": not set
	instanceSubjects bool
	addrs            map[string]string // WithAddress: transport → address (address.go)
}

type instancerOptions struct {
	commonOptions
	staleAfter     time.Duration // 0: derived from the bucket and the TTL; < 0: never stale
	format         func(Instance) string
	excludeStandby bool
	polling        bool
	pollInterval   time.Duration
	meter          metric.MeterProvider // nil: otel.GetMeterProvider()
	onChange       func(Change)
	watchHeartbeat time.Duration // 0: not set, defaultWatchHeartbeat
	readyWait      time.Duration // < 0: not set, defaultReadyWait
	strict         *bool         // nil: not set, strict on LayoutAegis only
	guardShare     float64       // < 0: not set, registry.DefaultGuardShare; 0: no guard
}

// commonOption is an Option: it sets commonOptions, whichever constructor
// it is given to.
type commonOption func(*commonOptions) error

func (f commonOption) applyRegistrar(o *registrarOptions) error { return f(&o.commonOptions) }
func (f commonOption) applyInstancer(o *instancerOptions) error { return f(&o.commonOptions) }

type instancerOption func(*instancerOptions) error

type registrarOption func(*registrarOptions) error

func (f registrarOption) applyRegistrar(o *registrarOptions) error { return f(o) }

func (f instancerOption) applyInstancer(o *instancerOptions) error { return f(o) }

func invalid(option string, format string, args ...any) error {
	return registry.Invalid(option, format, args...)
}

// configure is the preamble NewRegistrar and NewInstancer share: a bucket,
// the options applied in order (nil ones are skipped), the rules between
// shared options, a logger.
func configure[T any, O any](b *Bucket, logger log.Logger, opts []T, apply func(T, *O) error, o *O, c *commonOptions) (log.Logger, error) {
	if b == nil {
		return nil, errNilBucket
	}
	for _, opt := range opts {
		if any(opt) == nil {
			continue
		}
		if err := apply(opt, o); err != nil {
			return nil, err
		}
	}
	if err := c.liveness(0).Check(); err != nil {
		return nil, err
	}
	if c.retryWait == 0 {
		c.retryWait = min(c.heartbeat/4, time.Second)
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return logger, nil
}

func defaultCommon() commonOptions {
	return commonOptions{layout: LayoutDotted, heartbeat: registry.DefaultHeartbeat}
}

// liveness is the settings' timing, with a staleness threshold.
func (c *commonOptions) liveness(staleAfter time.Duration) registry.Liveness {
	return registry.Liveness{Heartbeat: c.heartbeat, TTL: c.ttl, StaleAfter: staleAfter}
}

// Options bundles several Options into one, to pass the same settings to a
// Registrar and an Instancer:
//
//	liveness := natskv.Options(natskv.WithHeartbeat(time.Second), natskv.WithTTL(3*time.Second))
//	natskv.NewRegistrar(b, inst, logger, liveness)
//	natskv.NewInstancer(b, service, logger, liveness, natskv.WithExcludeStandby())
//
// They apply in order; nil ones are skipped.
func Options(opts ...Option) Option {
	return commonOption(func(o *commonOptions) error {
		for _, opt := range opts {
			if opt == nil {
				continue
			}
			// Every Option is a commonOption: this package makes them all.
			if err := opt.(commonOption)(o); err != nil {
				return err
			}
		}
		return nil
	})
}

// WithLayout selects the key layout (default LayoutDotted). Use LayoutAegis
// to share a bucket with Python AegisSDK services. Registrars and Instancers
// of a bucket must agree on it. An unknown Layout is an error.
func WithLayout(l Layout) Option {
	return commonOption(func(o *commonOptions) error {
		if !l.reg().Valid() {
			return invalid("WithLayout", "unknown layout %v", l)
		}
		o.layout = l
		return nil
	})
}

// WithHeartbeat sets how often a Registrar rewrites its record (default
// 10 s, as AegisSDK). An Instancer derives its default TTL, and from it its
// staleness threshold, from the heartbeat: pass the same value to both. It
// must be positive.
func WithHeartbeat(d time.Duration) Option {
	return commonOption(func(o *commonOptions) error {
		if err := registry.CheckHeartbeat(d); err != nil {
			return err
		}
		o.heartbeat = d
		return nil
	})
}

// WithTTL sets how long a record outlives its last write (default 3
// heartbeats). A Registrar asks the server for it on every write to a bucket
// that takes a per-write TTL (Capabilities.MsgTTL), rounded up to whole
// seconds, the server's unit; an Instancer derives its default staleness
// threshold from it (see WithStaleAfter), so pass the same value to both.
// It must be at least 1 s and longer than the heartbeat.
func WithTTL(d time.Duration) Option {
	return commonOption(func(o *commonOptions) error {
		if err := registry.CheckTTL(d); err != nil {
			return err
		}
		o.ttl = d
		return nil
	})
}

// withRetryWait sets how soon a Registrar retries a failed write and the
// longest an Instancer waits before rebuilding a failed watch (it starts
// sooner and backs off to it; a shared watch uses the shortest wait of its
// Instancers). Default: a quarter heartbeat, at most 1 s.
func withRetryWait(d time.Duration) Option {
	return commonOption(func(o *commonOptions) error {
		if d <= 0 {
			return invalid("WithRetryWait", "%v is not positive", d)
		}
		o.retryWait = d
		return nil
	})
}

// WithStaleAfter sets how old an instance's record may be before an
// Instancer stops offering it. The age is the time since the server stored
// the record's latest write (its stream timestamp, or when a live change
// reached the Instancer), not the lastHeartbeat the record carries: a peer
// with a wrong clock is neither kept nor dropped for it. It is what notices
// a crash on a bucket without expiry markers. The default (also what 0
// asks for) is the TTL (3 heartbeats unless WithTTL says otherwise); on a
// bucket with markers it is the TTL rounded up to a whole second plus one,
// so that the server's expiry normally comes first. A negative value
// disables the check.
func WithStaleAfter(d time.Duration) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		o.staleAfter = d
		return nil
	})
}

// WithStrictRecords sets whether an Instancer reads records as the Python
// AegisSDK reader does (strict) or as leniently as it can. Strict decoding
// accepts camelCase or snake_case field names and a heartbeat time with any
// offset ("Z" too), and refuses what the AegisSDK reader refuses: an unknown
// top-level key, a null or non-object metadata, a version that is not
// MAJOR.MINOR.PATCH, a field of the wrong type. Refused records are skipped
// and counted (ChangeSkipped), so that a kitnats client and a Python client
// of the same bucket see the same fleet. Lenient decoding ignores unknown
// keys, reads a null metadata as empty and takes any non-empty version.
// Both refuse records over 64 KiB. Default: strict on LayoutAegis, lenient
// on LayoutDotted. Instancers share a watch only if they agree on it.
func WithStrictRecords(strict bool) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		o.strict = &strict
		return nil
	})
}

// WithStaleGuard sets the mass-removal guard: when the registry itself looks
// unhealthy, staleness stops removing instances. It looks unhealthy when
// more than share of a service's live instances (and at least 2) go stale
// at the same moment — their last writes within a third of the staleness
// threshold of each other, as when a stream leader election or an outage
// stops every heartbeat at once — and just after a lost watch is rebuilt;
// while the watch is down nothing goes stale anyway. The guard holds for at
// most the staleness threshold (WithStaleAfter) from when it engaged, then
// staleness applies again, so a fleet that really died is dropped in the
// end. Explicit deletes and expiry markers remove at once, guard or not.
// Engaging and disengaging is logged and counted (the up-down counter
// kitnats.registry.stale_guard.engaged). Default 0.5 (Envoy's panic
// threshold); 0 disables the guard. It must be in [0, 1].
func WithStaleGuard(share float64) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if !(share >= 0 && share <= 1) {
			return invalid("WithStaleGuard", "share %v is not in [0, 1]", share)
		}
		o.guardShare = share
		return nil
	})
}

// WithFormatter sets the string an instance becomes in sd.Event.Instances
// and in Lookup and Describe (default: the instance ID). A formatter that
// reads an address from metadata lets the same registry serve HTTP or gRPC
// clients. Instances formatted to the empty string are left out. It must not
// be nil.
func WithFormatter(f func(Instance) string) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if f == nil {
			return invalid("WithFormatter", "nil func")
		}
		o.format = f
		return nil
	})
}

// WithExcludeStandby leaves STANDBY instances out of an Instancer's healthy
// set.
func WithExcludeStandby() InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		o.excludeStandby = true
		return nil
	})
}

// WithPolling makes an Instancer re-list the bucket every interval instead of
// watching it: the AegisSDK's cached discovery, for deployments that do not
// want a long-lived consumer. The interval must be positive; the AegisSDK's
// cache TTL is 10 s.
func WithPolling(interval time.Duration) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if interval <= 0 {
			return invalid("WithPolling", "interval %v is not positive", interval)
		}
		o.polling = true
		o.pollInterval = interval
		return nil
	})
}

// WithMeterProvider sets where an Instancer's metrics go (default
// otel.GetMeterProvider()): per service, the healthy instances
// (kitnats.registry.instances), the changes seen by kind
// (kitnats.registry.watch.events), malformed records skipped
// (kitnats.registry.skipped), instances dropped as stale
// (kitnats.registry.stale_dropped), watches rebuilt
// (kitnats.registry.watch.restarts), re-list durations in polling mode
// (kitnats.registry.list.duration) and whether the stale guard holds
// (kitnats.registry.stale_guard.engaged). It must not be nil.
func WithMeterProvider(mp metric.MeterProvider) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if mp == nil {
			return invalid("WithMeterProvider", "nil provider")
		}
		o.meter = mp
		return nil
	})
}

// WithChangeFunc is told of every change to an instance an Instancer sees:
// added, updated, deleted cleanly, purged, expired on the server, gone stale,
// skipped as malformed. A new Instancer is told of the service's records as
// a fresh watch would tell it (added, skipped), even when the service was
// watched already. A change is told before subscribers get the event it
// causes. It runs on the goroutines of the watch, which every Instancer of
// the bucket shares, possibly two at once, and must not block — a blocked
// one holds up every Instancer of the watch — not even on the Instancer's
// Refresh, Register or Stop. It must not be nil.
func WithChangeFunc(f func(Change)) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if f == nil {
			return invalid("WithChangeFunc", "nil func")
		}
		o.onChange = f
		return nil
	})
}

// withWatchHeartbeat sets the idle heartbeat of the watch's consumer
// (default 500 ms). Two missed beats count as a lost watch, which is
// rebuilt at once. Instancers share a watch only if they agree on it.
func withWatchHeartbeat(d time.Duration) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if d <= 0 {
			return invalid("WithWatchHeartbeat", "%v is not positive", d)
		}
		o.watchHeartbeat = d
		return nil
	})
}

// WithReadyWait sets how long NewInstancer waits for the service's current
// set at most (default 2 s; it normally has it within a millisecond). 0
// returns at once: subscribers get the set when it is in. It must not be
// negative. NewInstancerContext ignores it.
func WithReadyWait(d time.Duration) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if d < 0 {
			return invalid("WithReadyWait", "%v is negative", d)
		}
		o.readyWait = d
		return nil
	})
}

// WithZone makes a Registrar write zone into its record's metadata under
// wire.MetadataZone ("zone"), where lb/zone's balancers read it; it overrides a
// "zone" the Instance's own Metadata carries. The zone must be non-empty,
// at most 255 bytes, valid UTF-8 and free of control characters.
func WithZone(zone string) RegistrarOption {
	return registrarOption(func(o *registrarOptions) error {
		if err := validateZone(zone); err != nil {
			return invalid("WithZone", "%v", err)
		}
		o.zone = zone
		return nil
	})
}

// WithInstanceSubjects makes a Registrar write wire.MetadataRPC: wire.RPCInstance into
// its record, saying that the instance is served by a natsrpc.Service (which
// answers instance subjects). Pass it for instances that run one; without it
// clients that follow the metadata reach the instance through the
// service-wide queue subject only.
func WithInstanceSubjects() RegistrarOption {
	return registrarOption(func(o *registrarOptions) error {
		o.instanceSubjects = true
		return nil
	})
}

func validateZone(z string) error {
	switch {
	case z == "":
		return errors.New("empty zone")
	case len(z) > 255:
		return fmt.Errorf("zone of %d bytes, over 255", len(z))
	case !utf8.ValidString(z):
		return errors.New("zone is not valid UTF-8")
	}
	for _, r := range z {
		if unicode.IsControl(r) {
			return errors.New("zone contains a control character")
		}
	}
	return nil
}

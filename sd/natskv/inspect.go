package natskv

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// This file is for tools that look at a registry bucket from outside, as an
// operator does (cmd/kitnats): what a key names, what a record means to a
// client, how long a write has left. It says what an Instancer would
// conclude without running one.

// ParseLayout reads a layout's name as Layout.String spells it: "dotted" or
// "aegis".
func ParseLayout(s string) (Layout, error) {
	for _, l := range []Layout{LayoutDotted, LayoutAegis} {
		if s == l.String() {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown layout %q (want dotted or aegis)", ErrInvalidOption, s)
}

// Parse takes a key of the layout apart into the service whose Instancer
// would hold it and the instance part of the key. ok is false for a key no
// Instancer of the layout holds: of the other layout, deeper than an
// instance key, or naming an invalid service. The instance part may still be
// an invalid name: an Instancer then skips the record (DecodeRecord says
// why).
func (l Layout) Parse(key string) (service, instance string, ok bool) {
	switch l {
	case LayoutDotted:
		rest, found := strings.CutPrefix(key, keyPrefix+".")
		if !found {
			return "", "", false
		}
		service, instance, found = strings.Cut(rest, ".")
		if !found || strings.Contains(instance, ".") || l.validateService(service) != nil {
			return "", "", false
		}
		return service, instance, true
	case LayoutAegis:
		rest, found := strings.CutPrefix(key, keyPrefix+"__")
		if !found {
			return "", "", false
		}
		// Service names of the layout do not end in '_', nor do instance
		// IDs start with it, so a run of underscores splits at its last
		// two ("svc___x" is no key of "svc" nor of "svc_"); among the
		// splits that leave a valid service, prefer the one that leaves a
		// valid instance ID, as the Instancer of that service reads it.
		for i := strings.Index(rest, "__"); i >= 0 && i+2 <= len(rest); i++ {
			if rest[i] != '_' || rest[i+1] != '_' {
				continue
			}
			s, in := rest[:i], rest[i+2:]
			if l.validateService(s) != nil || strings.Contains(in, "__") || strings.HasPrefix(in, "_") {
				continue
			}
			if !ok || l.validateInstance(in) == nil {
				service, instance, ok = s, in, true
			}
			if l.validateInstance(in) == nil {
				break
			}
		}
		return service, instance, ok
	}
	return "", "", false
}

// DecodeRecord reads the record stored under key as an Instancer does by
// default: it must decode (DecodeInstanceStrict on LayoutAegis,
// DecodeInstance on LayoutDotted; see WithStrictRecords) and name the service and instance its key
// names. The error says why an Instancer would skip it; it matches
// ErrInvalidRecord, wire.ErrInvalidName or, for a key outside the layout,
// ErrKeyMismatch.
func DecodeRecord(l Layout, key string, data []byte) (Instance, error) {
	service, instance, ok := l.Parse(key)
	if !ok {
		return Instance{}, &RecordError{Err: fmt.Errorf("%w: %s is not a key of the %s layout", ErrKeyMismatch, key, l)}
	}
	inst, err := decodeInstance(data, l == LayoutAegis)
	if err != nil {
		return Instance{}, err
	}
	if inst.ServiceName != service || inst.InstanceID != instance {
		return Instance{}, &RecordError{Err: fmt.Errorf("%w: key %s holds %s/%s", ErrKeyMismatch, key, inst.ServiceName, inst.InstanceID)}
	}
	return inst, nil
}

// Health is an Instancer's judgement of one decoded record.
type Health int

const (
	// HealthActive: offered to balancers, and preferred.
	HealthActive Health = iota
	// HealthStandby: offered, STANDBY; balancers pick it only when no
	// ACTIVE instance can take the request.
	HealthStandby
	// HealthExcluded: STANDBY, and the Instancer is WithExcludeStandby.
	HealthExcluded
	// HealthUnhealthy: declared UNHEALTHY by its owner (draining, or
	// failing its own checks); not offered.
	HealthUnhealthy
	// HealthStale: the last write is older than the stale threshold (a
	// crashed owner, on a bucket without expiry markers, or one whose
	// marker is late); not offered.
	HealthStale
)

// String is the judgement in one word: active, standby, excluded,
// unhealthy, stale.
func (h Health) String() string {
	switch h {
	case HealthActive:
		return "active"
	case HealthStandby:
		return "standby"
	case HealthExcluded:
		return "excluded"
	case HealthUnhealthy:
		return "unhealthy"
	case HealthStale:
		return "stale"
	}
	return "Health(" + strconv.Itoa(int(h)) + ")"
}

// Offered reports whether an Instancer publishes the instance to its
// subscribers (balancers).
func (h Health) Offered() bool { return h == HealthActive || h == HealthStandby }

// Judge applies an Instancer's rules to records read from outside it.
type Judge struct {
	staleAfter     time.Duration
	excludeStandby bool
}

// NewJudge returns the judgement of an Instancer of bucket b made with opts
// (the same WithHeartbeat, WithTTL, WithStaleAfter, WithExcludeStandby its
// clients use; defaults otherwise). Options are refused as NewInstancer
// refuses them.
func NewJudge(b *Bucket, opts ...InstancerOption) (*Judge, error) {
	o := instancerOptions{commonOptions: defaultCommon()}
	if _, err := configure(b, nil, opts, InstancerOption.applyInstancer, &o, &o.commonOptions); err != nil {
		return nil, err
	}
	if o.staleAfter == 0 {
		o.staleAfter = staleDefault(b, &o.commonOptions)
	}
	return &Judge{staleAfter: o.staleAfter, excludeStandby: o.excludeStandby}, nil
}

// StaleAfter is how old a record's last write may be before it is stale; 0
// or less: never.
func (j *Judge) StaleAfter() time.Duration { return j.staleAfter }

// Health judges inst, whose last write the server stored at written, as of
// now. Staleness counts from the server's time, as an Instancer's does (a
// writer's clock does not matter), and comes before the declared status: a
// stale record says nothing current about its owner.
func (j *Judge) Health(inst Instance, written, now time.Time) Health {
	switch {
	case j.staleAfter > 0 && now.Sub(written) > j.staleAfter:
		return HealthStale
	case !inst.Healthy():
		return HealthUnhealthy
	case inst.Status == StatusStandby && j.excludeStandby:
		return HealthExcluded
	case inst.Status == StatusStandby:
		return HealthStandby
	}
	return HealthActive
}

// MsgTTL reads the per-message TTL a write asked the server for (the
// Nats-TTL header a Registrar sets on buckets with Capabilities.MsgTTL): a
// Go duration ("30s") or whole seconds ("30"). ok is false when the message
// has none, or one that never expires ("never"), or one that does not parse.
// The record expires at the message's time plus the TTL.
func MsgTTL(h nats.Header) (ttl time.Duration, ok bool) {
	v := h.Get(jetstream.MsgTTLHeader)
	if v == "" || v == "never" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

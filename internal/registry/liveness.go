package registry

import (
	"fmt"
	"time"
)

// The figures both sides of a bucket derive their timing from.
const (
	// DefaultHeartbeat is how often a Registrar rewrites its record, as
	// AegisSDK does.
	DefaultHeartbeat = 10 * time.Second
	// DefaultGuardShare is the share of a service's live instances that may
	// go stale at once before the mass-removal guard holds them: Envoy's
	// default panic threshold.
	DefaultGuardShare = 0.5
)

// Invalid is the error of a setting a constructor cannot use: it matches
// ErrInvalidOption and names the option.
func Invalid(option string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidOption, option, fmt.Sprintf(format, args...))
}

// Liveness is how a fleet keeps its records alive, as registrars and
// clients must agree on it.
type Liveness struct {
	Heartbeat time.Duration // how often a registrar rewrites its record
	TTL       time.Duration // how long a record outlives its last write; 0: 3 heartbeats
	// StaleAfter is how old a record may be before a client stops offering
	// it; 0: the default (StaleDefault), < 0: never.
	StaleAfter time.Duration
}

// CheckHeartbeat is the rule for a heartbeat: positive.
func CheckHeartbeat(d time.Duration) error {
	if d <= 0 {
		return Invalid("WithHeartbeat", "%v is not positive", d)
	}
	return nil
}

// CheckTTL is the rule for a TTL on its own: at least the server's
// resolution.
func CheckTTL(d time.Duration) error {
	if d < time.Second {
		return Invalid("WithTTL", "%v is under 1s, the server's TTL resolution", d)
	}
	return nil
}

// Check applies the rules between the settings: a TTL set must outlast the
// heartbeat, or the record would expire between writes.
func (l Liveness) Check() error {
	if err := CheckHeartbeat(l.Heartbeat); err != nil {
		return err
	}
	if l.TTL != 0 {
		if err := CheckTTL(l.TTL); err != nil {
			return err
		}
		if l.TTL <= l.Heartbeat {
			return Invalid("WithTTL", "%v does not outlast the heartbeat (%v): the record would expire between writes", l.TTL, l.Heartbeat)
		}
	}
	return nil
}

// EffectiveTTL is the TTL set, or 3 heartbeats.
func (l Liveness) EffectiveTTL() time.Duration {
	if l.TTL > 0 {
		return l.TTL
	}
	return 3 * l.Heartbeat
}

// Stale is the staleness threshold a client applies on a bucket with or
// without expiry markers: StaleAfter when set (≤ 0: never), else the TTL;
// with markers, the TTL rounded up to whole seconds (the server's unit)
// plus one, so that the server's expiry normally comes first.
func (l Liveness) Stale(markers bool) time.Duration {
	if l.StaleAfter != 0 {
		return l.StaleAfter
	}
	d := l.EffectiveTTL()
	if markers {
		d = WholeSeconds(d) + time.Second
	}
	return d
}

// WholeSeconds rounds d up to whole seconds, at least one: the server's TTL
// unit.
func WholeSeconds(d time.Duration) time.Duration {
	return max((d+time.Second-1)/time.Second*time.Second, time.Second)
}

// TickEvery is the period of the clock that judges staleness at threshold
// staleAfter: a quarter of it, between 10 ms and 1 s.
func TickEvery(staleAfter time.Duration) time.Duration {
	return min(max(staleAfter/4, 10*time.Millisecond), time.Second)
}

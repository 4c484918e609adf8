package breaker

import (
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"
)

// FactoryOption configures Factory. New and Factory return no error, as
// go-kit's constructors do not: an option given a value it cannot use (a
// nil connection, a negative grace) is a programming error, and they panic
// with a message naming the option.
type FactoryOption interface {
	applyFactory(*config) error
}

// Option configures New and Factory: every option but WithCorrelation,
// which concerns the breakers of one Factory together.
type Option interface {
	FactoryOption
	applyNew(*config) error
}

type option func(*config) error

func (f option) applyNew(c *config) error     { return f(c) }
func (f option) applyFactory(c *config) error { return f(c) }

type factoryOption func(*config) error

func (f factoryOption) applyFactory(c *config) error { return f(c) }

type config struct {
	settings gobreaker.Settings
	business func(error) bool
	hook     func(name, from, to string)
	conn     *nats.Conn
	grace    time.Duration
	share    float64
	window   time.Duration
}

func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("kitnats/breaker: invalid option %s: %s", option, fmt.Sprintf(format, args...))
}

// WithSettings sets gobreaker's settings: trip policy (ReadyToTrip), the
// open period before a half-open probe (Timeout), how many probes pass
// (MaxRequests) and the window of the counts (Interval, BucketPeriod).
// Fields left zero take this package's defaults (see the package
// documentation), not gobreaker's: a zero Timeout is 5s, not a minute; a
// zero Interval is 10s in buckets of 1s (a negative one never clears the
// counts). Name is overridden by New's name and by Factory's instance.
// IsExcluded and IsSuccessful, when set, are consulted besides this
// package's own rules; OnStateChange is called before WithStateChange's
// hook.
func WithSettings(st gobreaker.Settings) Option {
	return option(func(c *config) error {
		c.settings = st
		return nil
	})
}

// WithBusinessErrors sets the predicate that tells business errors — answers
// the server gave deliberately, which prove the instance healthy — from
// failures. Business errors count as successes. The default is
// IsBusinessError; nil counts every error as a failure.
func WithBusinessErrors(pred func(error) bool) Option {
	return option(func(c *config) error {
		c.business = pred
		return nil
	})
}

// WithStateChange calls hook on every state change of a breaker, with the
// breaker's name — the instance, for breakers made by Factory — and the
// states as gobreaker names them: "closed", "half-open", "open". The
// tracing package's BreakerStateHook is one. It runs under the breaker's
// lock: it must not block or call the breaker.
func WithStateChange(hook func(name, from, to string)) Option {
	return option(func(c *config) error {
		if hook == nil {
			return invalidOption("WithStateChange", "nil hook")
		}
		c.hook = hook
		return nil
	})
}

// WithConn tells the breakers which NATS connection their calls use, so that
// a fault of the connection is not blamed on the instances. A failed call is
// not counted when the connection is not connected at the time, when it
// changed status (disconnected, reconnected) while the call ran — a request
// sent before a disconnect can fail after the reconnection — or when the
// call failed within the reconnect grace after the connection came back
// (WithReconnectGrace). The connection is watched by one goroutine, shared
// by every breaker of the connection, which ends when the connection
// closes. Calls that succeed pay one atomic load for it.
func WithConn(nc *nats.Conn) Option {
	return option(func(c *config) error {
		if nc == nil {
			return invalidOption("WithConn", "nil connection")
		}
		c.conn = nc
		return nil
	})
}

// defaultReconnectGrace outlasts nats.go's default reconnect wait (2 s, with
// jitter): the client is often back on the server before the instances' own
// connections are, and until they have re-subscribed their requests find no
// responders or, caught mid-handshake, no reply.
const defaultReconnectGrace = 3 * time.Second

// WithReconnectGrace sets how long after the connection of WithConn comes
// back failures are still not counted (default 3s): the instances' own
// connections are reconnecting too, and a request may find no responders
// until they have re-subscribed. 0 disables the grace; a negative d is
// refused.
func WithReconnectGrace(d time.Duration) Option {
	return option(func(c *config) error {
		if d < 0 {
			return invalidOption("WithReconnectGrace", "%v < 0", d)
		}
		c.grace = d
		return nil
	})
}

// Defaults of the correlation rule: with three instances, all three.
const (
	defaultCorrelationShare  = 0.75
	defaultCorrelationWindow = time.Second
)

// WithCorrelation sets the correlation rule of Factory's breakers: a failure
// is not counted against its instance when, counting it, at least
// max(2, ⌈share × instances⌉) of the Factory's instances failed the same way
// (a timeout, no responders, an error reply, anything else) within window;
// instances whose breaker is open are not counted.
// When most instances fail at once the fault is the caller's, its
// network's or a shared dependency's, and ejecting instances would take
// healthy ones out of rotation; a single failing instance still trips. The
// defaults are 0.75 and 1s; share is from 0 to 1, and a share or window of
// 0 disables the rule.
func WithCorrelation(share float64, window time.Duration) FactoryOption {
	return factoryOption(func(c *config) error {
		if math.IsNaN(share) || share < 0 || share > 1 || window < 0 {
			return invalidOption("WithCorrelation", "share %v, window %v: want a share in [0, 1] and a window ≥ 0", share, window)
		}
		c.share, c.window = share, window
		return nil
	})
}

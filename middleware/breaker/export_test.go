package breaker

import "github.com/sony/gobreaker/v2"

// Closer is the io.Closer Factory returns; Breaker gives tests its breaker.
type Closer = closer

func (c *closer) Breaker() *gobreaker.CircuitBreaker[any] { return c.cb }

// DefaultSettings are the settings New and Factory use when WithSettings is
// not given.
func DefaultSettings() gobreaker.Settings { return withDefaults(gobreaker.Settings{}) }

var IsTransportError = isTransportError

const (
	DefaultConsecutiveFailures = defaultConsecutiveFailures
	DefaultMaxRequests         = defaultMaxRequests
	DefaultReconnectGrace      = defaultReconnectGrace
)

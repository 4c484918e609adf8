package transports

import (
	"fmt"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

// Config names the method a client calls and where its logs, spans and
// breaker changes go.
type Config struct {
	Service, Method string
	Logger          log.Logger           // nil: none
	TracerProvider  trace.TracerProvider // nil: otel's global provider
	// BreakerStateChange hears every breaker's changes, by instance.
	BreakerStateChange func(instance, from, to string)
	// BreakerTimeout is how long an ejected instance stays out before its
	// breaker lets a probe through (default 1 s).
	BreakerTimeout time.Duration
	Retry          []retry.Option // after the chain's own
}

// Client is the kitnats chain over one method of one service:
//
//	tracing.Client ─► retry ─► least-loaded balancer ─► tracing.Factory ─► breaker.Factory ─► factory
//
// It takes any go-kit sd.Instancer: natskv's (WithAddresses) for instances
// in a NATS registry, sd.FixedInstancer for fixed addresses, go-kit's
// Consul or etcd instancers. The factory is the transport's, written as
// for any go-kit registry: it gets an instance's address.
type Client struct {
	// Call calls the method. Mark idempotent calls with retry.Idempotent:
	// only they are sent again when an instance may have processed them (a
	// connection cut mid-call, a timeout).
	Call endpoint.Endpoint
	// Set holds an endpoint per instance.
	Set *lb.EndpointSet
}

// NewClient builds the chain over instancer and factory.
func NewClient(instancer sd.Instancer, factory sd.Factory, cfg Config) (*Client, error) {
	var otel []tracing.Option
	if cfg.TracerProvider != nil {
		otel = append(otel, tracing.WithTracerProvider(cfg.TracerProvider))
	}
	// A dead instance is ejected for a second at a time, not gobreaker's
	// minute: it may come back at once.
	timeout := cfg.BreakerTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	bopts := []breaker.FactoryOption{breaker.WithSettings(gobreaker.Settings{Timeout: timeout})}
	if cfg.BreakerStateChange != nil {
		bopts = append(bopts, breaker.WithStateChange(cfg.BreakerStateChange))
	}
	factory = breaker.Factory(factory, bopts...)
	factory = tracing.Factory(factory, cfg.Service, cfg.Method, otel...)
	set := lb.NewEndpointSet(instancer, factory, cfg.Logger)
	ropts := append([]retry.Option{retry.WithObserver(tracing.RetryObserver(cfg.Service, cfg.Method, otel...))}, cfg.Retry...)
	call, err := retry.New(lb.New(set, lb.LeastLoaded()), ropts...)
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("transports: %w", err)
	}
	return &Client{Call: tracing.Client(cfg.Service, cfg.Method, otel...)(call), Set: set}, nil
}

// Close closes the endpoints.
func (c *Client) Close() { c.Set.Close() }

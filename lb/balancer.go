package lb

import (
	"context"
	"fmt"

	"github.com/go-kit/kit/endpoint"
	kitlb "github.com/go-kit/kit/sd/lb"
)

// ErrNoInstances is returned by a pick when no instance can take the request.
// It matches go-kit's lb.ErrNoEndpoints under errors.Is, so code written for
// go-kit's balancers keeps working.
var ErrNoInstances = fmt.Errorf("kitnats/lb: no instances available: %w", kitlb.ErrNoEndpoints)

// Pick is one balancing decision: the instance chosen and the endpoint that
// reaches it.
type Pick struct {
	Instance string
	Endpoint endpoint.Endpoint
}

// Balancer picks instances while keeping their identity. Every balancer in this
// package satisfies go-kit's lb.Balancer through Endpoint, and adds Pick for
// callers that need to know, or steer, which instance serves a request.
type Balancer interface {
	// Endpoint satisfies go-kit's lb.Balancer. It is Pick with a background
	// context and nothing tried.
	Endpoint() (endpoint.Endpoint, error)

	// Pick chooses an instance for one attempt of the request whose context is
	// ctx. Instances named in tried are passed over while any other instance
	// can be picked; when every instance has been tried, Pick may return one
	// of them again. Pick does not modify tried and does not allocate.
	//
	// The balancers of this package rank candidates: available (see
	// Available) before unavailable, then untried before tried, then ACTIVE
	// before STANDBY (Attributes). So a retry never returns to a tried
	// instance while an untried available one remains, and prefers a tried
	// available instance to an untried one whose breaker is open.
	Pick(ctx context.Context, tried []string) (Pick, error)
}

// Available is implemented by the io.Closer an sd.Factory returns for an
// instance when it knows whether that instance should take traffic now — a
// per-instance circuit breaker, for one. While any instance is available,
// balancers never pick one that is not. When none is, they pick an
// unavailable one anyway rather than fail with ErrNoInstances, so the caller
// gets that instance's own error (an open breaker's) at once.
//
// Available is called on the pick path, possibly for several instances per
// pick: it must be fast, non-blocking and safe for concurrent use. An
// sd.Factory middleware that wraps the closer must forward it.
type Available interface {
	Available() bool
}

var _ kitlb.Balancer = Balancer(nil)

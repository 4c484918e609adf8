package kitnats

import (
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// NewEndpointSet is lb.NewEndpointSet over a registry Instancer, told each
// instance's status: balancers pick STANDBY instances only when no ACTIVE one
// can take the request. Options are passed on to lb.NewEndpointSet.
//
// The registry and the balancers know nothing of each other; this is the
// glue, for the common case where both are kitnats'.
func NewEndpointSet(instancer *natskv.Instancer, factory sd.Factory, logger log.Logger, opts ...lb.Option) *lb.EndpointSet {
	return lb.NewEndpointSet(instancer, factory, logger,
		append([]lb.Option{lb.WithAttributes(Attributes(instancer))}, opts...)...)
}

// Attributes reads what balancers need to know about an instance from the
// Instancer's current view, for lb.WithAttributes. The Instancer updates that
// view before it sends an event, and sends one when a member's status
// changes, so the endpoint set always builds its picker from fresh attributes.
func Attributes(instancer *natskv.Instancer) func(instance string) lb.Attributes {
	return func(instance string) lb.Attributes {
		in, _ := instancer.Lookup(instance)
		return lb.Attributes{Standby: in.Status == natskv.StatusStandby}
	}
}

package lb

import (
	"context"
	"runtime"
	"sync/atomic"
	"weak"

	"github.com/go-kit/kit/endpoint"
	kitlb "github.com/go-kit/kit/sd/lb"
)

// ErrNoInstances is returned by a pick when no instance can take the request.
// It matches go-kit's lb.ErrNoEndpoints under errors.Is, so code written for
// go-kit's balancers keeps working.
var ErrNoInstances error = noInstancesError{}

// noInstancesError is ErrNoInstances: a type of its own so that it can name
// its failure to tracing (ErrorType) without tracing importing this package.
type noInstancesError struct{}

func (noInstancesError) Error() string {
	return "kitnats/lb: no instances available: " + kitlb.ErrNoEndpoints.Error()
}

func (noInstancesError) Unwrap() error { return kitlb.ErrNoEndpoints }

// ErrorType is the error.type tracing records for the failure.
func (noInstancesError) ErrorType() string { return "no_instances" }

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
	// The balancers of this package rank candidates (Instance.Rank):
	// available (see Available) before unavailable, then untried before
	// tried, then ACTIVE before STANDBY (Attributes). So a retry never
	// returns to a tried instance while an untried available one remains,
	// and prefers a tried available instance to an untried one whose
	// breaker is open. In the set's panic mode (WithPanicThreshold) every
	// instance counts as available.
	Pick(ctx context.Context, tried []string) (Pick, error)
}

// Available is implemented by the io.Closer an sd.Factory returns for an
// instance when it knows whether that instance should take traffic now — a
// per-instance circuit breaker, for one. While any instance is available,
// balancers never pick one that is not — unless so many are not that the
// set is in panic mode (WithPanicThreshold). When none is, they pick an
// unavailable one anyway rather than fail with ErrNoInstances, so the caller
// gets that instance's own error (an open breaker's) at once.
//
// Available is called on the pick path, possibly for several instances per
// pick: it must be fast, non-blocking and safe for concurrent use. An
// sd.Factory middleware that wraps the closer must forward it.
type Available interface {
	Available() bool
}

// Policy is a balancing algorithm: it turns each View of a set into the
// Picker that serves picks until the next view, as grpc-go's
// base.PickerBuilder turns ready SubConns into a picker. Build runs off the
// pick path, once per view, so it is where a policy pays for whatever makes
// its picks cheap (a ring, a table); the picks themselves must neither
// lock nor allocate.
//
// Build is never called with an empty view (the balancer answers the view's
// error for one) and must return a non-nil Picker. The calls for one
// balancer come one at a time, in the order the set publishes its views, on
// the goroutine that publishes them (see EndpointSet.Subscribe: no Refresh,
// Close or Subscribe from Build); a Policy shared by several balancers must
// make Build safe for concurrent use.
type Policy interface {
	Build(v *View) Picker
}

// Picker chooses among the instances of the View it was built from. Pick
// must follow the shared rules: an eligible ACTIVE instance
// (Instance.Eligible) if the policy's choice is one, else View.Fallback's.
// It returns nil only to refuse every instance; the pick then fails with
// ErrNoInstances. It must not modify tried, and it runs concurrently with
// other picks and with the building of the next picker.
type Picker interface {
	Pick(ctx context.Context, tried []string) *Instance
}

// New returns a balancer that picks from set by policy: it builds a picker
// from every view the set publishes, as soon as the set publishes it, and
// picks with the newest, in one atomic load. The picker for the set's
// current view is built before New returns. The balancer is a go-kit
// lb.Balancer too.
//
// The balancer follows the set (EndpointSet.Subscribe) for as long as it is
// reachable: there is nothing to close, and a balancer dropped by its user
// stops costing the set anything once it has been garbage collected.
func New(set *EndpointSet, policy Policy) Balancer {
	b := &policyBalancer{}
	// The set holds the balancer weakly, so the balancer's user alone keeps
	// it alive; the cleanup ends the subscription once nobody does.
	wb := weak.Make(b)
	cancel := set.Subscribe(func(v *View) {
		if b := wb.Value(); b != nil {
			b.update(v, policy)
		}
	})
	runtime.AddCleanup(b, func(cancel func()) { cancel() }, cancel)
	return b
}

// policyBalancer is the Balancer New returns.
type policyBalancer struct {
	state atomic.Pointer[pickerState]
}

// pickerState pairs a view with the picker built from it, so a pick never
// sees one without the other. picker is nil for an empty view.
type pickerState struct {
	view   *View
	picker Picker
}

func (b *policyBalancer) update(v *View, policy Policy) {
	st := &pickerState{view: v}
	if v.Len() > 0 {
		st.picker = policy.Build(v)
	}
	b.state.Store(st)
}

func (b *policyBalancer) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *policyBalancer) Pick(ctx context.Context, tried []string) (Pick, error) {
	st := b.state.Load()
	if st.picker == nil {
		return Pick{}, st.view.err
	}
	in := st.picker.Pick(ctx, tried)
	if in == nil {
		return Pick{}, ErrNoInstances
	}
	return in.pick(), nil
}

var _ kitlb.Balancer = Balancer(nil)

package lb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/lb"
)

// echoFactory stands in for a transport's sd.Factory (natsrpc's, in
// kitnats): one endpoint per instance.
func echoFactory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return func(_ context.Context, request any) (any, error) {
		return fmt.Sprintf("%s echoes %v", instance, request), nil
	}, nil, nil
}

// A go-kit instancer (natskv's Instancer in kitnats) and factory make an
// endpoint set; a balancer picks from it and says which instance it picked.
func ExampleNewEndpointSet() {
	instancer := sd.FixedInstancer{"echo-b", "echo-a", "echo-c"}
	set := lb.NewEndpointSet(instancer, echoFactory, log.NewNopLogger())
	defer set.Close()
	fmt.Println(set.Instances())

	balancer := lb.New(set, lb.RoundRobin())
	picked := map[string]int{}
	for range 6 {
		pick, err := balancer.Pick(context.Background(), nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		response, _ := pick.Endpoint(context.Background(), "hi")
		if response != pick.Instance+" echoes hi" {
			fmt.Println("the pick names another instance than its endpoint reaches")
		}
		picked[pick.Instance]++
	}
	fmt.Println(picked)
	// Output:
	// [echo-a echo-b echo-c]
	// map[echo-a:2 echo-b:2 echo-c:2]
}

// Every balancer is a go-kit lb.Balancer, so go-kit's own middleware takes it
// unchanged. (kitnats' middleware/retry adds backoff, budgets and never
// retrying the same instance.)
func ExampleLeastLoaded() {
	set := lb.NewEndpointSet(sd.FixedInstancer{"echo-a", "echo-b"}, echoFactory, nil)
	defer set.Close()

	var balancer kitlb.Balancer = lb.New(set, lb.LeastLoaded(lb.WithLatencyWeighting()))
	retrying := kitlb.Retry(3, time.Second, balancer)
	response, err := retrying(context.Background(), "hi")
	fmt.Println(response != nil, err)
	// Output:
	// true <nil>
}

// A sticky balancer sends a key to the same instance every time, from every
// client; a preferred instance overrides the key while it is available.
func ExampleSticky() {
	set := lb.NewEndpointSet(sd.FixedInstancer{"cart-1", "cart-2", "cart-3"}, echoFactory, nil)
	defer set.Close()
	balancer := lb.New(set, lb.Sticky())

	ctx := lb.WithStickyKey(context.Background(), "user-42")
	first, _ := balancer.Pick(ctx, nil)
	again, _ := balancer.Pick(ctx, nil)
	fmt.Println("same instance:", first.Instance == again.Instance)

	preferred, _ := balancer.Pick(lb.WithPreferredInstance(ctx, "cart-2"), nil)
	fmt.Println("preferred:", preferred.Instance)
	// Output:
	// same instance: true
	// preferred: cart-2
}

// Attributes come from the registry: an instancer that implements
// lb.Describer, as natskv's does, supplies them with no option. Where the
// instancer knows nothing of them, WithAttributes tells the set.
// STANDBY instances are picked only when no ACTIVE one can be.
func ExampleWithAttributes() {
	status := map[string]string{"db-1": "STANDBY", "db-2": "ACTIVE"}
	set := lb.NewEndpointSet(sd.FixedInstancer{"db-1", "db-2"}, echoFactory, nil,
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: status[s] == "STANDBY"} }))
	defer set.Close()
	balancer := lb.New(set, lb.Random())

	pick, _ := balancer.Pick(context.Background(), nil)
	fmt.Println("first choice:", pick.Instance)
	pick, _ = balancer.Pick(context.Background(), []string{"db-2"})
	fmt.Println("after db-2 failed:", pick.Instance)
	// Output:
	// first choice: db-2
	// after db-2 failed: db-1
}

// A retry loop passes the instances it has tried, so each attempt goes to a
// new instance while one is left.
func ExampleBalancer_pick() {
	failing := map[string]bool{"svc-a": true, "svc-b": true}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) {
			if failing[instance] {
				return nil, errors.New(instance + " is down")
			}
			return instance + " answered", nil
		}, nil, nil
	}
	set := lb.NewEndpointSet(sd.FixedInstancer{"svc-a", "svc-b", "svc-c"}, factory, nil)
	defer set.Close()
	var balancer lb.Balancer = lb.New(set, lb.RoundRobin())

	var tried []string
	for range 3 {
		pick, err := balancer.Pick(context.Background(), tried)
		if err != nil {
			fmt.Println(err)
			return
		}
		if slices.Contains(tried, pick.Instance) {
			fmt.Println("tried twice:", pick.Instance)
		}
		tried = append(tried, pick.Instance)
		if response, err := pick.Endpoint(context.Background(), nil); err == nil {
			fmt.Println(response)
			return
		}
	}
	// Output:
	// svc-c answered
}

// A policy of your own, on the exported seam only: prefer instances in the
// caller's zone (from the registry's metadata), and leave everything else to
// the shared rules. Build runs once per view, so the zone's instances are
// found there, not on every pick. (Package zone does this over any policy,
// and spills a share of the traffic when the zone is short of healthy
// instances.)
func ExampleNew() {
	zones := map[string]string{"api-1": "us", "api-2": "eu", "api-3": "us", "api-4": "eu"}
	set := lb.NewEndpointSet(sd.FixedInstancer{"api-1", "api-2", "api-3", "api-4"}, echoFactory, nil,
		lb.WithAttributes(func(s string) lb.Attributes { // natskv's Instancer does this itself
			return lb.Attributes{Metadata: map[string]string{"zone": zones[s]}}
		}))
	defer set.Close()
	balancer := lb.New(set, sameZone("eu"))

	var tried []string
	for range 4 {
		pick, _ := balancer.Pick(context.Background(), tried)
		fmt.Println(pick.Instance, zones[pick.Instance])
		tried = append(tried, pick.Instance)
	}
	// Output:
	// api-2 eu
	// api-4 eu
	// api-1 us
	// api-3 us
}

// sameZone is the policy: Build finds the zone's instances in each view.
type sameZone string

func (z sameZone) Build(v *lb.View) lb.Picker {
	p := &sameZonePicker{view: v}
	for _, in := range v.Active() {
		if in.Attributes().Metadata["zone"] == string(z) {
			p.local = append(p.local, in)
		}
	}
	return p
}

type sameZonePicker struct {
	view  *lb.View
	local []*lb.Instance
}

// Pick takes the first eligible local instance, else whatever the shared
// rules rank best.
func (p *sameZonePicker) Pick(_ context.Context, tried []string) *lb.Instance {
	for _, in := range p.local {
		if in.Eligible(tried) {
			return in
		}
	}
	return p.view.Fallback(0, tried)
}

package zone_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/zone"
	"github.com/aegis-sdk/kitnats/wire"
)

// regionFleet is a set over instances named {region}/{zone}/{n}, with
// their region and zone in their metadata, as natskv's Instancer describes
// instances a Region's Registrar wrote.
func regionFleet(t *testing.T, names ...string) (*lb.EndpointSet, map[string]*atomic.Bool) {
	t.Helper()
	down := map[string]*atomic.Bool{}
	for _, n := range names {
		down[n] = &atomic.Bool{}
	}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return instance, nil }, closer{down[instance]}, nil
	}
	set := lb.NewEndpointSet(sd.FixedInstancer(names), factory, nil, lb.WithAttributes(func(instance string) lb.Attributes {
		parts := strings.Split(instance, "/")
		return lb.Attributes{Metadata: map[string]string{wire.MetadataRegion: parts[0], wire.MetadataZone: parts[1]}}
	}))
	t.Cleanup(set.Close)
	return set, down
}

// tally picks n times and counts the picks by region/zone.
func tally(b lb.Balancer, n int) map[string]int {
	out := map[string]int{}
	for range n {
		pick, err := b.Pick(context.Background(), nil)
		if err != nil {
			out["error"]++
			continue
		}
		out[pick.Instance[:strings.LastIndex(pick.Instance, "/")]]++
	}
	return out
}

// TestRegionThenZone: a client in zone eu-1 of region eu, with the zone
// policy inside a region policy, picks in eu-1; with eu-1 down (a quarter
// of eu) in the rest of eu only; with all of eu down in us; with eu back,
// in eu-1 again.
func TestRegionThenZone(t *testing.T) {
	// us holds more than half the set: with eu down, the set is not in
	// panic mode (which would count eu's instances healthy).
	set, down := regionFleet(t, "eu/eu-1/0", "eu/eu-2/0", "eu/eu-2/1", "eu/eu-2/2",
		"us/us-1/0", "us/us-1/1", "us/us-1/2", "us/us-2/0", "us/us-2/1")
	policy := zone.Policy(zone.Policy(lb.RoundRobin(), "eu-1"), "eu", zone.WithKey(wire.MetadataRegion))
	b := lb.New(set, policy)
	const picks = 1000
	if have := tally(b, picks); have["eu/eu-1"] != picks {
		t.Fatalf("all healthy: %v, want every pick in eu/eu-1", have)
	}
	down["eu/eu-1/0"].Store(true)
	eventually(t, "the census of eu-1", b, func() bool { return set.View().Unavailable() == 1 })
	if have := tally(b, picks); have["eu/eu-2"] != picks {
		t.Fatalf("eu-1 down: %v, want every pick in eu/eu-2", have)
	}
	for _, n := range []string{"eu/eu-2/0", "eu/eu-2/1", "eu/eu-2/2"} {
		down[n].Store(true)
	}
	eventually(t, "the census of eu", b, func() bool { return set.View().Unavailable() == 4 })
	if have := tally(b, picks); have["us/us-1"]+have["us/us-2"] != picks {
		t.Fatalf("eu down: %v, want every pick in us", have)
	}
	for _, d := range down {
		d.Store(false)
	}
	eventually(t, "the census of eu back", b, func() bool { return set.View().Unavailable() == 0 })
	if have := tally(b, picks); have["eu/eu-1"] != picks {
		t.Fatalf("eu back: %v, want every pick in eu/eu-1", have)
	}
}

// TestRegionSpillsByItsOwnHealth: the region rule counts the whole region.
// With half of eu down — its zone eu-1 whole — eu keeps 0.5/0.7 ≈ 71 % of
// the picks, all in eu-1, and sends the rest to us.
func TestRegionSpillsByItsOwnHealth(t *testing.T) {
	set, down := regionFleet(t, "eu/eu-1/0", "eu/eu-1/1", "eu/eu-2/0", "eu/eu-2/1", "us/us-1/0", "us/us-1/1")
	b := lb.New(set, zone.Policy(zone.Policy(lb.RoundRobin(), "eu-1"), "eu", zone.WithKey(wire.MetadataRegion), zone.WithSeed(1)))
	down["eu/eu-2/0"].Store(true)
	down["eu/eu-2/1"].Store(true)
	set.Refresh() // picks stay in eu-1 and would not meet eu-2's instances
	eventually(t, "the census of eu-2", b, func() bool { return set.View().Unavailable() == 2 })
	const picks = 10000
	have := tally(b, picks)
	if have["eu/eu-2"] != 0 || have["error"] != 0 {
		t.Fatalf("picks %v: none may go to eu-2 (down)", have)
	}
	if share := float64(have["eu/eu-1"]) / picks; share < 0.68 || share > 0.75 {
		t.Fatalf("picks %v: eu keeps %.3f, want 0.5/0.7 ≈ 0.714", have, share)
	}
}

func TestWithKeyRefusesEmpty(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "WithKey") {
			t.Fatalf("panic %v, want one naming WithKey", r)
		}
	}()
	zone.Policy(lb.RoundRobin(), "eu", zone.WithKey(""))
}

// A client in zone eu-1 of region eu: its zone first, then the rest of its
// region (which, with three of its four instances healthy, is healthy
// enough to keep every request), then other regions. The region and the zone come from the
// registry record (natskv's Region.NewRegistrar writes the region,
// natskv.WithZone the zone).
func ExampleWithKey() {
	where := map[string][2]string{ // instance → region, zone
		"api-1": {"eu", "eu-1"}, "api-2": {"eu", "eu-2"}, "api-3": {"eu", "eu-2"}, "api-4": {"eu", "eu-2"},
		"api-5": {"us", "us-1"}, "api-6": {"us", "us-1"}, "api-7": {"us", "us-1"}, "api-8": {"us", "us-1"}, "api-9": {"us", "us-1"},
	}
	breakers := map[string]*breakerStub{}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		breakers[instance] = &breakerStub{}
		return endpoint.Nop, breakers[instance], nil
	}
	var names []string
	for name := range where {
		names = append(names, name)
	}
	set := lb.NewEndpointSet(sd.FixedInstancer(names), factory, nil,
		lb.WithAttributes(func(s string) lb.Attributes { // natskv's Instancer does this itself
			return lb.Attributes{Metadata: map[string]string{wire.MetadataRegion: where[s][0], wire.MetadataZone: where[s][1]}}
		}))
	defer set.Close()
	inRegion := zone.Policy(lb.RoundRobin(), "eu-1")
	balancer := lb.New(set, zone.Policy(inRegion, "eu", zone.WithKey(wire.MetadataRegion)))

	show := func() {
		seen := map[string]bool{}
		for range 20 {
			pick, _ := balancer.Pick(context.Background(), nil)
			seen[where[pick.Instance][1]] = true
		}
		fmt.Println(slices.Sorted(maps.Keys(seen)))
	}
	show()
	breakers["api-1"].open.Store(true)
	set.Refresh() // the set counts open breakers when a pick meets one, or on a new view
	show()
	for _, name := range []string{"api-2", "api-3", "api-4"} {
		breakers[name].open.Store(true)
	}
	set.Refresh()
	show()
	// Output:
	// [eu-1]
	// [eu-2]
	// [us-1]
}

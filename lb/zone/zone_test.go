package zone_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/weighted"
	"github.com/aegis-sdk/kitnats/lb/zone"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fleet is a set over instances named {zone}-{n}, in the zone before the
// dash, whose availability and STANDBY status a test changes at will.
type fleet struct {
	set  *lb.EndpointSet
	down map[string]*atomic.Bool

	mu      sync.Mutex
	standby map[string]bool
}

type closer struct{ down *atomic.Bool }

func (c closer) Close() error    { return nil }
func (c closer) Available() bool { return !c.down.Load() }

// newFleet makes a fleet of count instances in each zone of zones, as
// "a", 3, "b", 3.
func newFleet(t testing.TB, layout []any, opts ...lb.EndpointSetOption) *fleet {
	t.Helper()
	f := &fleet{down: map[string]*atomic.Bool{}, standby: map[string]bool{}}
	var names []string
	for i := 0; i < len(layout); i += 2 {
		z, n := layout[i].(string), layout[i+1].(int)
		for j := range n {
			name := fmt.Sprintf("%s-%d", z, j)
			names = append(names, name)
			f.down[name] = &atomic.Bool{}
		}
	}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return instance, nil }, closer{f.down[instance]}, nil
	}
	opts = append([]lb.EndpointSetOption{lb.WithAttributes(f.attributes)}, opts...)
	f.set = lb.NewEndpointSet(sd.FixedInstancer(names), factory, nil, opts...)
	t.Cleanup(f.set.Close)
	return f
}

func (f *fleet) attributes(instance string) lb.Attributes {
	f.mu.Lock()
	defer f.mu.Unlock()
	z, _, _ := strings.Cut(instance, "-")
	return lb.Attributes{Standby: f.standby[instance], Metadata: map[string]string{wire.MetadataZone: z}}
}

func (f *fleet) setStandby(instance string, standby bool) {
	f.mu.Lock()
	f.standby[instance] = standby
	f.mu.Unlock()
	f.set.Refresh()
}

// setDown marks the named instances (or every instance of a zone, "a-*")
// down or up.
func (f *fleet) setDown(down bool, instances ...string) {
	for _, name := range instances {
		if z, ok := strings.CutSuffix(name, "-*"); ok {
			for n, d := range f.down {
				if strings.HasPrefix(n, z+"-") {
					d.Store(down)
				}
			}
			continue
		}
		f.down[name].Store(down)
	}
}

func zoneOf(instance string) string { z, _, _ := strings.Cut(instance, "-"); return z }

// firstEligible is a custom policy on the exported seam: the first
// eligible ACTIVE instance by name, else the shared fallback.
func firstEligible() lb.Policy { return firstEligiblePolicy{} }

type firstEligiblePolicy struct{}

func (firstEligiblePolicy) Build(v *lb.View) lb.Picker { return firstEligiblePicker{v} }

type firstEligiblePicker struct{ v *lb.View }

func (p firstEligiblePicker) Pick(_ context.Context, tried []string) *lb.Instance {
	for _, in := range p.v.Active() {
		if in.Eligible(tried) {
			return in
		}
	}
	return p.v.Fallback(0, tried)
}

type policyCase struct {
	name   string
	make   func() lb.Policy
	keyed  bool // picks carry sticky keys
	spread bool // spreads over every eligible instance
}

var policies = []policyCase{
	{"roundrobin", func() lb.Policy { return lb.RoundRobin() }, false, true},
	{"random", func() lb.Policy { return lb.Random() }, false, true},
	{"leastloaded", func() lb.Policy { return lb.LeastLoaded() }, false, true},
	{"sticky", func() lb.Policy { return lb.Sticky() }, true, true},
	{"weighted", func() lb.Policy { return weighted.Policy() }, false, true},
	{"custom", firstEligible, false, false},
}

// ctxFor is the context of pick i: a sticky key of its own for keyed
// policies.
func (pc policyCase) ctxFor(i int) context.Context {
	if pc.keyed {
		return lb.WithStickyKey(context.Background(), fmt.Sprintf("user-%d", i))
	}
	return context.Background()
}

// picks makes n picks and counts them by instance.
func picks(t *testing.T, b lb.Balancer, pc policyCase, tried []string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		p, err := b.Pick(pc.ctxFor(i), tried)
		if err != nil {
			t.Fatal(err)
		}
		if have, _ := p.Endpoint(context.Background(), nil); have != p.Instance {
			t.Fatalf("pick named %s, endpoint reached %v", p.Instance, have)
		}
		counts[p.Instance]++
	}
	return counts
}

// byZone sums counts by zone.
func byZone(counts map[string]int) map[string]int {
	z := map[string]int{}
	for name, c := range counts {
		z[zoneOf(name)] += c
	}
	return z
}

// eventually picks until cond holds, with a generous deadline: the set's
// census follows picks that meet an unavailable instance, and runs on a
// timer while one is. It asserts no duration.
func eventually(t *testing.T, what string, b lb.Balancer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		b.Pick(context.Background(), nil)
		time.Sleep(time.Millisecond)
	}
}

const n = 10000

// TestPrefersLocal: with every instance healthy, a client's picks stay in
// its zone and spread over the zone's instances, whatever the policy.
func TestPrefersLocal(t *testing.T) {
	f := newFleet(t, []any{"a", 3, "b", 3, "c", 3})
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			for _, local := range []string{"a", "c"} {
				counts := picks(t, lb.New(f.set, zone.Policy(pc.make(), local)), pc, nil, n)
				z := byZone(counts)
				t.Logf("client in %s: %v", local, z)
				if share := float64(z[local]) / n; share < 0.95 {
					t.Errorf("client in %s: local share %.3f, want ≥ 0.95 (%v)", local, share, z)
				}
				if pc.spread {
					for i := range 3 {
						if name := fmt.Sprintf("%s-%d", local, i); counts[name] < n/3/2 {
							t.Errorf("client in %s: %s picked %d times of %d, want about a third", local, name, counts[name], n)
						}
					}
				}
			}
		})
	}
}

// TestSpillOverAndBack: local instances ejected (breakers open) → traffic
// goes to the other zones at once; local instances back → it returns.
func TestSpillOverAndBack(t *testing.T) {
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			f := newFleet(t, []any{"a", 3, "b", 3, "c", 3})
			b := lb.New(f.set, zone.Policy(pc.make(), "a"))
			if z := byZone(picks(t, b, pc, nil, 1000)); z["a"] < 950 {
				t.Fatalf("healthy: want ≥ 950 of 1000 local, have %v", z)
			}

			// At once, before the set counts them: the shared rules send
			// the picks away from unavailable instances.
			f.setDown(true, "a-*")
			if z := byZone(picks(t, b, pc, nil, 1000)); z["a"] != 0 {
				t.Fatalf("local ejected, before a census: want 0 of 1000 local, have %v", z)
			}
			eventually(t, "the census of a's instances", b, func() bool { return f.set.View().Unavailable() == 3 })
			z := byZone(picks(t, b, pc, nil, n))
			t.Logf("local ejected: %v", z)
			if z["a"] != 0 {
				t.Errorf("local ejected: want 0 local, have %v", z)
			}
			if pc.spread && (z["b"] < n/4 || z["c"] < n/4) {
				t.Errorf("local ejected: want both other zones used, have %v", z)
			}

			f.setDown(false, "a-*")
			eventually(t, "the census of a's instances back", b, func() bool { return f.set.View().Unavailable() == 0 })
			z = byZone(picks(t, b, pc, nil, n))
			t.Logf("local back: %v", z)
			if share := float64(z["a"]) / n; share < 0.95 {
				t.Errorf("local back: local share %.3f, want ≥ 0.95 (%v)", share, z)
			}
		})
	}
}

// TestProportionalSpill: half the local instances down → f = 0.5/0.7 of
// the traffic stays local, none of it on the down instances; all but
// one down → 0.1/0.7.
func TestProportionalSpill(t *testing.T) {
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			f := newFleet(t, []any{"a", 10, "b", 10})
			b := lb.New(f.set, zone.Policy(pc.make(), "a"))
			for _, tc := range []struct {
				down []string
				want float64
			}{
				{[]string{"a-0", "a-1", "a-2"}, 1}, // 70 % healthy: all local
				{[]string{"a-0", "a-1", "a-2", "a-3", "a-4"}, 0.5 / 0.7},
				{[]string{"a-0", "a-1", "a-2", "a-3", "a-4", "a-5", "a-6", "a-7", "a-8"}, 0.1 / 0.7},
			} {
				f.setDown(false, "a-*")
				f.setDown(true, tc.down...)
				eventually(t, "the census", b, func() bool { return f.set.View().Unavailable() == len(tc.down) })
				counts := picks(t, b, pc, nil, n)
				for _, name := range tc.down {
					if counts[name] != 0 {
						t.Errorf("%d down: unavailable %s picked %d times", len(tc.down), name, counts[name])
					}
				}
				have := float64(byZone(counts)["a"]) / n
				t.Logf("%d of 10 local down: local share %.3f, want %.3f", len(tc.down), have, tc.want)
				if math.Abs(have-tc.want) > 0.03 {
					t.Errorf("%d of 10 local down: local share %.3f, want %.3f ± 0.03", len(tc.down), have, tc.want)
				}
			}
		})
	}
}

// TestClientShare: Envoy's capacity rule. One local instance of ten, and
// a third of the callers local: 30 % stays local, though all are healthy.
func TestClientShare(t *testing.T) {
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			f := newFleet(t, []any{"a", 1, "b", 9})
			b := lb.New(f.set, zone.Policy(pc.make(), "a", zone.WithClientShare(1.0/3), zone.WithSeed(1)))
			have := float64(byZone(picks(t, b, pc, nil, n))["a"]) / n
			t.Logf("local share %.3f, want 0.3", have)
			if math.Abs(have-0.3) > 0.03 {
				t.Errorf("local share %.3f, want 0.3 ± 0.03", have)
			}
		})
	}
}

// TestRulesAcrossZones: tried and unavailable local instances give way to
// eligible remote ones; ACTIVE remote ones beat STANDBY local ones; with
// nothing eligible anywhere, a pick still comes back.
func TestRulesAcrossZones(t *testing.T) {
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			f := newFleet(t, []any{"a", 2, "b", 2}, lb.WithPanicThreshold(0))
			b := lb.New(f.set, zone.Policy(pc.make(), "a"))
			ctx := pc.ctxFor(7)

			// A retry's order: the local instances, then the remote ones.
			var tried []string
			for i := range 4 {
				p, err := b.Pick(ctx, tried)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tried, p.Instance) {
					t.Fatalf("attempt %d: picked tried %s with untried left (%v)", i, p.Instance, tried)
				}
				if want := map[bool]string{true: "a", false: "b"}[i < 2]; zoneOf(p.Instance) != want {
					t.Fatalf("attempt %d: want zone %s, have %s (tried %v)", i, want, p.Instance, tried)
				}
				tried = append(tried, p.Instance)
			}
			if _, err := b.Pick(ctx, tried); err != nil {
				t.Fatalf("all tried: want a pick, have %v", err)
			}

			// Local unavailable, remote tried: the tried available one.
			f.setDown(true, "a-*")
			if p, _ := b.Pick(ctx, []string{"b-0", "b-1"}); zoneOf(p.Instance) != "b" {
				t.Errorf("local unavailable, remote tried: want a remote instance, have %s", p.Instance)
			}
			// Everything unavailable: a pick anyway, the untried local first.
			f.setDown(true, "b-*")
			if p, err := b.Pick(ctx, []string{"a-0"}); err != nil || p.Instance != "a-1" {
				t.Errorf("all unavailable: want a-1, have %s, %v", p.Instance, err)
			}
			f.setDown(false, "a-*", "b-*")

			// STANDBY local instances: ACTIVE remote ones first, then
			// the local STANDBY ones.
			f.setStandby("a-0", true)
			f.setStandby("a-1", true)
			counts := picks(t, b, pc, nil, 200)
			if z := byZone(counts); z["a"] != 0 {
				t.Errorf("local STANDBY: want remote ACTIVE instances, have %v", z)
			}
			// The remote side is asked first (no local ACTIVE instance is
			// capacity), so a round robin's turn is not spent on the local
			// side: the remote instances share the picks.
			if pc.spread && (counts["b-0"] < 50 || counts["b-1"] < 50) {
				t.Errorf("local STANDBY: want the picks shared by b-0 and b-1, have %v", counts)
			}
			if p, _ := b.Pick(ctx, []string{"b-0", "b-1"}); zoneOf(p.Instance) != "a" {
				t.Errorf("remote ACTIVE tried: want a local STANDBY instance, have %s", p.Instance)
			}
			f.setStandby("a-0", false)
			f.setStandby("a-1", false)
		})
	}
}

// TestPanicModeKeepsZone: in panic mode every instance counts as healthy,
// for the zone rule too: the traffic stays local rather than pile onto
// the few survivors elsewhere.
func TestPanicModeKeepsZone(t *testing.T) {
	f := newFleet(t, []any{"a", 3, "b", 3})
	b := lb.New(f.set, zone.Policy(lb.RoundRobin(), "a"))
	f.setDown(true, "a-*", "b-0")
	eventually(t, "panic mode", b, func() bool { return f.set.View().PanicMode() })
	counts := picks(t, b, policies[0], nil, 3000)
	if z := byZone(counts); z["a"] != 3000 {
		t.Errorf("panic mode: want all 3000 local, have %v", z)
	}
	for i := range 3 {
		if name := fmt.Sprintf("a-%d", i); counts[name] != 1000 {
			t.Errorf("panic mode: %s picked %d times, want 1000", name, counts[name])
		}
	}
	f.setDown(false, "a-*", "b-0")
	eventually(t, "panic mode off", b, func() bool { return !f.set.View().PanicMode() })
}

// TestStickyKeysSpillAsWhole: with part of the traffic spilled, a key goes
// to the same instance every time, and the keys kept local spread over the
// local instances.
func TestStickyKeysSpillAsWhole(t *testing.T) {
	f := newFleet(t, []any{"a", 10, "b", 10})
	b := lb.New(f.set, zone.Policy(lb.Sticky(), "a"))
	f.setDown(true, "a-0", "a-1", "a-2", "a-3", "a-4")
	eventually(t, "the census", b, func() bool { return f.set.View().Unavailable() == 5 })
	pc := policies[3]
	first := make([]string, 2000)
	for i := range first {
		p, _ := b.Pick(pc.ctxFor(i), nil)
		first[i] = p.Instance
	}
	counts := map[string]int{}
	for i := range first {
		p, _ := b.Pick(pc.ctxFor(i), nil)
		if p.Instance != first[i] {
			t.Fatalf("key %d: %s, then %s", i, first[i], p.Instance)
		}
		counts[p.Instance]++
	}
	local := 0
	for name, c := range counts {
		if zoneOf(name) == "a" {
			local++
			if c < 2000*7/10/5/2 {
				t.Errorf("local %s owns %d keys, want about a fifth of the local ones", name, c)
			}
		}
	}
	if local != 5 {
		t.Errorf("keys kept local went to %d instances, want the 5 available (%v)", local, counts)
	}
}

// TestPreferredInstanceAcrossZones: a sticky balancer's preferred instance
// wins in any zone while it is eligible.
func TestPreferredInstanceAcrossZones(t *testing.T) {
	f := newFleet(t, []any{"a", 3, "b", 3})
	b := lb.New(f.set, zone.Policy(lb.Sticky(), "a"))
	ctx := lb.WithPreferredInstance(lb.WithStickyKey(context.Background(), "user-1"), "b-2")
	for range 10 {
		if p, _ := b.Pick(ctx, nil); p.Instance != "b-2" {
			t.Fatalf("preferred remote b-2: have %s", p.Instance)
		}
	}
	if p, _ := b.Pick(ctx, []string{"b-2"}); zoneOf(p.Instance) != "a" {
		t.Errorf("preferred b-2 tried: want the key's local instance, have %s", p.Instance)
	}
	f.setStandby("b-2", true)
	if p, _ := b.Pick(ctx, nil); p.Instance != "b-2" {
		t.Errorf("preferred STANDBY b-2: have %s", p.Instance)
	}
}

// TestOneZone: no local instance, only local ones, no client zone: the
// inner policy over everything.
func TestOneZone(t *testing.T) {
	f := newFleet(t, []any{"b", 4})
	for _, local := range []string{"a", "b", ""} {
		counts := picks(t, lb.New(f.set, zone.Policy(lb.RoundRobin(), local)), policies[0], nil, 400)
		for i := range 4 {
			if name := fmt.Sprintf("b-%d", i); counts[name] != 100 {
				t.Errorf("client in %q: %s picked %d times of 400, want 100", local, name, counts[name])
			}
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	f := newFleet(t, []any{"a", 10, "b", 10, "c", 10})
	f.setDown(true, "a-0", "a-1", "a-2", "a-3", "a-4") // a partial spill
	ctx := lb.WithStickyKey(context.Background(), "user-42")
	ctx = lb.WithPreferredInstance(ctx, "not-there")
	tried := []string{"a-5", "b-1"}
	for _, pc := range policies {
		b := lb.New(f.set, zone.Policy(pc.make(), "a"))
		eventually(t, "the census", b, func() bool { return f.set.View().Unavailable() == 5 })
		for _, c := range []context.Context{ctx, context.Background()} {
			if have := testing.AllocsPerRun(1000, func() { b.Pick(c, tried) }); have != 0 {
				t.Errorf("%s: allocations per pick: want 0, have %v", pc.name, have)
			}
		}
	}
}

func TestOf(t *testing.T) {
	f := newFleet(t, []any{"eu", 1})
	if have := zone.Of(f.set.View().Lookup("eu-0")); have != "eu" {
		t.Errorf("Of: want eu, have %q", have)
	}
}

// TestBadOptionsPanic: a share out of [0, 1] is refused with the option's
// name, even with zones off.
func TestBadOptionsPanic(t *testing.T) {
	for _, tc := range []struct {
		option string
		opt    zone.Option
	}{
		{"WithHealthyShare", zone.WithHealthyShare(-0.1)},
		{"WithHealthyShare", zone.WithHealthyShare(1.1)},
		{"WithHealthyShare", zone.WithHealthyShare(math.NaN())},
		{"WithClientShare", zone.WithClientShare(-1)},
		{"WithClientShare", zone.WithClientShare(2)},
	} {
		for _, local := range []string{"a", ""} {
			func() {
				defer func() {
					if msg := fmt.Sprint(recover()); !strings.Contains(msg, tc.option) {
						t.Errorf("%s (local %q): want a panic naming it, have %q", tc.option, local, msg)
					}
				}()
				zone.Policy(lb.RoundRobin(), local, tc.opt)
			}()
		}
	}
	zone.Policy(lb.RoundRobin(), "a", zone.WithHealthyShare(0), zone.WithHealthyShare(1), zone.WithClientShare(0), zone.WithClientShare(1))
}

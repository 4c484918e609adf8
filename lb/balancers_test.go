package lb_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"

	"github.com/aegis-sdk/kitnats/lb"
)

func newSet(t *testing.T, f *fakeFactory, instances []string, opts ...lb.EndpointSetOption) *lb.EndpointSet {
	t.Helper()
	if f == nil {
		f = newFakeFactory()
	}
	set := lb.NewEndpointSet(sd.FixedInstancer(instances), f.Factory, nil, opts...)
	t.Cleanup(set.Close)
	return set
}

func pickN(t *testing.T, b lb.Balancer, ctx context.Context, tried []string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		p, err := b.Pick(ctx, tried)
		if err != nil {
			t.Fatal(err)
		}
		if want, have := p.Instance, call(t, p); want != have {
			t.Fatalf("pick named %s, endpoint reached %s", want, have)
		}
		counts[p.Instance]++
	}
	return counts
}

func TestRoundRobinCycle(t *testing.T) {
	insts := []string{"a", "b", "c", "d", "e"}
	set := newSet(t, nil, insts)
	rr := lb.New(set, lb.SeededRoundRobin(42))

	var have []string
	for range 15 {
		ep, err := rr.Endpoint()
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := ep(context.Background(), nil)
		have = append(have, resp.(string))
	}
	start := slices.Index(insts, have[0])
	for i, name := range have {
		if want := insts[(start+i)%len(insts)]; want != name {
			t.Fatalf("pick %d: want %s, have %s (sequence %v)", i, want, name, have)
		}
	}
}

func TestRoundRobinRandomOffset(t *testing.T) {
	set := newSet(t, nil, names(10))
	first := map[string]bool{}
	for seed := range uint64(20) {
		p, err := lb.New(set, lb.SeededRoundRobin(seed)).Pick(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		first[p.Instance] = true
	}
	if len(first) < 3 {
		t.Errorf("20 round robins started on only %d distinct instances: %v", len(first), first)
	}
}

func TestRandomDistribution(t *testing.T) {
	insts := names(10)
	set := newSet(t, nil, insts)
	const picks = 100000
	counts := pickN(t, lb.New(set, lb.SeededRandom(7)), context.Background(), nil, picks)
	want := float64(picks) / float64(len(insts))
	for _, name := range insts {
		if have := float64(counts[name]); math.Abs(have-want) > 0.05*want {
			t.Errorf("%s: want %.0f ± 5%%, have %.0f", name, want, have)
		}
	}
}

func TestRandomSeedRepeats(t *testing.T) {
	set := newSet(t, nil, names(10))
	seq := func() []string {
		r := lb.New(set, lb.SeededRandom(99))
		var s []string
		for range 20 {
			p, _ := r.Pick(context.Background(), nil)
			s = append(s, p.Instance)
		}
		return s
	}
	if want, have := seq(), seq(); !slices.Equal(want, have) {
		t.Errorf("same seed: want %v, have %v", want, have)
	}
}

func TestLeastLoadedPrefersIdle(t *testing.T) {
	f := newFakeFactory()
	f.block["inst-0003"] = make(chan struct{})
	set := newSet(t, f, names(10))
	ll := lb.New(set, lb.SeededLeastLoaded(1))

	// Three requests stuck on inst-0003.
	eps, _ := set.Endpoints()
	done := make(chan struct{})
	for range 3 {
		go func() { eps[3](context.Background(), nil); done <- struct{}{} }()
	}
	eventually(t, "3 in flight", func() bool { return set.View().Instances()[3].InFlight() == 3 })

	counts := map[string]int{} // picks only: a call to the busy instance would block
	for range 2000 {
		p, err := ll.Pick(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Instance]++
	}
	if have := counts["inst-0003"]; have != 0 {
		t.Errorf("busy instance picked %d times of 2000, want 0", have)
	}
	if want, have := 9, len(counts); want != have {
		t.Errorf("idle instances picked: want %d, have %d (%v)", want, have, counts)
	}
	close(f.block["inst-0003"])
	for range 3 {
		<-done
	}
}

func TestLeastLoadedLatencyWeighting(t *testing.T) {
	f := newFakeFactory()
	f.delay["slow"] = 3 * time.Millisecond
	set := newSet(t, f, []string{"fast", "slow"})
	eps, _ := set.Endpoints()
	for range 4 { // warm both averages
		for _, ep := range eps {
			ep(context.Background(), nil)
		}
	}

	counts := pickN(t, lb.New(set, lb.SeededLeastLoaded(3, lb.WithLatencyWeighting())), context.Background(), nil, 200)
	if want, have := 200, counts["fast"]; want != have {
		t.Errorf("latency weighted, idle: want fast %d times, have %d (%v)", want, have, counts)
	}
	// Without weighting, two idle instances tie: both are picked.
	counts = pickN(t, lb.New(set, lb.SeededLeastLoaded(3)), context.Background(), nil, 200)
	if counts["slow"] == 0 || counts["fast"] == 0 {
		t.Errorf("unweighted, idle: want both picked, have %v", counts)
	}
}

func TestEmptySet(t *testing.T) {
	set := newSet(t, nil, nil)
	for _, bc := range balancers {
		b := bc.make(set)
		if _, err := b.Pick(context.Background(), nil); !errors.Is(err, lb.ErrNoInstances) || !errors.Is(err, kitlb.ErrNoEndpoints) {
			t.Errorf("%s: Pick: want %v, have %v", bc.name, lb.ErrNoInstances, err)
		}
		if _, err := b.Endpoint(); !errors.Is(err, kitlb.ErrNoEndpoints) {
			t.Errorf("%s: Endpoint: want %v, have %v", bc.name, kitlb.ErrNoEndpoints, err)
		}
	}
}

func TestTriedExclusion(t *testing.T) {
	insts := names(5)
	set := newSet(t, nil, insts)
	ctxs := keyContexts(40)
	for _, bc := range balancers {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.make(set, 5)
			for _, ctx := range ctxs {
				tried := []string{insts[0], insts[1], insts[3], insts[4]}
				snapshot := slices.Clone(tried)
				for range 5 {
					p, err := b.Pick(ctx, tried)
					if err != nil {
						t.Fatal(err)
					}
					if want, have := insts[2], p.Instance; want != have {
						t.Fatalf("one untried left: want %s, have %s", want, have)
					}
				}
				if !slices.Equal(snapshot, tried) {
					t.Fatalf("tried modified: want %v, have %v", snapshot, tried)
				}
				// Everything tried: still a pick.
				if _, err := b.Pick(ctx, insts); err != nil {
					t.Fatalf("all tried: %v", err)
				}
			}
			// Retry order: each attempt a new instance until all are tried.
			var tried []string
			for range insts {
				p, err := b.Pick(ctxs[1], tried)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tried, p.Instance) {
					t.Fatalf("picked tried %s with untried left (tried %v)", p.Instance, tried)
				}
				tried = append(tried, p.Instance)
			}
		})
	}
}

func TestAvailableRules(t *testing.T) {
	insts := names(5)
	f := newFakeFactory()
	// Most instances go down: the rules beneath panic mode (panic_test.go).
	set := newSet(t, f, insts, lb.WithPanicThreshold(0))
	setDown := func(down ...string) {
		for _, name := range insts {
			f.Closer(name).down.Store(slices.Contains(down, name))
		}
	}
	ctxs := keyContexts(40)
	for _, bc := range balancers {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.make(set, 5)
			for _, ctx := range ctxs {
				setDown(insts[0], insts[1], insts[3], insts[4])
				for range 5 {
					p, _ := b.Pick(ctx, nil)
					if want, have := insts[2], p.Instance; want != have {
						t.Fatalf("one available: want %s, have %s", want, have)
					}
				}
				// Available but tried beats untried but unavailable.
				p, _ := b.Pick(ctx, []string{insts[2]})
				if want, have := insts[2], p.Instance; want != have {
					t.Fatalf("available tried vs unavailable untried: want %s, have %s", want, have)
				}
				// All unavailable: a pick anyway, untried first.
				setDown(insts...)
				p, err := b.Pick(ctx, []string{insts[0], insts[1], insts[2], insts[3]})
				if err != nil {
					t.Fatalf("all unavailable: want a pick, have %v", err)
				}
				if want, have := insts[4], p.Instance; want != have {
					t.Fatalf("all unavailable: want the untried %s, have %s", want, have)
				}
			}
			setDown()
		})
	}
}

func TestStandbyRules(t *testing.T) {
	insts := []string{"a", "b", "c"}
	f := newFakeFactory()
	set := newSet(t, f, insts, lb.WithPanicThreshold(0), // two of three go down
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s == "b"} }))
	ctxs := keyContexts(40)
	for _, bc := range balancers {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.make(set, 5)
			for _, ctx := range ctxs {
				counts := pickN(t, b, ctx, nil, 10)
				if counts["b"] != 0 {
					t.Fatalf("STANDBY b picked with ACTIVE instances available: %v", counts)
				}
				// ACTIVE ones tried: the STANDBY one, untried, comes next.
				p, _ := b.Pick(ctx, []string{"a", "c"})
				if want, have := "b", p.Instance; want != have {
					t.Fatalf("ACTIVE tried: want %s, have %s", want, have)
				}
				// ACTIVE ones unavailable: the STANDBY one.
				f.Closer("a").down.Store(true)
				f.Closer("c").down.Store(true)
				p, _ = b.Pick(ctx, nil)
				f.Closer("a").down.Store(false)
				f.Closer("c").down.Store(false)
				if want, have := "b", p.Instance; want != have {
					t.Fatalf("ACTIVE unavailable: want %s, have %s", want, have)
				}
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	insts := names(100)
	set := newSet(t, nil, insts)
	ctx := lb.WithStickyKey(context.Background(), "user-42")
	ctx = lb.WithPreferredInstance(ctx, "not-there")
	tried := []string{insts[1], insts[2]}
	for _, bc := range balancers {
		b := bc.make(set)
		if have := testing.AllocsPerRun(1000, func() { b.Pick(ctx, tried) }); have != 0 {
			t.Errorf("%s: allocations per pick: want 0, have %v", bc.name, have)
		}
	}
}

func TestBalancersAreGoKitBalancers(t *testing.T) {
	set := newSet(t, nil, []string{"a"})
	for _, bc := range balancers {
		var b kitlb.Balancer = bc.make(set)
		ep, err := b.Endpoint()
		if err != nil {
			t.Fatal(err)
		}
		// go-kit's own retry over our balancer.
		resp, err := kitlb.Retry(2, time.Second, b)(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if want, have := "a", fmt.Sprint(resp); want != have {
			t.Errorf("%s via kitlb.Retry: want %s, have %s", bc.name, want, have)
		}
		_ = ep
	}
}

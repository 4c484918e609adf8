package lb_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/weighted"
	"github.com/aegis-sdk/kitnats/lb/zone"
	"github.com/aegis-sdk/kitnats/wire"
)

func nopFactory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return endpoint.Nop, nil, nil
}

// BenchmarkPick compares go-kit's round robin over sd.NewEndpointer (the
// baseline) with this package's balancers, picking from all goroutines at
// once. Sticky picks cycle through 1024 keys; the others carry no key.
// Instances weigh 1 to 10 (metadata), which only the weighted policy reads,
// and are spread over three zones, which only the zone-* rows read: each
// is a stock policy wrapped by package zone for a client in one of them,
// with every instance healthy (all picks local). The zone-spill rows have
// half the local instances unavailable, so that about 70 % of the picks
// stay local and the rest draw the other zones; the panic row has 60 % of
// the instances unavailable and the set in panic mode.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 1000} {
		insts := names(n)
		b.Run(fmt.Sprintf("gokit-roundrobin/%d", n), func(b *testing.B) {
			e := sd.NewEndpointer(sd.FixedInstancer(insts), nopFactory, log.NewNopLogger())
			defer e.Close()
			for { // go-kit's endpointer fills its cache asynchronously
				if eps, _ := e.Endpoints(); len(eps) == n {
					break
				}
			}
			bal := kitlb.NewRoundRobin(e)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bal.Endpoint(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})

		set := lb.NewEndpointSet(sd.FixedInstancer(insts), nopFactory, nil, lb.WithAttributes(benchWeights))
		ctxs := make([]context.Context, 1024)
		for i := range ctxs {
			ctxs[i] = lb.WithStickyKey(context.Background(), fmt.Sprintf("user-%d", i))
		}
		run := func(name string, keyed bool, bal lb.Balancer) {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					bg := context.Background()
					for i := 0; pb.Next(); i++ {
						ctx := bg
						if keyed {
							ctx = ctxs[i&1023]
						}
						if _, err := bal.Pick(ctx, nil); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
		for _, bc := range balancers {
			run(bc.name, bc.name == "sticky", bc.make(set))
		}
		for _, zc := range zonePolicies {
			run("zone-"+zc.name, zc.name == "sticky", lb.New(set, zone.Policy(zc.make(), "z0")))
		}
		set.Close()

		// Half the local zone's instances unavailable: a partial spill.
		f := newFakeFactory()
		spilling := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil, lb.WithAttributes(benchWeights))
		for i, name := range insts {
			if i%3 == 0 && i%2 == 0 {
				f.Closer(name).down.Store(true)
			}
		}
		for _, zc := range zonePolicies {
			bal := lb.New(spilling, zone.Policy(zc.make(), "z0"))
			waitCensus(b, spilling, bal)
			run("zone-spill-"+zc.name, zc.name == "sticky", bal)
		}
		spilling.Close()

		// 60 % unavailable: panic mode.
		f = newFakeFactory()
		panicking := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, nil)
		for i, name := range insts {
			f.Closer(name).down.Store(i%5 < 3)
		}
		rr := lb.New(panicking, lb.RoundRobin())
		for !panicking.View().PanicMode() {
			rr.Pick(context.Background(), nil)
			time.Sleep(time.Millisecond)
		}
		run("panic-roundrobin", false, rr)
		panicking.Close()
	}
}

// zonePolicies are the stock policies the zone-* rows wrap.
var zonePolicies = []struct {
	name string
	make func() lb.Policy
}{
	{"roundrobin", func() lb.Policy { return lb.RoundRobin() }},
	{"random", func() lb.Policy { return lb.Random() }},
	{"sticky", func() lb.Policy { return lb.Sticky() }},
	{"leastloaded", func() lb.Policy { return lb.LeastLoaded() }},
	{"weighted", func() lb.Policy { return weighted.Policy() }},
}

// waitCensus picks until the set has counted its unavailable instances.
func waitCensus(b *testing.B, set *lb.EndpointSet, bal lb.Balancer) {
	want := 0
	for _, in := range set.View().Instances() {
		if !in.Available() {
			want++
		}
	}
	for set.View().Unavailable() != want {
		bal.Pick(context.Background(), nil)
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkSnapshot measures what the set pays off the pick path: "refresh"
// rebuilds the view of an unchanged membership (attributes re-read, the
// sticky rings reused); "change" applies an instancer event that adds or
// removes one instance (one factory call, the rings rebuilt).
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{10, 1000} {
		insts := names(n + 1)
		b.Run(fmt.Sprintf("refresh/%d", n), func(b *testing.B) {
			set := lb.NewEndpointSet(sd.FixedInstancer(insts[:n]), nopFactory, nil)
			defer set.Close()
			lb.New(set, lb.Sticky())
			b.ReportAllocs()
			for b.Loop() {
				set.Refresh()
			}
		})
		b.Run(fmt.Sprintf("change/%d", n), func(b *testing.B) {
			inst := newFakeInstancer(insts[:n]...)
			set := lb.NewEndpointSet(inst, nopFactory, nil)
			defer set.Close()
			sticky := lb.New(set, lb.Sticky())
			ctx := lb.WithStickyKey(context.Background(), "k")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				want := n + i%2
				inst.Update(sd.Event{Instances: insts[:want]})
				for len(set.Instances()) != want {
					runtime.Gosched()
				}
			}
			b.StopTimer()
			if _, err := sticky.Pick(ctx, nil); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// benchWeights weighs inst-NNNN 1 to 10 by its last digit, and puts it in
// zone z0, z1 or z2 by NNNN mod 3.
func benchWeights(instance string) lb.Attributes {
	w := 1 + int(instance[len(instance)-1]-'0')
	n, _ := strconv.Atoi(instance[len(instance)-4:])
	return lb.Attributes{Metadata: map[string]string{wire.MetadataWeight: strconv.Itoa(w), wire.MetadataZone: fmt.Sprintf("z%d", n%3)}}
}

package lb_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/weighted"
)

func nopFactory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return endpoint.Nop, nil, nil
}

// BenchmarkPick compares go-kit's round robin over sd.NewEndpointer (the
// baseline) with this package's balancers, picking from all goroutines at
// once. Sticky picks cycle through 1024 keys; the others carry no key.
// Instances weigh 1 to 10 (metadata), which only the weighted policy reads.
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
		for _, bc := range balancers {
			b.Run(fmt.Sprintf("%s/%d", bc.name, n), func(b *testing.B) {
				bal := bc.make(set)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					bg := context.Background()
					for i := 0; pb.Next(); i++ {
						ctx := bg
						if bc.name == "sticky" {
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
		set.Close()
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
			lb.NewSticky(set)
			b.ReportAllocs()
			for b.Loop() {
				set.Refresh()
			}
		})
		b.Run(fmt.Sprintf("change/%d", n), func(b *testing.B) {
			inst := newFakeInstancer(insts[:n]...)
			set := lb.NewEndpointSet(inst, nopFactory, nil)
			defer set.Close()
			sticky := lb.NewSticky(set)
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

// benchWeights weighs inst-NNNN 1 to 10 by its last digit.
func benchWeights(instance string) lb.Attributes {
	w := 1 + int(instance[len(instance)-1]-'0')
	return lb.Attributes{Metadata: map[string]string{weighted.Key: strconv.Itoa(w)}}
}

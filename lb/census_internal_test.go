package lb

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
)

type downCloser struct{ down atomic.Bool }

func (c *downCloser) Close() error    { return nil }
func (c *downCloser) Available() bool { return !c.down.Load() }

// BenchmarkCensus measures one count of a set's unavailable instances, off
// the pick path: the set takes one at most every 10 ms while picks meet
// unavailable instances, and every 100 ms while any is. The set has a
// tenth of its instances unavailable and two filtered views (a zone and
// the rest), as a zone balancer builds.
func BenchmarkCensus(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			insts := make([]string, n)
			for i := range insts {
				insts[i] = fmt.Sprintf("z%d-%04d", i%3, i)
			}
			set := NewEndpointSet(sd.FixedInstancer(insts), func(s string) (endpoint.Endpoint, io.Closer, error) {
				c := &downCloser{}
				c.down.Store(strings.HasSuffix(s, "0"))
				return endpoint.Nop, c, nil
			}, nil)
			defer set.Close()
			v := set.View()
			local := v.Filter(func(in *Instance) bool { return strings.HasPrefix(in.Name(), "z0") })
			remote := v.Filter(func(in *Instance) bool { return !strings.HasPrefix(in.Name(), "z0") })
			b.ReportAllocs()
			for b.Loop() {
				set.census.run(set.view.Load)
			}
			b.StopTimer()
			if v.Unavailable() != n/10 || local.Unavailable()+remote.Unavailable() != n/10 {
				b.Fatalf("counts: %d, %d + %d", v.Unavailable(), local.Unavailable(), remote.Unavailable())
			}
		})
	}
}

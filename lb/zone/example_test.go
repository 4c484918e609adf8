package zone_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/lb/zone"
	"github.com/aegis-sdk/kitnats/wire"
)

// breakerStub stands in for a per-instance breaker (middleware/breaker's
// Closer): it says whether the instance may take traffic.
type breakerStub struct{ open atomic.Bool }

func (b *breakerStub) Close() error    { return nil }
func (b *breakerStub) Available() bool { return !b.open.Load() }

// A client in eu-1 keeps its requests in eu-1 while the instances there
// can take them, and sends them elsewhere when their breakers open.
func ExamplePolicy() {
	zones := map[string]string{"api-1": "eu-1", "api-2": "eu-1", "api-3": "us-1", "api-4": "us-1"}
	breakers := map[string]*breakerStub{}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		breakers[instance] = &breakerStub{}
		return endpoint.Nop, breakers[instance], nil
	}
	set := lb.NewEndpointSet(sd.FixedInstancer{"api-1", "api-2", "api-3", "api-4"}, factory, nil,
		lb.WithAttributes(func(s string) lb.Attributes { // natskv's Instancer does this itself
			return lb.Attributes{Metadata: map[string]string{wire.MetadataZone: zones[s]}}
		}))
	defer set.Close()
	balancer := lb.New(set, zone.Policy(lb.RoundRobin(), "eu-1"))

	show := func() {
		var seen []string
		for range 6 {
			pick, _ := balancer.Pick(context.Background(), nil)
			seen = append(seen, zones[pick.Instance])
		}
		fmt.Println(strings.Join(seen, " "))
	}
	show()
	breakers["api-1"].open.Store(true)
	breakers["api-2"].open.Store(true)
	show()
	// Output:
	// eu-1 eu-1 eu-1 eu-1 eu-1 eu-1
	// us-1 us-1 us-1 us-1 us-1 us-1
}

package natskv_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

// A regional registry: each region is provisioned once (by its operator),
// its services register in its home bucket, its clients watch its view,
// which holds every region's instances. In a supercluster each region's
// buckets are placed in its own cluster; this example runs both regions on
// one server, hence NoPlacement.
func ExampleProvisionRegion() {
	ctx := context.Background()
	srv, _ := natstest.Run(natstest.Config{})
	defer srv.Shutdown()
	nc, _ := natstest.Dial(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	regions := []string{"eu", "us"}
	for _, name := range regions {
		region, err := natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: name, Regions: regions, NoPlacement: true})
		if err != nil {
			fmt.Println(err)
			return
		}
		// A service of the region registers in its home bucket.
		reg, err := region.NewRegistrar(natskv.Instance{ServiceName: "echo", InstanceID: "echo-" + name, Version: "1.0.0"}, nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		reg.Register()
		defer reg.Deregister()
	}

	// A client in eu binds its region and watches its view.
	eu, err := natskv.BindRegion(ctx, js, "", "eu")
	if err != nil {
		fmt.Println(err)
		return
	}
	instancer, err := natskv.NewInstancer(eu.View(), "echo", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instancer.Stop()
	for len(instancer.Instances()) < 2 { // the other region's record is on its way
		_ = instancer.Refresh(ctx)
	}
	var seen []string
	for _, in := range instancer.Instances() {
		seen = append(seen, in.InstanceID+" in "+in.Metadata[wire.MetadataRegion])
	}
	slices.Sort(seen)
	fmt.Println(eu.Home().Name(), "→", eu.View().Name())
	fmt.Println(seen)
	// Output:
	// service_registry_eu → service_registry_eu_view
	// [echo-eu in eu echo-us in us]
}

package natskv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestRegionNamesRefused(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []natskv.RegionConfig{
		{},
		{Region: "a_b"},
		{Region: "a.b"},
		{Region: "-a"},
		{Region: "toolongtoolongtoolongtoolongtoolong"},
		{Region: "a", Regions: []string{"b*"}},
		{Region: "a", Remote: map[string]string{"b c": "d"}},
	} {
		if _, err := natskv.ProvisionRegion(ctx, nil, cfg); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("%+v: %v, want ErrInvalidName", cfg, err)
		}
	}
	for _, cfg := range []natskv.RegionConfig{
		{Region: "a", Remote: map[string]string{"b": ""}},
		{Region: "a", Remote: map[string]string{"b": "x.y"}},
		{Region: "a", Regions: []string{"b"}, Remote: map[string]string{"b": "d"}},
	} {
		if _, err := natskv.ProvisionRegion(ctx, nil, cfg); !errors.Is(err, natskv.ErrInvalidOption) {
			t.Errorf("%+v: %v, want ErrInvalidOption", cfg, err)
		}
	}
	if _, err := natskv.BindRegion(ctx, nil, "", "a_b"); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("BindRegion: %v, want ErrInvalidName", err)
	}
	// The buckets' names must fit too.
	long := natskv.RegionConfig{Region: "abcdefghijklmnopqrstuvwxyz", Bucket: natskv.BucketConfig{Name: "abcdefghijklmnopqrstuvwxyzabcdefghij"}}
	if _, err := natskv.ProvisionRegion(ctx, nil, long); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("long bucket: %v, want ErrInvalidName", err)
	}
}

// TestRegionProvision runs two regions in one JetStream (a single server,
// so without placement): each writes to its home bucket and reads both in
// its view.
func TestRegionProvision(t *testing.T) {
	s := natstest.Start(t)
	_, js := rgConn(t, s.URL())
	ctx := rgCtx(t)
	regions := []string{"a", "b"}
	a, err := natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: "a", Regions: regions, NoPlacement: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "a" || a.Home().Name() != "service_registry_a" || a.View().Name() != "service_registry_a_view" {
		t.Fatalf("region %s: home %s, view %s", a.Name(), a.Home().Name(), a.View().Name())
	}
	// Again: harmless.
	if _, err := natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: "a", Regions: regions, NoPlacement: true}); err != nil {
		t.Fatalf("provisioning again: %v", err)
	}
	// Another configuration of an existing home bucket is refused, and
	// so is a region whose buckets would not agree with its peers'.
	_, err = natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: "a", Regions: regions, NoPlacement: true,
		Bucket: natskv.BucketConfig{History: 3}})
	if !errors.Is(err, natskv.ErrBucketConfig) {
		t.Fatalf("another history: %v, want ErrBucketConfig", err)
	}
	_, err = natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: "b", Regions: regions, NoPlacement: true,
		Bucket: natskv.BucketConfig{LimitMarkerTTL: time.Second}})
	if !errors.Is(err, natskv.ErrBucketConfig) {
		t.Fatalf("a peer with markers: %v, want ErrBucketConfig", err)
	}
	if _, err := natskv.BindBucket(ctx, js, "service_registry_b"); err == nil {
		t.Fatal("a refused region left its home bucket behind")
	}
	b, err := natskv.ProvisionRegion(ctx, js, natskv.RegionConfig{Region: "b", Regions: regions, NoPlacement: true})
	if err != nil {
		t.Fatal(err)
	}

	liveness := natskv.Options(natskv.WithHeartbeat(time.Second), natskv.WithTTL(3*time.Second))
	for _, r := range []*natskv.Region{a, b} {
		reg, err := r.NewRegistrar(inst("svc", "in-"+r.Name()), nil, liveness)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.RegisterContext(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
	for _, r := range []*natskv.Region{a, b} {
		i, err := natskv.NewInstancer(r.View(), "svc", nil, liveness)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(i.Stop)
		rgEventually(t, "both regions in the view of "+r.Name(), func() bool { return len(rgIDs(i)) == 2 })
		for _, in := range i.Instances() {
			if want := in.InstanceID[len("in-"):]; in.Metadata[wire.MetadataRegion] != want {
				t.Fatalf("%s: region %q, want %q", in.InstanceID, in.Metadata[wire.MetadataRegion], want)
			}
		}
	}
	bound, err := natskv.BindRegion(ctx, js, "", "b")
	if err != nil || bound.Home().Name() != b.Home().Name() || bound.View().Name() != b.View().Name() {
		t.Fatalf("BindRegion: %v %v", bound, err)
	}
	if _, err := natskv.BindRegion(ctx, js, "", "c"); err == nil {
		t.Fatal("BindRegion of a region never provisioned: no error")
	}
}

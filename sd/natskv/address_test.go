package natskv_test

import (
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-kit/kit/endpoint"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestWithAddressOptions(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	good := []string{
		"10.0.0.7:8080", "127.0.0.1:1", "api-7.internal:65535", "[::1]:9000", "[fe80::1%eth0]:80",
		"http://10.0.0.7:8080", "https://api-7.internal:8443/v2", "http://api-7", "http://[::1]:8080/",
		"grpc+tls://x_y.z:443",
	}
	for _, a := range good {
		r, err := natskv.NewRegistrar(b, inst("svc", "a"), nil, natskv.WithAddress("http", a))
		if err != nil {
			t.Errorf("WithAddress(http, %q): %v", a, err)
			continue
		}
		if got := natskv.RecordOf(r).Metadata[wire.AddressKey("http")]; got != a {
			t.Errorf("WithAddress(http, %q) wrote %q", a, got)
		}
	}
	bad := []string{
		"", "10.0.0.7", "10.0.0.7:", "10.0.0.7:0", "10.0.0.7:65536", "10.0.0.7:80a", "10.0.0.7:123456",
		":8080", "[::1]", "[::1]8080", "[::1]:", "[zz::1]:80", "[1.2.3.4]:80", "a b:80", "a\n:80", "é.com:80",
		"http://", "http://user@host:80", "http://host:80/?q=1", "http://host/#frag", "HTTP://host",
		"://host:80", "http://host:0", "http:///path", strings.Repeat("a", 600) + ":80",
	}
	for _, a := range bad {
		_, err := natskv.NewRegistrar(b, inst("svc", "a"), nil, natskv.WithAddress("http", a))
		if !errors.Is(err, natskv.ErrInvalidOption) {
			t.Errorf("WithAddress(http, %q): %v, want ErrInvalidOption", a, err)
		}
	}
	for _, tr := range []string{"", "HTTP", "1http", "h ttp", "http.2", strings.Repeat("x", 33)} {
		if _, err := natskv.NewRegistrar(b, inst("svc", "a"), nil, natskv.WithAddress(tr, "10.0.0.7:80")); !errors.Is(err, natskv.ErrInvalidOption) {
			t.Errorf("WithAddress(%q, ...): %v, want ErrInvalidOption", tr, err)
		}
		if _, err := natskv.NewInstancer(b, "svc", nil, natskv.WithAddresses(tr)); !errors.Is(err, natskv.ErrInvalidOption) {
			t.Errorf("WithAddresses(%q): %v, want ErrInvalidOption", tr, err)
		}
	}
	// Several transports, and the option beats the Instance's own entry.
	in := inst("svc", "a")
	in.Metadata[wire.AddressKey("http")] = "stale:1"
	r, err := natskv.NewRegistrar(b, in, nil,
		natskv.WithAddress("http", "10.0.0.7:8080"), natskv.WithAddress("grpc", "10.0.0.7:9090"), natskv.WithZone("z1"))
	if err != nil {
		t.Fatal(err)
	}
	md := natskv.RecordOf(r).Metadata
	if md[wire.AddressKey("http")] != "10.0.0.7:8080" || md[wire.AddressKey("grpc")] != "10.0.0.7:9090" || md[wire.MetadataZone] != "z1" {
		t.Fatalf("metadata %v", md)
	}
}

// An Instancer WithAddresses publishes the instances' addresses for one
// transport, leaves out those that serve something else or give garbage,
// and Describe and Lookup answer for the addresses, status and zone
// included, so a kitnats balancer over an HTTP or gRPC fleet still knows
// which instance is STANDBY and where it runs.
func TestAddressesPublishedAndDescribed(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	ra := register(t, b, inst("svc", "a"), natskv.WithAddress("http", "10.0.0.1:8080"),
		natskv.WithAddress("grpc", "10.0.0.1:9090"), natskv.WithZone("z1"))
	register(t, b, inst("svc", "b"), natskv.WithAddress("http", "http://10.0.0.2:8080/v1"), natskv.WithZone("z2"))
	register(t, b, inst("svc", "c")) // NATS only
	hostile := inst("svc", "d")
	hostile.Metadata[wire.AddressKey("http")] = "http://evil host/\x1b[2J"
	register(t, b, hostile) // written past WithAddress, as anyone with write access could

	httpI := newInstancer(t, b, "svc", natskv.WithAddresses("http"))
	waitSet(t, subscribe(t, httpI), "10.0.0.1:8080", "http://10.0.0.2:8080/v1")
	grpcI := newInstancer(t, b, "svc", natskv.WithAddresses("grpc"))
	grpcCh := subscribe(t, grpcI)
	waitSet(t, grpcCh, "10.0.0.1:9090")

	attrs, ok := httpI.Describe("10.0.0.1:8080")
	if !ok || attrs.Standby || attrs.Metadata[wire.MetadataZone] != "z1" {
		t.Fatalf("Describe(http a) = %+v, %v", attrs, ok)
	}
	if in, ok := httpI.Lookup("http://10.0.0.2:8080/v1"); !ok || in.InstanceID != "b" {
		t.Fatalf("Lookup(http b) = %+v, %v", in, ok)
	}
	if _, ok := httpI.Describe("a"); ok {
		t.Fatal("Describe by instance ID answered under WithAddresses")
	}

	// A status change reaches the address's description, and a STANDBY is
	// re-announced so balancers re-read it.
	if err := ra.SetStatus(ctxT(t), natskv.StatusStandby); err != nil {
		t.Fatal(err)
	}
	waitSet(t, grpcCh, "10.0.0.1:9090")
	for attrs, _ := grpcI.Describe("10.0.0.1:9090"); !attrs.Standby; attrs, _ = grpcI.Describe("10.0.0.1:9090") {
		waitSet(t, grpcCh, "10.0.0.1:9090")
	}
	if err := ra.SetStatus(ctxT(t), natskv.StatusUnhealthy); err != nil {
		t.Fatal(err)
	}
	waitSet(t, grpcCh)
}

// The address strings are what an sd.Factory gets: an lb.EndpointSet over
// the Instancer builds one endpoint per address, as over sd/consul.
func TestAddressesReachTheFactory(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	register(t, b, inst("svc", "a"), natskv.WithAddress("http", "127.0.0.1:8081"))
	register(t, b, inst("svc", "b"), natskv.WithAddress("http", "127.0.0.1:8082"))
	i := newInstancer(t, b, "svc", natskv.WithAddresses("http"))
	var mu sync.Mutex
	var built []string
	set := lb.NewEndpointSet(i, func(instance string) (endpoint.Endpoint, io.Closer, error) {
		mu.Lock()
		built = append(built, instance)
		mu.Unlock()
		return endpoint.Nop, nil, nil
	}, nil)
	defer set.Close()
	if got := slices.Sorted(slices.Values(set.Instances())); !slices.Equal(got, []string{"127.0.0.1:8081", "127.0.0.1:8082"}) {
		t.Fatalf("set instances %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Sort(built); !slices.Equal(built, []string{"127.0.0.1:8081", "127.0.0.1:8082"}) {
		t.Fatalf("factory built %v", built)
	}
}

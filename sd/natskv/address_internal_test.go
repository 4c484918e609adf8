package natskv

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

// FuzzValidateAddress: any string, as a registry record could carry it.
// validateAddress never panics, and what it accepts the standard library
// reads as the same host and port: a go-kit factory can dial it.
func FuzzValidateAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.7:8080", "[::1]:80", "[fe80::1%eth0]:80", "http://h:1/p", "https://h",
		"http://u@h", "h:0", ":80", "http://[::1]:8080/x", "a:b:c", "[::1]]:80", "http://h:80:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validateAddress(s) != nil {
			return
		}
		if len(s) > maxAddress {
			t.Fatalf("accepted %d bytes", len(s))
		}
		if scheme, _, ok := strings.Cut(s, "://"); ok {
			u, err := url.Parse(s)
			if err != nil || u.Scheme != scheme || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				t.Fatalf("accepted %q, url.Parse: %+v, %v", s, u, err)
			}
			if p := u.Port(); p == "0" {
				t.Fatalf("accepted port 0 in %q", s)
			}
			return
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" || port == "" {
			t.Fatalf("accepted %q, SplitHostPort: %q %q %v", s, host, port, err)
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			t.Fatalf("accepted %q with port %q: %v", s, port, err)
		}
	})
}

func TestValidateAddressAllocatesNothing(t *testing.T) {
	for _, a := range []string{"10.0.0.7:8080", "https://api-7.internal:8443/v2", "[::1]:9000"} {
		if n := testing.AllocsPerRun(100, func() { _ = validateAddress(a) }); n != 0 {
			t.Errorf("validateAddress(%q): %v allocations", a, n)
		}
	}
}

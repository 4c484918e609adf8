package natskv

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/wire"
)

// Addresses for transports other than NATS. A record has no host or port
// (it is AegisSDK's format), so an instance that serves HTTP or gRPC says
// where in its metadata, under wire.AddressKey(transport), in the form
// go-kit's own registries publish and its factories take: host:port (what
// sd/consul publishes), or a URL when a scheme or a base path matters
// (https://api-7.internal:8443/v2). One instance may serve several
// transports, each under its own key, and NATS besides. An Instancer made
// WithAddresses(transport) publishes those addresses as its instance
// strings, so an sd.Factory written for sd/consul or sd/etcdv3 builds the
// endpoints unchanged, and Describe and Lookup answer for them.

// maxAddress bounds an address: a host name is at most 253 bytes, and a
// base URL has no business being long.
const maxAddress = 512

// WithAddress makes a Registrar write where the instance serves transport
// into its record's metadata, under wire.AddressKey(transport)
// ("kitnats.addr.http" for "http"); it overrides an entry the Instance's
// own Metadata carries under that key. Pass it once per transport the
// instance serves. transport is a lower-case word (letters, digits, '-',
// at most 32 bytes: "http", "grpc"); address is host:port (a host name, an
// IPv4 address or a bracketed IPv6 one, and a port 1–65535) or an absolute
// URL with a host and no user, query or fragment ("https://10.0.0.7:8443",
// "http://api-7/v2"). Anything else is an error matching ErrInvalidOption.
func WithAddress(transport, address string) RegistrarOption {
	return registrarOption(func(o *registrarOptions) error {
		if err := validateTransport(transport); err != nil {
			return invalid("WithAddress", "%v", err)
		}
		if err := validateAddress(address); err != nil {
			return invalid("WithAddress", "%s: %v", transport, err)
		}
		if o.addrs == nil {
			o.addrs = map[string]string{}
		}
		o.addrs[transport] = address
		return nil
	})
}

// WithAddresses makes an Instancer publish each instance as its address for
// transport (the metadata entry WithAddress writes) instead of its instance
// ID, in sd.Event.Instances and for Lookup and Describe: an lb.EndpointSet
// still learns every instance's status, zone and metadata, and a go-kit
// sd.Factory for HTTP or gRPC gets the address it dials. Instances without
// a valid address for transport are left out — they serve something else —
// and two instances that give the same address are one endpoint, described
// by the record of the lower instance ID. It replaces WithFormatter (the
// last of the two wins). transport follows WithAddress's rules.
func WithAddresses(transport string) InstancerOption {
	return instancerOption(func(o *instancerOptions) error {
		if err := validateTransport(transport); err != nil {
			return invalid("WithAddresses", "%v", err)
		}
		key := wire.AddressKey(transport)
		o.format = func(in Instance) string {
			a := in.Metadata[key]
			if validateAddress(a) != nil {
				return "" // a record anyone could write: never hand a factory garbage
			}
			return a
		}
		return nil
	})
}

// validateTransport checks a transport name: [a-z][a-z0-9-]{0,31}.
func validateTransport(t string) error {
	if t == "" || len(t) > 32 {
		return fmt.Errorf("transport name of %d bytes, want 1 to 32", len(t))
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '-') {
			continue
		}
		return fmt.Errorf("transport %s: want a lower-case word ([a-z][a-z0-9-]*)", safetext.Quote(t))
	}
	return nil
}

var (
	errAddrForm = errors.New("want host:port or scheme://host[:port][/path]")
	errAddrPort = errors.New("port is not a number in 1-65535")
	errAddrHost = errors.New("bad host")
	errAddrByte = errors.New("a space, control or non-ASCII byte")
	errAddrURL  = errors.New("a URL with a user, a query or a fragment")
)

// validateAddress checks an address in one pass, without allocating: it
// runs on every record an Instancer WithAddresses publishes.
func validateAddress(a string) error {
	if a == "" || len(a) > maxAddress {
		return fmt.Errorf("address of %d bytes, want 1 to %d", len(a), maxAddress)
	}
	for i := 0; i < len(a); i++ {
		if a[i] <= ' ' || a[i] >= 0x7f {
			return wrapAddr(a, errAddrByte)
		}
	}
	scheme, rest, isURL := strings.Cut(a, "://")
	if !isURL {
		return wrapAddr(a, validateHostPort(a, true))
	}
	if !validScheme(scheme) {
		return wrapAddr(a, errAddrForm)
	}
	authority, path, _ := strings.Cut(rest, "/")
	if strings.ContainsAny(authority, "@") || strings.ContainsAny(path, "?#") {
		return wrapAddr(a, errAddrURL)
	}
	if err := validateHostPort(authority, false); err != nil {
		return wrapAddr(a, err)
	}
	return nil
}

func wrapAddr(a string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("address %s: %w", safetext.Quote(a), err)
}

func validScheme(s string) bool {
	if s == "" || len(s) > 32 || !(s[0] >= 'a' && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validateHostPort checks host[:port]; the port is required when needPort.
// The host is a name or IPv4 address (letters, digits, '.', '-', '_') or a
// bracketed IPv6 address (hex digits, ':', '.', and a %zone).
func validateHostPort(hp string, needPort bool) error {
	host, port := hp, ""
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return errAddrHost
		}
		host, port = hp[1:end], hp[end+1:]
		if port != "" {
			if port[0] != ':' {
				return errAddrForm
			}
			port = port[1:]
			if port == "" {
				return errAddrPort
			}
		}
		if host == "" || !validIPv6(host) {
			return errAddrHost
		}
	} else {
		if i := strings.LastIndexByte(hp, ':'); i >= 0 {
			host, port = hp[:i], hp[i+1:]
			if port == "" {
				return errAddrPort
			}
		}
		if !validHostName(host) {
			return errAddrHost
		}
	}
	if port == "" {
		if needPort {
			return errAddrForm
		}
		return nil
	}
	if len(port) > 5 {
		return errAddrPort
	}
	n := 0
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return errAddrPort
		}
		n = n*10 + int(port[i]-'0')
	}
	if n < 1 || n > 65535 {
		return errAddrPort
	}
	return nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validIPv6(h string) bool {
	addr, zone, _ := strings.Cut(h, "%")
	if !strings.Contains(addr, ":") {
		return false
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return false
		}
	}
	for i := 0; i < len(zone); i++ {
		c := zone[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

package registry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/aegis-sdk/kitnats/wire"
)

// Layout is how instance keys are spelled in a bucket (natskv.Layout is its
// public twin, with the same values).
type Layout int

const (
	// LayoutDotted is `service-instances.{service}.{instance}`: one subject
	// token per part, so a watch on one service is filtered by the server.
	LayoutDotted Layout = iota
	// LayoutAegis is `service-instances__{service}__{instance}`, the key the
	// Python AegisSDK writes: one token, so a watch covers the whole bucket
	// and filters by prefix on the client.
	LayoutAegis
)

// KeyPrefix starts every instance key of both layouts.
const KeyPrefix = "service-instances"

// ErrInvalidOption is the error of a setting that cannot be used (natskv's
// ErrInvalidOption is this one).
var ErrInvalidOption = errors.New("natskv: invalid option")

// String names the layout: "dotted" or "aegis".
func (l Layout) String() string {
	switch l {
	case LayoutDotted:
		return "dotted"
	case LayoutAegis:
		return "aegis"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// Valid reports whether l is one of the two layouts.
func (l Layout) Valid() bool { return l == LayoutDotted || l == LayoutAegis }

// ParseLayout reads a layout's name as String spells it.
func ParseLayout(s string) (Layout, error) {
	for _, l := range []Layout{LayoutDotted, LayoutAegis} {
		if s == l.String() {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown layout %s (want dotted or aegis)", ErrInvalidOption, strconv.Quote(s))
}

// Key returns the key for an instance, after validating both names.
func (l Layout) Key(service, instance string) (string, error) {
	if err := l.ValidateService(service); err != nil {
		return "", err
	}
	if err := l.ValidateInstance(instance); err != nil {
		return "", err
	}
	if l == LayoutAegis {
		return KeyPrefix + "__" + service + "__" + instance, nil
	}
	return KeyPrefix + "." + service + "." + instance, nil
}

// ValidateService applies kitnats' name rules and, on LayoutAegis, the
// AegisSDK's.
func (l Layout) ValidateService(service string) error {
	if err := wire.ValidateService(service); err != nil {
		return err
	}
	if l == LayoutAegis {
		return validateAegisService(service)
	}
	return nil
}

// validateAegisService applies the AegisSDK's rules for service names on
// top of kitnats' own (wire.ValidateService): ^[a-zA-Z][a-zA-Z0-9_-]*[a-zA-Z0-9]$,
// at most 64 bytes, and lower-case, since the AegisSDK lower-cases the names
// it registers under (an upper-case name would be a service its clients
// never find). So: at least 2 characters, no trailing '_' or '-', no "__"
// (the layout's separator).
func validateAegisService(service string) error {
	var reason string
	switch last := service[len(service)-1]; {
	case len(service) < 2:
		reason = "shorter than 2 characters, the AegisSDK's minimum"
	case last == '_' || last == '-':
		reason = "ends with " + strconv.QuoteRune(rune(last)) + ", which the AegisSDK refuses"
	case strings.ToLower(service) != service:
		reason = "has upper-case letters; the AegisSDK registers lower-case names"
	case strings.Contains(service, "__"):
		reason = `contains "__", the aegis layout's separator`
	default:
		return nil
	}
	return &wire.NameError{Kind: "service", Name: service, Reason: reason}
}

// ValidateInstance applies kitnats' name rules and, on LayoutAegis, refuses
// the layout's separator.
func (l Layout) ValidateInstance(instance string) error {
	if err := wire.ValidateInstance(instance); err != nil {
		return err
	}
	if l == LayoutAegis && strings.Contains(instance, "__") {
		return &wire.NameError{Kind: "instance", Name: instance, Reason: `contains "__", the aegis layout's separator`}
	}
	return nil
}

// WatchFilter is the key filter of a watch on one service.
func (l Layout) WatchFilter(service string) string {
	if l == LayoutAegis {
		return ">"
	}
	return KeyPrefix + "." + service + ".*"
}

// ServicePrefix is what every key of the service starts with.
func (l Layout) ServicePrefix(service string) string {
	if l == LayoutAegis {
		return KeyPrefix + "__" + service + "__"
	}
	return KeyPrefix + "." + service + "."
}

// Match classifies a key for a watcher of service: ours is false for keys
// outside the layout or of other services (ignored silently); instance is
// the instance part, which may still be invalid (then the entry is skipped
// and counted).
func (l Layout) Match(service, key string) (instance string, ours bool) {
	p := l.ServicePrefix(service)
	if !strings.HasPrefix(key, p) {
		return "", false
	}
	rest := key[len(p):]
	if l == LayoutAegis && (strings.Contains(rest, "__") || strings.HasPrefix(rest, "_")) {
		// A service whose name extends ours ("svc__x", or "svc_", whose
		// keys start "svc___"): not ours. Instance IDs never start with '_'.
		return "", false
	}
	if l == LayoutDotted && strings.Contains(rest, ".") {
		// Deeper than an instance key: not of this layout. (A watch on
		// one service never sees these; a watch on the bucket would.)
		return "", false
	}
	return rest, true
}

// ServiceOf is the service a key of the layout belongs to, read from the
// key alone (it may still be an invalid name: Match and the record
// decide). ok is false for keys outside the layout. Linear in the key.
func (l Layout) ServiceOf(key string) (service string, ok bool) {
	sep := "."
	if l == LayoutAegis {
		sep = "__"
	}
	rest, found := strings.CutPrefix(key, KeyPrefix+sep)
	if !found {
		return "", false
	}
	n := strings.Index(rest, sep)
	if n < 0 {
		return "", false
	}
	if l == LayoutAegis {
		// In a run of underscores the separator is the last two: instance
		// IDs never start with '_' ("svc_" + "__" + "a" is "svc___a").
		for n+2 < len(rest) && rest[n+2] == '_' {
			n++
		}
	}
	service = rest[:n]
	if service == "" {
		return "", false
	}
	return service, true
}

// Parse takes a key of the layout apart into the service whose Instancer
// would hold it and the instance part of the key. ok is false for a key no
// Instancer of the layout holds: of the other layout, deeper than an
// instance key, or naming an invalid service. The instance part may still
// be an invalid name: an Instancer then skips the record (DecodeKey says
// why). Linear in the key: only a service name's worth of it (at most
// wire.MaxServiceLen bytes) is tried as a service.
func (l Layout) Parse(key string) (service, instance string, ok bool) {
	switch l {
	case LayoutDotted:
		rest, found := strings.CutPrefix(key, KeyPrefix+".")
		if !found {
			return "", "", false
		}
		service, instance, found = strings.Cut(rest, ".")
		if !found || strings.Contains(instance, ".") || l.ValidateService(service) != nil {
			return "", "", false
		}
		return service, instance, true
	case LayoutAegis:
		rest, found := strings.CutPrefix(key, KeyPrefix+"__")
		if !found {
			return "", "", false
		}
		// Service names of the layout do not end in '_', nor do instance
		// IDs start with it, so a run of underscores splits at its last
		// two ("svc___x" is no key of "svc" nor of "svc_"); among the
		// splits that leave a valid service, prefer the one that leaves a
		// valid instance ID, as the Instancer of that service reads it.
		// A service is at most wire.MaxServiceLen bytes: no split past it.
		limit := min(len(rest), wire.MaxServiceLen+2)
		for i := strings.Index(rest[:limit], "__"); i >= 0 && i+2 <= limit; i++ {
			if rest[i] != '_' || rest[i+1] != '_' {
				continue
			}
			s, in := rest[:i], rest[i+2:]
			if l.ValidateService(s) != nil || strings.Contains(in, "__") || strings.HasPrefix(in, "_") {
				continue
			}
			if !ok || l.ValidateInstance(in) == nil {
				service, instance, ok = s, in, true
			}
			if l.ValidateInstance(in) == nil {
				break
			}
		}
		return service, instance, ok
	}
	return "", "", false
}

package natskv

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/aegis-sdk/kitnats/wire"
)

// Layout is how instance keys are spelled in the bucket. Registrars and
// Instancers sharing a bucket must agree on it.
type Layout int

const (
	// LayoutDotted is `service-instances.{service}.{instance}`: one subject
	// token per part, so a watch on one service is filtered by the server.
	// The default.
	LayoutDotted Layout = iota
	// LayoutAegis is `service-instances__{service}__{instance}`, the key the
	// Python AegisSDK writes. A key is one token, so a watch covers the whole
	// bucket and filters by prefix on the client. Names may not contain "__".
	LayoutAegis
)

const keyPrefix = "service-instances"

// String names the layout for logs.
func (l Layout) String() string {
	switch l {
	case LayoutDotted:
		return "dotted"
	case LayoutAegis:
		return "aegis"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

func (l Layout) valid() bool { return l == LayoutDotted || l == LayoutAegis }

// Key returns the key for an instance, after validating both names.
func (l Layout) Key(service, instance string) (string, error) {
	if err := l.validateService(service); err != nil {
		return "", err
	}
	if err := l.validateInstance(instance); err != nil {
		return "", err
	}
	if l == LayoutAegis {
		return keyPrefix + "__" + service + "__" + instance, nil
	}
	return keyPrefix + "." + service + "." + instance, nil
}

func (l Layout) validateService(service string) error {
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

func (l Layout) validateInstance(instance string) error {
	if err := wire.ValidateInstance(instance); err != nil {
		return err
	}
	if l == LayoutAegis && strings.Contains(instance, "__") {
		return &wire.NameError{Kind: "instance", Name: instance, Reason: `contains "__", the aegis layout's separator`}
	}
	return nil
}

// watchFilter is the key filter of a watch on one service.
func (l Layout) watchFilter(service string) string {
	if l == LayoutAegis {
		return ">"
	}
	return keyPrefix + "." + service + ".*"
}

// servicePrefix is what every key of the service starts with.
func (l Layout) servicePrefix(service string) string {
	if l == LayoutAegis {
		return keyPrefix + "__" + service + "__"
	}
	return keyPrefix + "." + service + "."
}

// match classifies a key for a watcher of service: ours is false for keys
// outside the layout or of other services (ignored silently); instance is the
// instance part, which may still be invalid (then the entry is skipped and
// counted).
func (l Layout) match(service, key string) (instance string, ours bool) {
	p := l.servicePrefix(service)
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

// serviceOf is the service a key of the layout belongs to, read from the
// key alone (it may still be an invalid name: match and the record decide).
// ok is false for keys outside the layout.
func (l Layout) serviceOf(key string) (service string, ok bool) {
	sep := "."
	if l == LayoutAegis {
		sep = "__"
	}
	rest, found := strings.CutPrefix(key, keyPrefix+sep)
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

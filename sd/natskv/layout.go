package natskv

import (
	"fmt"
	"strings"

	"github.com/aegis-sdk/kitnats/internal/names"
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
	if err := ValidateServiceName(service); err != nil {
		return err
	}
	if l == LayoutAegis && strings.Contains(service, "__") {
		return &names.Error{Kind: names.Service, Name: service, Reason: `contains "__", the aegis layout's separator`}
	}
	return nil
}

func (l Layout) validateInstance(instance string) error {
	if err := ValidateInstanceID(instance); err != nil {
		return err
	}
	if l == LayoutAegis && strings.Contains(instance, "__") {
		return &names.Error{Kind: names.Instance, Name: instance, Reason: `contains "__", the aegis layout's separator`}
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
	if l == LayoutAegis && strings.Contains(rest, "__") {
		// A service whose name extends ours ("svc__x"): not ours.
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
	service, _, found = strings.Cut(rest, sep)
	if !found || service == "" {
		return "", false
	}
	return service, true
}

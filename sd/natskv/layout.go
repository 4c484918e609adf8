package natskv

import "github.com/aegis-sdk/kitnats/internal/registry"

// Layout is how instance keys are spelled in the bucket. Registrars and
// Instancers sharing a bucket must agree on it.
type Layout int

const (
	// LayoutDotted is `service-instances.{service}.{instance}`: one subject
	// token per part, so a watch on one service is filtered by the server.
	// The default.
	LayoutDotted = Layout(registry.LayoutDotted)
	// LayoutAegis is `service-instances__{service}__{instance}`, the key the
	// Python AegisSDK writes. A key is one token, so a watch covers the whole
	// bucket and filters by prefix on the client. Service names follow the
	// AegisSDK's rules too (lower-case, at least 2 characters, no trailing
	// '_' or '-'), and names may not contain "__".
	LayoutAegis = Layout(registry.LayoutAegis)
)

// String names the layout: "dotted" or "aegis".
func (l Layout) String() string { return l.reg().String() }

// Key returns the key for an instance, after validating both names; an
// invalid name is a *wire.NameError.
func (l Layout) Key(service, instance string) (string, error) { return l.reg().Key(service, instance) }

func (l Layout) reg() registry.Layout { return registry.Layout(l) }

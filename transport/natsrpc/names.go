package natsrpc

import "github.com/aegis-sdk/kitnats/internal/names"

// The longest name of each kind that becomes a subject token, in bytes. They
// are the limits the registry applies (one set of rules for kitnats, in
// internal/names), so every instance the registry accepts is callable.
const (
	MaxServiceLen  = names.MaxService  // 64, as AegisSDK
	MaxMethodLen   = names.MaxMethod   // 64, as AegisSDK
	MaxInstanceLen = names.MaxInstance // 128: instance IDs are often generated
)

// ErrInvalidName is matched (errors.Is) by every *NameError: a service,
// method or instance name that cannot be a single NATS subject token. It is
// the sentinel the registry (sd/natskv) matches too.
var ErrInvalidName = names.ErrInvalid

// NameError says which name was rejected and why. It matches ErrInvalidName.
// It is the registry's name error type too: one errors.As target for both.
type NameError = names.Error

// ValidateService checks a service name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxServiceLen bytes. These are the names the registry and AegisSDK accept,
// and none of them can be a wildcard or span two subject tokens.
func ValidateService(name string) error { return names.Validate(names.Service, name) }

// ValidateMethod checks a method name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxMethodLen bytes. It is a little looser than AegisSDK's ^[a-z][a-z0-9_]*$
// (every AegisSDK method name passes) and still never contains '.', '*', '>'
// or white space.
func ValidateMethod(name string) error { return names.Validate(names.Method, name) }

// ValidateInstance checks an instance ID: ^[a-zA-Z0-9][a-zA-Z0-9_-]*$, at
// most MaxInstanceLen bytes, as the registry accepts and publishes it.
func ValidateInstance(name string) error { return names.Validate(names.Instance, name) }

// ServiceSubject is the subject every instance of service answers for method,
// in queue group QueueGroup(service): "rpc.{service}.{method}", the AegisSDK
// convention.
func ServiceSubject(service, method string) (string, error) {
	if err := validateServiceMethod(service, method); err != nil {
		return "", err
	}
	return serviceSubject(service, method), nil
}

// InstanceSubject is the subject only the named instance answers for method:
// "rpc.{service}.{method}.{instance}". Client-side balancing sends here.
func InstanceSubject(service, method, instance string) (string, error) {
	if err := validateServiceMethod(service, method); err != nil {
		return "", err
	}
	if err := ValidateInstance(instance); err != nil {
		return "", err
	}
	return instanceSubject(service, method, instance), nil
}

func validateServiceMethod(service, method string) error {
	if err := ValidateService(service); err != nil {
		return err
	}
	return ValidateMethod(method)
}

// QueueGroup is the queue group of a service's service-wide subjects:
// "rpc.{service}".
func QueueGroup(service string) (string, error) {
	if err := ValidateService(service); err != nil {
		return "", err
	}
	return queueGroup(service), nil
}

// The subject layout, for names already validated.
func serviceSubject(service, method string) string { return "rpc." + service + "." + method }
func instanceSubject(service, method, instance string) string {
	return serviceSubject(service, method) + "." + instance
}
func queueGroup(service string) string { return "rpc." + service }

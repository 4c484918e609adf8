package natsrpc

import (
	"errors"
	"strconv"
)

// MaxNameLen bounds every name that becomes a subject token, so a caller
// cannot build subjects the server would reject or that bloat every message.
const MaxNameLen = 64

// ErrInvalidName is matched (errors.Is) by every *NameError: a service,
// method or instance name that cannot be a single NATS subject token.
var ErrInvalidName = errors.New("natsrpc: invalid name")

// NameError says which name was rejected and why. It matches ErrInvalidName.
type NameError struct {
	Kind   string // "service", "method" or "instance"
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return "natsrpc: invalid " + e.Kind + " name " + strconv.Quote(e.Name) + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidName) hold.
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

// ValidateService checks a service name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxNameLen bytes. These are the names the registry and AegisSDK accept, and
// none of them can be a wildcard or span two subject tokens.
func ValidateService(name string) error {
	return validate("service", name, isLetter)
}

// ValidateMethod checks a method name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxNameLen bytes. It is a little looser than AegisSDK's ^[a-z][a-z0-9_]*$
// (every AegisSDK method name passes) and still never contains '.', '*', '>'
// or white space.
func ValidateMethod(name string) error {
	return validate("method", name, isLetter)
}

// ValidateInstance checks an instance ID: ^[a-zA-Z0-9][a-zA-Z0-9_-]*$, at
// most MaxNameLen bytes, as the registry publishes it.
func ValidateInstance(name string) error {
	return validate("instance", name, isAlnum)
}

func validate(kind, name string, first func(byte) bool) error {
	switch {
	case name == "":
		return &NameError{Kind: kind, Name: name, Reason: "empty"}
	case len(name) > MaxNameLen:
		return &NameError{Kind: kind, Name: name, Reason: "longer than " + strconv.Itoa(MaxNameLen) + " bytes"}
	case !first(name[0]):
		reason := "must start with a letter"
		if kind == "instance" {
			reason = "must start with a letter or digit"
		}
		return &NameError{Kind: kind, Name: name, Reason: reason}
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '_' && c != '-' {
			return &NameError{Kind: kind, Name: name, Reason: "character " + strconv.QuoteRune(rune(c)) + " at " + strconv.Itoa(i) + " is not a letter, digit, '_' or '-'"}
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }

// ServiceSubject is the subject every instance of service answers for method,
// in queue group QueueGroup(service): "rpc.{service}.{method}", the AegisSDK
// convention.
func ServiceSubject(service, method string) (string, error) {
	if err := ValidateService(service); err != nil {
		return "", err
	}
	if err := ValidateMethod(method); err != nil {
		return "", err
	}
	return "rpc." + service + "." + method, nil
}

// InstanceSubject is the subject only the named instance answers for method:
// "rpc.{service}.{method}.{instance}". Client-side balancing sends here.
func InstanceSubject(service, method, instance string) (string, error) {
	s, err := ServiceSubject(service, method)
	if err != nil {
		return "", err
	}
	if err := ValidateInstance(instance); err != nil {
		return "", err
	}
	return s + "." + instance, nil
}

// QueueGroup is the queue group of a service's service-wide subjects:
// "rpc.{service}".
func QueueGroup(service string) (string, error) {
	if err := ValidateService(service); err != nil {
		return "", err
	}
	return "rpc." + service, nil
}

package wire

import (
	"errors"
	"strconv"

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// The length limits, in bytes. Services and methods follow the AegisSDK's
// 64; instance IDs, often generated (a host name and a random suffix), get
// more room. The longest instance subject, rpc.{service}.{method}.{instance},
// stays under 270 bytes.
const (
	MaxServiceLen  = 64
	MaxMethodLen   = 64
	MaxInstanceLen = 128
	MaxBucketLen   = 64
)

// The kinds of names, as NameError.Kind spells them.
const (
	kindService  = "service"
	kindMethod   = "method"
	kindInstance = "instance"
	kindBucket   = "bucket"
)

// ErrInvalidName is matched (errors.Is) by every *NameError.
var ErrInvalidName = errors.New("kitnats: invalid name")

// NameError says which name was refused and which rule it breaks. Kind is
// "service", "method", "instance" or "bucket".
type NameError struct {
	Kind   string
	Name   string
	Reason string
}

// Error names the refused name (quoted, at most 128 bytes of it) and the rule
// it breaks.
func (e *NameError) Error() string {
	return "kitnats: invalid " + e.Kind + " name " + safetext.Quote(e.Name) + ": " + e.Reason
}

// Unwrap returns ErrInvalidName.
func (e *NameError) Unwrap() error { return ErrInvalidName }

// ValidateService checks a service name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxServiceLen bytes. Every AegisSDK service name passes.
func ValidateService(name string) error { return validate(kindService, name) }

// ValidateMethod checks a method name: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most
// MaxMethodLen bytes (a little looser than AegisSDK's ^[a-z][a-z0-9_]*$).
func ValidateMethod(name string) error { return validate(kindMethod, name) }

// ValidateInstance checks an instance ID: ^[a-zA-Z0-9][a-zA-Z0-9_-]*$, at
// most MaxInstanceLen bytes.
func ValidateInstance(name string) error { return validate(kindInstance, name) }

// ValidateBucket checks a registry bucket name: ^[a-zA-Z0-9_-]+$, at most
// MaxBucketLen bytes.
func ValidateBucket(name string) error { return validate(kindBucket, name) }

func validate(kind, name string) error {
	limit, first := MaxServiceLen, isLetter
	switch kind {
	case kindMethod:
		limit = MaxMethodLen
	case kindInstance:
		limit, first = MaxInstanceLen, isAlnum
	case kindBucket:
		limit, first = MaxBucketLen, isWord
	}
	switch {
	case name == "":
		return &NameError{Kind: kind, Name: name, Reason: "empty"}
	case len(name) > limit:
		return &NameError{Kind: kind, Name: name, Reason: "longer than " + strconv.Itoa(limit) + " bytes"}
	case !first(name[0]):
		reason := "must start with a letter"
		switch kind {
		case kindInstance:
			reason = "must start with a letter or digit"
		case kindBucket:
			reason = "must start with a letter, digit, '_' or '-'"
		}
		return &NameError{Kind: kind, Name: name, Reason: reason}
	}
	for i := 1; i < len(name); i++ {
		if !isWord(name[i]) {
			return &NameError{Kind: kind, Name: name, Reason: "character " + strconv.QuoteRune(rune(name[i])) +
				" at " + strconv.Itoa(i) + " is not a letter, digit, '_' or '-'"}
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }
func isWord(c byte) bool   { return isAlnum(c) || c == '_' || c == '-' }

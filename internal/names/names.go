// Package names holds the one set of naming rules every part of kitnats
// applies before a name reaches NATS: the registry (keys), the transport
// (subjects) and the key layouts. A name that passes here can be registered,
// discovered and called; one that does not is refused with an *Error before
// anything is sent.
//
// Every name becomes a single subject token, so the rules exclude '.', '*',
// '>', white space and anything outside ASCII letters, digits, '_' and '-'.
package names

import (
	"errors"
	"strconv"
)

// The length limits, in bytes. Services and methods follow the AegisSDK's
// 64; instance IDs, often generated (a host name and a random suffix), get
// more room. The longest instance subject,
// rpc.{service}.{method}.{instance}, stays under 270 bytes.
const (
	MaxService  = 64
	MaxMethod   = 64
	MaxInstance = 128
	MaxBucket   = 64
)

// Kind is what a name names.
type Kind string

// The kinds of names kitnats validates.
const (
	Service  Kind = "service"
	Method   Kind = "method"
	Instance Kind = "instance"
	Bucket   Kind = "bucket"
)

// ErrInvalid is matched (errors.Is) by every *Error.
var ErrInvalid = errors.New("kitnats: invalid name")

// Error says which name was refused and which rule it breaks.
type Error struct {
	Kind   Kind
	Name   string
	Reason string
}

// Error names the refused name and the rule it breaks.
func (e *Error) Error() string {
	return "kitnats: invalid " + string(e.Kind) + " name " + strconv.Quote(e.Name) + ": " + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Validate checks name against the rules for its kind:
//
//   - service, method: ^[a-zA-Z][a-zA-Z0-9_-]*$, at most 64 bytes;
//   - instance: ^[a-zA-Z0-9][a-zA-Z0-9_-]*$, at most 128 bytes;
//   - bucket: ^[a-zA-Z0-9_-]+$, at most 64 bytes.
func Validate(kind Kind, name string) error {
	limit, first := MaxService, isLetter
	switch kind {
	case Method:
		limit = MaxMethod
	case Instance:
		limit, first = MaxInstance, isAlnum
	case Bucket:
		limit, first = MaxBucket, isWord
	}
	switch {
	case name == "":
		return &Error{Kind: kind, Name: name, Reason: "empty"}
	case len(name) > limit:
		return &Error{Kind: kind, Name: name, Reason: "longer than " + strconv.Itoa(limit) + " bytes"}
	case !first(name[0]):
		reason := "must start with a letter"
		switch kind {
		case Instance:
			reason = "must start with a letter or digit"
		case Bucket:
			reason = "must start with a letter, digit, '_' or '-'"
		}
		return &Error{Kind: kind, Name: name, Reason: reason}
	}
	for i := 1; i < len(name); i++ {
		if !isWord(name[i]) {
			return &Error{Kind: kind, Name: name, Reason: "character " + strconv.QuoteRune(rune(name[i])) +
				" at " + strconv.Itoa(i) + " is not a letter, digit, '_' or '-'"}
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }
func isWord(c byte) bool   { return isAlnum(c) || c == '_' || c == '-' }

// Package rpcheader is transport/natsrpc's header protocol: the deadline a
// request carries, the status a failed reply carries (the NATS micro
// convention), the W3C trace context keys, and go-kit's error body. It is
// internal so that the spelling of the wire is not part of kitnats' public
// surface; cmd/kitnats and tests may use it.
//
// Every value is hostile: each is read in time linear in its length, and
// error text quotes at most rpclimit.MaxQuote bytes of it.
package rpcheader

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// Header keys. nats.Header is case-sensitive, so these are written and read
// exactly as spelled here.
const (
	// Timeout carries the caller's remaining time budget when it sent the
	// request, in whole milliseconds as a decimal integer ("1500").
	// Relative, not absolute, so clock skew between hosts does not matter;
	// the server's deadline is its receive time plus this value.
	Timeout = "Kitnats-Timeout"
	// Error is the error message of a failed request (the NATS micro
	// convention).
	Error = "Nats-Service-Error"
	// ErrorCode is the status code of a failed request, three decimal
	// digits (the NATS micro convention).
	ErrorCode = "Nats-Service-Error-Code"
	// ErrorKind marks business errors with the value KindBusiness; absent
	// for transport and endpoint failures.
	ErrorKind = "Kitnats-Error-Kind"
	// KindBusiness is ErrorKind's value for endpoint.Failer errors.
	KindBusiness = "business"

	// Traceparent and Tracestate are the W3C trace context keys, lower case
	// as the W3C propagator writes them.
	Traceparent = "traceparent"
	Tracestate  = "tracestate"
)

// CodeInternal is the status of a failure without a well-formed code.
const CodeInternal = 500

// ErrMalformed is matched by the error of a header value that is not well
// formed.
var ErrMalformed = errors.New("natsrpc: malformed header")

type malformedError struct{ key, quoted string }

func (e *malformedError) Error() string {
	return "natsrpc: malformed header " + e.key + ": " + e.quoted
}

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

func malformed(key, v string) error {
	return &malformedError{key: key, quoted: safetext.Quote(v)}
}

// FormatTimeout encodes a remaining time budget for the Timeout header,
// truncated to whole milliseconds. ok is false when less than a millisecond
// remains, which a client treats as already expired.
func FormatTimeout(d time.Duration) (v string, ok bool) {
	ms := d.Milliseconds()
	if ms <= 0 {
		return "", false
	}
	return strconv.FormatInt(ms, 10), true
}

// ParseTimeout decodes a Timeout value: 1 to rpclimit.MaxTimeoutDigits
// decimal digits of milliseconds, nothing else (no sign, no spaces, no
// unit). Anything else is an error matching ErrMalformed.
func ParseTimeout(v string) (time.Duration, error) {
	if len(v) == 0 || len(v) > rpclimit.MaxTimeoutDigits {
		return 0, malformed(Timeout, v)
	}
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, malformed(Timeout, v)
		}
		ms = ms*10 + int64(c-'0')
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Status is what a failed reply says in its headers.
type Status struct {
	Code     int
	Message  string
	Business bool
}

// DecodeStatus reads the status of a reply: ok is false when the reply
// carries neither Error nor ErrorCode, a success. A malformed code
// (anything but three digits 100–999, or a missing code beside a message)
// becomes CodeInternal with the raw value quoted in the message, and err
// matches ErrMalformed: a garbled status is still a failure, never a
// success. The message is cut to rpclimit.MaxErrorMessage bytes.
func DecodeStatus(h nats.Header) (s Status, ok bool, err error) {
	msgs, hasMsg := h[Error]
	codes, hasCode := h[ErrorCode]
	if !hasMsg && !hasCode {
		return Status{}, false, nil
	}
	s.Code = CodeInternal
	if len(msgs) > 0 {
		s.Message = rpclimit.Message(msgs[0])
	}
	if v := h[ErrorKind]; len(v) > 0 && v[0] == KindBusiness {
		s.Business = true
	}
	var code string
	if len(codes) > 0 {
		code = codes[0]
	}
	c, valid := parseCode(code)
	if !valid {
		note := "malformed status code " + safetext.Quote(code)
		if s.Message == "" {
			s.Message = note
		} else {
			s.Message += " (" + note + ")"
		}
		return s, true, malformed(ErrorCode, code)
	}
	s.Code = c
	if s.Message == "" {
		s.Message = "status " + code
	}
	return s, true, nil
}

// parseCode accepts 3 decimal digits, 100–999.
func parseCode(v string) (int, bool) {
	if len(v) != 3 || v[0] < '1' || v[0] > '9' {
		return 0, false
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// EncodeStatus writes s into h (which must not be nil). A code outside
// 100–999 becomes CodeInternal. The message is cut to
// rpclimit.MaxErrorMessage bytes and stripped of CR, LF and other control
// characters: a raw newline in a header would corrupt the whole reply.
func EncodeStatus(h nats.Header, s Status) {
	code := s.Code
	if code < 100 || code > 999 {
		code = CodeInternal
	}
	h[ErrorCode] = []string{strconv.Itoa(code)}
	h[Error] = []string{sanitize(s.Message)}
	if s.Business {
		h[ErrorKind] = []string{KindBusiness}
	}
}

// sanitize cuts s, then blanks its control characters (strings.Map also
// writes invalid UTF-8 as U+FFFD, up to three times longer, so it cuts
// again).
func sanitize(s string) string {
	s = safetext.Cut(s, rpclimit.MaxErrorMessage)
	if strings.IndexFunc(s, isCtl) < 0 && utf8.ValidString(s) {
		if s == "" {
			return "error"
		}
		return s
	}
	return safetext.Cut(strings.Map(func(r rune) rune {
		if isCtl(r) {
			return ' '
		}
		return r
	}, s), rpclimit.MaxErrorMessage)
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

// Carrier adapts a nats.Header to OpenTelemetry's TextMapCarrier, so a
// propagator injects into and extracts from NATS headers directly. Keys are
// used exactly as given (W3C keys are lower case); nothing goes through
// http.Header, which would canonicalise them to "Traceparent".
type Carrier nats.Header

var _ propagation.TextMapCarrier = Carrier(nil)

// Get returns the first value of key, or "".
func (c Carrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value.
func (c Carrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header keys.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// GoKitErrorBody is go-kit's DefaultErrorEncoder body for message, byte for
// byte (encoding/json, HTML escaping included).
func GoKitErrorBody(message string) []byte {
	b, _ := json.Marshal(struct {
		Err string `json:"err"`
	}{message})
	return b
}

// GoKitPrefix starts every body go-kit's DefaultErrorEncoder writes.
var GoKitPrefix = []byte(`{"err":`)

// GoKitError reports whether data is go-kit's error body: a JSON object
// whose only member is "err", a string. It returns the message, cut to
// rpclimit.MaxErrorMessage bytes. encoding/json checks the whole body
// before it decodes anything, and decodes the member's value as raw bytes,
// so the read is linear and recurses nowhere, however deep the body nests.
func GoKitError(data []byte) (message string, ok bool) {
	data = bytes.TrimSpace(data)
	if len(data) < len(`{"err":""}`) || data[0] != '{' || !bytes.Contains(data, []byte(`"err"`)) {
		return "", false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil || len(m) != 1 {
		return "", false
	}
	v, found := m["err"]
	if !found || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	if json.Unmarshal(v, &message) != nil {
		return "", false
	}
	return rpclimit.Message(message), true
}

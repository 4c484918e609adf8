package natsrpc

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Header keys. nats.Header is case-sensitive, so these are written and read
// exactly as spelled here.
const (
	// HeaderTimeout carries the caller's remaining time budget when it sent
	// the request, in whole milliseconds as a decimal integer ("1500").
	// Relative, not absolute, so clock skew between hosts does not matter;
	// the server's deadline is its receive time plus this value.
	HeaderTimeout = "Kitnats-Timeout"
	// HeaderError is the error message of a failed request (the NATS micro
	// convention).
	HeaderError = "Nats-Service-Error"
	// HeaderErrorCode is the status code of a failed request, a decimal
	// integer (the NATS micro convention; see the Code constants).
	HeaderErrorCode = "Nats-Service-Error-Code"
	// HeaderErrorKind marks business errors with the value
	// ErrorKindBusiness; absent for transport and endpoint failures.
	HeaderErrorKind = "Kitnats-Error-Kind"
	// ErrorKindBusiness is HeaderErrorKind's value for endpoint.Failer errors.
	ErrorKindBusiness = "business"

	// HeaderTraceparent and HeaderTracestate are the W3C trace context keys,
	// lower case as the W3C propagator writes them.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// maxTimeoutDigits bounds the deadline header: 12 digits of milliseconds is
// over 30 years, and keeps the conversion to time.Duration from overflowing.
const maxTimeoutDigits = 12

// maxErrorMessage bounds an error message written into a header.
const maxErrorMessage = 1024

// HeaderCarrier adapts a nats.Header to OpenTelemetry's TextMapCarrier, so a
// propagator injects into and extracts from NATS headers directly. Keys are
// used exactly as given (W3C keys are lower case); nothing goes through
// http.Header, which would canonicalise them to "Traceparent".
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key, or "".
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// FormatTimeout encodes a remaining time budget for HeaderTimeout, truncated
// to whole milliseconds. ok is false when less than a millisecond remains,
// which the client treats as already expired.
func FormatTimeout(d time.Duration) (v string, ok bool) {
	ms := d.Milliseconds()
	if ms <= 0 {
		return "", false
	}
	return strconv.FormatInt(ms, 10), true
}

// ParseTimeout decodes a HeaderTimeout value: 1 to 12 decimal digits of
// milliseconds, nothing else (no sign, no spaces, no unit). Anything else is
// ErrMalformedHeader; the server then ignores the header.
func ParseTimeout(v string) (time.Duration, error) {
	if len(v) == 0 || len(v) > maxTimeoutDigits {
		return 0, malformed(HeaderTimeout, v)
	}
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, malformed(HeaderTimeout, v)
		}
		ms = ms*10 + int64(c-'0')
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// DecodeError reads the error status of a reply. It returns nil when the
// reply carries neither HeaderError nor HeaderErrorCode: a success. A
// malformed code (anything but three digits 100–999, or a missing code beside
// a message) becomes CodeInternal with the raw value kept in the message, and
// the second result is ErrMalformedHeader: a garbled status is still a
// failure, never a success.
func DecodeError(h nats.Header) (*Error, error) {
	msgs, hasMsg := h[HeaderError]
	codes, hasCode := h[HeaderErrorCode]
	if !hasMsg && !hasCode {
		return nil, nil
	}
	e := &Error{Code: CodeInternal}
	if len(msgs) > 0 {
		e.Message = msgs[0]
	}
	if v := h[HeaderErrorKind]; len(v) > 0 && v[0] == ErrorKindBusiness {
		e.Business = true
	}
	var code string
	if len(codes) > 0 {
		code = codes[0]
	}
	c, ok := parseCode(code)
	if !ok {
		if e.Message == "" {
			e.Message = "malformed status code " + strconv.Quote(code)
		} else {
			e.Message += " (malformed status code " + strconv.Quote(code) + ")"
		}
		return e, malformed(HeaderErrorCode, code)
	}
	e.Code = c
	if e.Message == "" {
		e.Message = "status " + code
	}
	return e, nil
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

// EncodeError writes e's status into h (which must not be nil). The message
// is cut to 1 KiB and stripped of CR, LF and other control characters: a raw
// newline in a header would corrupt the whole reply.
func EncodeError(h nats.Header, e *Error) {
	code := e.Code
	if code < 100 || code > 999 {
		code = CodeInternal
	}
	h[HeaderErrorCode] = []string{strconv.Itoa(code)}
	h[HeaderError] = []string{sanitize(e.Message)}
	if e.Business {
		h[HeaderErrorKind] = []string{ErrorKindBusiness}
	}
}

func sanitize(s string) string {
	if len(s) > maxErrorMessage {
		s = s[:maxErrorMessage]
	}
	if strings.IndexFunc(s, isCtl) < 0 {
		if s == "" {
			return "error"
		}
		return s
	}
	return strings.Map(func(r rune) rune {
		if isCtl(r) {
			return ' '
		}
		return r
	}, s)
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

func malformed(key, v string) error {
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return &headerError{key: key, value: v}
}

type headerError struct{ key, value string }

func (e *headerError) Error() string {
	return "natsrpc: malformed header " + e.key + ": " + strconv.Quote(e.value)
}
func (e *headerError) Is(target error) bool { return target == ErrMalformedHeader }

// msgSize is the size NATS counts against max payload: header block and data.
func msgSize(m *nats.Msg) int64 {
	n := int64(len(m.Data))
	if len(m.Header) > 0 {
		n += int64(len("NATS/1.0\r\n\r\n"))
		for k, vs := range m.Header {
			for _, v := range vs {
				n += int64(len(k) + len(v) + 4) // "k: v\r\n"
			}
		}
	}
	return n
}

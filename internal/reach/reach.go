// Package reach tells, from a failed call's error, whether the call reached
// an instance and what the instance made of it, for transports kitnats does
// not own: HTTP (net/http, go-kit transport/http) and gRPC (grpc-go, go-kit
// transport/grpc). middleware/retry and middleware/breaker consult it for
// errors their own transport contract (a Retryable() bool method) does not
// cover.
//
// It imports neither grpc-go nor any HTTP package beyond the standard
// library. HTTP failures are recognised by the error types of net and
// net/url and by go-kit's StatusCoder convention (an error with a
// StatusCode() int method, which a client decoder returns for a non-2xx
// answer). gRPC failures are recognised by grpc-go's documented extension
// point, an error with a GRPCStatus() method whose result has a Code()
// method (google.golang.org/grpc/status.FromError reads the same), found by
// reflection on failure paths only, so the library compiles without
// grpc-go and works with whatever version the caller uses.
package reach

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"reflect"
	"syscall"
)

// Class is what a failed call's error proves.
type Class uint8

const (
	// Unknown: nothing recognised here; the caller's other rules decide.
	Unknown Class = iota
	// Answered: the instance answered on purpose (HTTP 4xx but 408 and
	// 429; gRPC INVALID_ARGUMENT, NOT_FOUND, ...): a verdict on the
	// request, which proves the instance healthy.
	Answered
	// Unreached: the request was not processed, by the transport's own
	// convention: the connection could not be made (refused, no route,
	// dial timeout) or was closed as idle by the server as the request
	// started on it, HTTP 503, 429 or 408, gRPC UNAVAILABLE or
	// RESOURCE_EXHAUSTED. Safe to send elsewhere.
	Unreached
	// Timeout: the call may have been processed and ran out of time: an
	// HTTP read timeout or 504, gRPC DEADLINE_EXCEEDED.
	Timeout
	// Cut: the connection broke after the request went out (reset, EOF),
	// or a gateway lost the instance (HTTP 502): it may have been processed.
	Cut
	// Failed: the instance answered with a fault of its own (HTTP 500, 501,
	// 505..599; gRPC INTERNAL, UNKNOWN, DATA_LOSS).
	Failed
)

// String names the class, for tests and logs.
func (c Class) String() string {
	switch c {
	case Answered:
		return "answered"
	case Unreached:
		return "unreached"
	case Timeout:
		return "timeout"
	case Cut:
		return "cut"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// maxDepth bounds the walk of an error's chain: errors are built by code,
// but a cyclic or absurdly deep chain must not hang a failure path.
const maxDepth = 32

// Of classifies err. A gRPC status or an HTTP status carried by the error
// decides first (the instance's own word), then the network error the HTTP
// client met. nil and errors it does not recognise are Unknown, and so are
// cancellations: the caller gave up, the instance did nothing wrong.
func Of(err error) Class {
	if err == nil || errors.Is(err, context.Canceled) {
		return Unknown
	}
	if code, ok := GRPCCode(err); ok {
		return ofGRPC(code)
	}
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		if c := ofHTTP(sc.StatusCode()); c != Unknown {
			return c
		}
	}
	return ofNet(err)
}

// ofHTTP classifies an HTTP status an error carries.
func ofHTTP(code int) Class {
	switch {
	case code == 408 || code == 429 || code == 503:
		return Unreached
	case code == 502:
		return Cut
	case code == 504:
		return Timeout
	case code >= 500 && code <= 599:
		return Failed
	case code >= 100 && code <= 499:
		return Answered
	}
	return Unknown
}

// gRPC status codes, as the gRPC specification numbers them
// (google.golang.org/grpc/codes).
const (
	grpcOK                = 0
	grpcCanceled          = 1
	grpcUnknown           = 2
	grpcInvalidArgument   = 3
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcDataLoss          = 15
	grpcUnauthenticated   = 16
)

// ofGRPC classifies a gRPC status code. Codes 3, 5, 6, 7, 9, 10, 11, 12 and
// 16 are the server's verdict on the request (invalid, not found, exists,
// denied, precondition, aborted, out of range, unimplemented,
// unauthenticated).
func ofGRPC(code uint32) Class {
	switch code {
	case grpcOK, grpcCanceled:
		return Unknown
	case grpcUnavailable, grpcResourceExhausted:
		return Unreached
	case grpcDeadlineExceeded:
		return Timeout
	case grpcUnknown, grpcInternal, grpcDataLoss:
		return Failed
	}
	if code >= grpcInvalidArgument && code <= grpcUnauthenticated {
		return Answered
	}
	return Unknown // a code from a later specification
}

// ofNet classifies the network error an HTTP client returned: the call
// never connected, timed out, or was cut. Only errors the HTTP client or
// the net package wrapped count (a *url.Error or a *net.OpError): an io.EOF
// from a response decoder reading an empty body is not a broken connection.
func ofNet(err error) Class {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return Unreached
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Unreached // a connection refused is always a dial's
	}
	var ue *url.Error
	inURL := errors.As(err, &ue)
	if !inURL && op == nil {
		return Unknown
	}
	if inURL && ue.Err != nil && ue.Err.Error() == errServerClosedIdle {
		return Unreached
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || op != nil {
		return Cut
	}
	return Unknown
}

// errServerClosedIdle is the text of net/http's unexported
// errServerClosedIdle: the server closed a kept-alive connection as idle
// (the client's peek read EOF while it expected no response) as a request
// was starting on it, so the server never read the request. net/http
// retries it itself only for replayable requests (idempotent methods with
// a rewindable body), so go-kit clients that POST see it whenever an
// instance shuts down or times out idle connections. Text is all there is
// to match; it comes from the local standard library, never the network.
const errServerClosedIdle = "http: server closed idle connection"

// GRPCCode is the gRPC status code err carries: the first error in its
// chain with a GRPCStatus() method returning a non-nil value whose Code()
// method returns an unsigned integer, as grpc-go's status errors have.
// ok is false when there is none.
func GRPCCode(err error) (code uint32, ok bool) {
	var found bool
	walk(err, 0, func(e error) bool {
		code, found = grpcCodeOf(e)
		return found
	})
	return code, found
}

// walk visits err's chain depth first, as errors.As does, until visit
// returns true; it stops at maxDepth.
func walk(err error, depth int, visit func(error) bool) bool {
	for err != nil && depth < maxDepth {
		if visit(err) {
			return true
		}
		depth++
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if walk(e, depth, visit) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// grpcCodeOf reads one error's gRPC status by reflection: grpc-go's status
// error has GRPCStatus() *status.Status, and *status.Status has
// Code() codes.Code, a uint32. Method names given as constants keep the
// linker's dead-code elimination intact.
func grpcCodeOf(err error) (uint32, bool) {
	v := reflect.ValueOf(err)
	if v.Kind() == reflect.Pointer && v.IsNil() {
		return 0, false // a method on a nil receiver may panic
	}
	m := v.MethodByName("GRPCStatus")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return 0, false
	}
	st := m.Call(nil)[0]
	switch st.Kind() {
	case reflect.Pointer, reflect.Interface:
		if st.IsNil() {
			return 0, false
		}
	}
	c := st.MethodByName("Code")
	if !c.IsValid() || c.Type().NumIn() != 0 || c.Type().NumOut() != 1 {
		return 0, false
	}
	code := c.Call(nil)[0]
	switch code.Kind() {
	case reflect.Uint32, reflect.Uint, reflect.Uint64, reflect.Uint16, reflect.Uint8:
		if code.Uint() > 1<<31 {
			return 0, false
		}
		return uint32(code.Uint()), true
	}
	return 0, false
}

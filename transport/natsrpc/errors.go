package natsrpc

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// Status codes carried in the Nats-Service-Error-Code header. They follow
// HTTP so that people and other NATS micro clients read them without a
// table; any code an error chooses (with a StatusCode() int method, as
// go-kit's transport/http.StatusCoder) travels unchanged.
const (
	CodeBadRequest    = 400 // the request could not be decoded
	CodeUnprocessable = 422 // default for business errors (endpoint.Failer)
	CodeInternal      = 500 // the endpoint failed, panicked, or its reply could not be encoded
	CodeUnavailable   = 503 // not served (shutting down, or overloaded: the wait would outlast the deadline); never processed, retry elsewhere
	CodeTimeout       = 504 // the deadline passed before the handler ran, or the handler returned context.DeadlineExceeded
)

// Error is a failure reported by the remote side in the reply's headers. On
// the server it is what the default error encoder writes; on the client it is
// what a call returns when the reply carries an error status. A message read
// from a reply is cut to 1 KiB, as a server writes it.
//
// Business is true when the endpoint answered with a response whose
// endpoint.Failer reported an error: the service worked and said "no", so
// neither retries nor circuit breakers should treat it as a fault. Retryable
// reports whether the request was provably not processed (code 503).
type Error struct {
	Code     int
	Message  string
	Business bool
	// Data is the reply body sent with the error, if any.
	Data []byte

	err error // the server-side cause; nil on the client
}

var _ interface {
	error
	Retryable() bool
	BusinessError() bool
} = (*Error)(nil)

func (e *Error) Error() string {
	kind := "remote error "
	if e.Business {
		kind = "business error "
	}
	return "natsrpc: " + kind + strconv.Itoa(e.Code) + ": " + e.Message
}

// Unwrap returns the server-side cause, if the error was built from one.
func (e *Error) Unwrap() error { return e.err }

// Retryable reports whether the remote side refused the request without
// processing it (CodeUnavailable), so another instance may safely take it.
// Retry middleware finds it through errors.As with
// interface{ Retryable() bool }, without importing this package.
func (e *Error) Retryable() bool { return e.Code == CodeUnavailable && !e.Business }

// BusinessError reports whether the error came from endpoint.Failer, for
// middleware that must not count business errors as faults and does not
// import this package.
func (e *Error) BusinessError() bool { return e.Business }

// Is makes errors.Is(err, ErrRemote) hold for every remote error,
// errors.Is(err, ErrBusiness) for business errors, and
// errors.Is(err, context.DeadlineExceeded) for CodeTimeout: the server ran
// out of the caller's deadline, which is the caller's timeout seen from the
// other side.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrRemote:
		return true
	case ErrBusiness:
		return e.Business
	case context.DeadlineExceeded:
		return e.Code == CodeTimeout && !e.Business
	}
	return false
}

// Sentinels for errors.Is.
var (
	// ErrRemote matches every *Error.
	ErrRemote = errors.New("natsrpc: remote error")
	// ErrBusiness matches a *Error whose Business flag is set.
	ErrBusiness = errors.New("natsrpc: business error")

	// ErrNoResponders: no handler subscribed to the subject, so the request
	// was certainly not processed. errors.Is(err, nats.ErrNoResponders)
	// holds too, and the error is Retryable.
	ErrNoResponders error = &retryableSentinel{msg: "natsrpc: no responders", cause: nats.ErrNoResponders}
	// ErrConnClosed: the connection was closed or draining before the
	// request was sent. Retryable.
	ErrConnClosed error = &retryableSentinel{msg: "natsrpc: connection closed or draining", cause: nats.ErrConnectionClosed}
	// ErrClientClosed: the endpoint's io.Closer (from Factory) was closed,
	// normally because its instance left; the request was not sent. Retryable.
	ErrClientClosed error = &retryableSentinel{msg: "natsrpc: client closed"}

	// ErrPayloadTooLarge is matched by *PayloadError: a message over the
	// connection's max payload, refused before it is sent.
	ErrPayloadTooLarge = errors.New("natsrpc: payload too large")
	// ErrNilConn: a constructor was given a nil *nats.Conn.
	ErrNilConn = errors.New("natsrpc: nil connection")
	// ErrUnexpectedType: a typed helper got a value of another type.
	ErrUnexpectedType = errors.New("natsrpc: unexpected type")
)

type retryableSentinel struct {
	msg   string
	cause error
}

func (e *retryableSentinel) Error() string   { return e.msg }
func (e *retryableSentinel) Unwrap() error   { return e.cause }
func (e *retryableSentinel) Retryable() bool { return true }

// CallError is a client call that failed in the transport, before or
// without a reply: no responders, a closed connection, a timeout, a
// cancellation, an encoding failure. Err is this package's sentinel or the
// context's error; Cause, when set, is the nats.go error behind it. Both are
// reachable with errors.Is / errors.As.
type CallError struct {
	Subject string
	Err     error
	Cause   error
}

func (e *CallError) Error() string {
	s := "natsrpc: call " + e.Subject + ": " + e.Err.Error()
	if e.Cause != nil && e.Cause != e.Err && !errors.Is(e.Err, e.Cause) {
		s += " (" + e.Cause.Error() + ")"
	}
	return s
}

// Unwrap exposes both Err and Cause to errors.Is and errors.As.
func (e *CallError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// Retryable reports whether the request provably never reached a handler:
// no responders, a connection closed or draining before the send, a closed
// client. Timeouts and cancellations are not retryable: the handler may have
// run.
func (e *CallError) Retryable() bool {
	var r interface{ Retryable() bool }
	return errors.As(e.Err, &r) && r.Retryable()
}

// Gone reports whether the call found no responders on an instance's own
// subject (rpc.{service}.{method}.{instance}): no process of that instance
// listens any more. lb's EndpointSet takes such an instance out of its
// candidates while other instances answer. No responders on the
// service-wide subject says nothing of one instance.
func (e *CallError) Gone() bool {
	return e.Err == ErrNoResponders && strings.Count(e.Subject, ".") == 3
}

// PayloadError is a message larger than the connection's max payload. It
// matches ErrPayloadTooLarge.
type PayloadError struct {
	Subject string
	Size    int64 // header and data bytes
	Max     int64
}

func (e *PayloadError) Error() string {
	return "natsrpc: payload too large for " + e.Subject + ": " + strconv.FormatInt(e.Size, 10) +
		" bytes > max payload " + strconv.FormatInt(e.Max, 10)
}

// Is makes errors.Is(err, ErrPayloadTooLarge) hold.
func (e *PayloadError) Is(target error) bool { return target == ErrPayloadTooLarge }

// Retryable is false: every instance has the same limit.
func (e *PayloadError) Retryable() bool { return false }

// newError is an *Error whose message is prefix and the cause's text, cut
// to rpclimit.MaxErrorMessage bytes: a cause may quote the request (a JSON
// decoder quotes the number it could not store), and the message is
// replied, logged and kept for $SRV.STATS.
func newError(code int, prefix string, cause error) *Error {
	return &Error{Code: code, Message: rpclimit.Message(prefix + cause.Error()), err: cause}
}

// asError converts any error into the *Error a server replies: the *Error in
// err's chain if there is one, otherwise an error with the code an error in
// the chain chooses (statusCode), CodeTimeout for context.DeadlineExceeded,
// or CodeInternal.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	def := CodeInternal
	if errors.Is(err, context.DeadlineExceeded) {
		def = CodeTimeout
	}
	return newError(statusCode(err, def), "", err)
}

// statusCode is the code an error chooses with a StatusCode() int method
// (go-kit's transport/http.StatusCoder), if it is 100–999, or def.
func statusCode(err error, def int) int {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		if c := sc.StatusCode(); c >= 100 && c <= 999 {
			return c
		}
	}
	return def
}

// replyError is the *Error a reply's status headers carry, nil for a
// success. A garbled status is still a failure (rpcheader.DecodeStatus).
func replyError(reply *nats.Msg) *Error {
	if len(reply.Header) == 0 {
		return nil
	}
	st, failed, _ := rpcheader.DecodeStatus(reply.Header)
	if !failed {
		return nil
	}
	e := &Error{Code: st.Code, Message: st.Message, Business: st.Business}
	if len(reply.Data) > 0 {
		e.Data = reply.Data
	}
	return e
}

// errorReply is a reply to subject carrying only an error status.
func errorReply(subject string, code int, msg string) *nats.Msg {
	reply := &nats.Msg{Subject: subject, Header: make(nats.Header, 2)}
	rpcheader.EncodeStatus(reply.Header, rpcheader.Status{Code: code, Message: msg})
	return reply
}

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

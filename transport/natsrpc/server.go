package natsrpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/transport"
	"github.com/nats-io/nats.go"
)

// DecodeRequestFunc extracts a user-domain request from a request message.
// Its error is replied as CodeBadRequest.
type DecodeRequestFunc func(ctx context.Context, msg *nats.Msg) (request any, err error)

// EncodeResponseFunc writes a user-domain response into the reply message
// (Data and, if it likes, Header). The server publishes the reply.
type EncodeResponseFunc func(ctx context.Context, reply *nats.Msg, response any) error

// RequestFunc may take information from a request message into the context
// (server side), or put information from the context into the outgoing
// message's headers (client side, before the send).
type RequestFunc func(ctx context.Context, msg *nats.Msg) context.Context

// ServerResponseFunc may take information from the context into the reply
// message, after the endpoint succeeded and before the response is encoded.
type ServerResponseFunc func(ctx context.Context, reply *nats.Msg) context.Context

// ServerFinalizerFunc runs at the end of every request, whatever happened:
// err is the failure that was replied, or nil.
type ServerFinalizerFunc func(ctx context.Context, msg *nats.Msg, reply *nats.Msg, err error)

// ErrorEncoder writes err into the reply message. The default,
// DefaultErrorEncoder, writes the status headers the client decodes.
type ErrorEncoder func(ctx context.Context, err error, reply *nats.Msg)

// Server serves one method: it wraps an endpoint with a request decoder and a
// response encoder, as go-kit's transports do. A Server does not subscribe by
// itself: give it to NewService, which runs it on the service-wide and
// instance subjects with bounded concurrency, deadlines and trace context.
type Server struct {
	e            endpoint.Endpoint
	dec          DecodeRequestFunc
	enc          EncodeResponseFunc
	before       []RequestFunc
	after        []ServerResponseFunc
	finalizer    []ServerFinalizerFunc
	errorEncoder ErrorEncoder
	errorHandler transport.ErrorHandler
}

// ServerOption sets an optional parameter of a Server.
type ServerOption func(*Server)

// NewServer constructs a method server. Every argument is required.
func NewServer(e endpoint.Endpoint, dec DecodeRequestFunc, enc EncodeResponseFunc, opts ...ServerOption) *Server {
	s := &Server{e: e, dec: dec, enc: enc, errorEncoder: DefaultErrorEncoder}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ServerBefore adds functions run on the request message before it is
// decoded, for example to take metadata out of headers.
func ServerBefore(before ...RequestFunc) ServerOption {
	return func(s *Server) { s.before = append(s.before, before...) }
}

// ServerAfter adds functions run after the endpoint succeeded, before the
// response is encoded.
func ServerAfter(after ...ServerResponseFunc) ServerOption {
	return func(s *Server) { s.after = append(s.after, after...) }
}

// ServerFinalizer adds functions run at the end of every request.
func ServerFinalizer(f ...ServerFinalizerFunc) ServerOption {
	return func(s *Server) { s.finalizer = append(s.finalizer, f...) }
}

// ServerErrorEncoder replaces DefaultErrorEncoder. An encoder that does not
// write the status headers makes failures look like successes to the client.
func ServerErrorEncoder(ee ErrorEncoder) ServerOption {
	return func(s *Server) { s.errorEncoder = ee }
}

// ServerErrorHandler receives every error the server replies, for logging or
// metrics; replies are sent whatever it does.
func ServerErrorHandler(h transport.ErrorHandler) ServerOption {
	return func(s *Server) { s.errorHandler = h }
}

// DefaultErrorEncoder writes err as status headers: a *Error (anywhere in the
// chain) keeps its code, message and business flag; an error implementing
// StatusCoder chooses its code; anything else is CodeInternal. The message is
// err.Error().
func DefaultErrorEncoder(_ context.Context, err error, reply *nats.Msg) {
	if reply.Header == nil {
		reply.Header = make(nats.Header, 3)
	}
	EncodeError(reply.Header, AsError(err))
}

// AsError converts any error into the *Error a server replies: the *Error in
// err's chain if there is one, otherwise an error with the code a StatusCoder
// in the chain chooses, CodeTimeout for context.DeadlineExceeded, or
// CodeInternal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	def := CodeInternal
	if errors.Is(err, context.DeadlineExceeded) {
		def = CodeTimeout
	}
	return &Error{Code: statusCode(err, def), Message: err.Error(), err: err}
}

func statusCode(err error, def int) int {
	var sc StatusCoder
	if errors.As(err, &sc) {
		if c := sc.StatusCode(); c >= 100 && c <= 999 {
			return c
		}
	}
	return def
}

// errPanic marks the *Error a recovered panic became.
var errPanic = errors.New("natsrpc: handler panicked")

// serve runs one request through the method and returns the reply to
// publish: into (a zero message the caller provides, so it can share the
// request's allocation) on success, a fresh message on failure. A panic
// anywhere in the hooks, codecs or endpoint becomes a CodeInternal reply.
func (s *Server) serve(ctx context.Context, msg, into *nats.Msg) (reply *nats.Msg, err error) {
	reply = into
	reply.Subject = msg.Reply
	if len(s.finalizer) > 0 {
		defer func() {
			for _, f := range s.finalizer {
				f(ctx, msg, reply, err)
			}
		}()
	}
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Code: CodeInternal, Message: fmt.Sprint("panic: ", r), err: errPanic}
			reply = s.fail(ctx, err, msg)
		}
	}()

	for _, f := range s.before {
		ctx = f(ctx, msg)
	}
	request, err := s.dec(ctx, msg)
	if err != nil {
		err = &Error{Code: CodeBadRequest, Message: "decode request: " + err.Error(), err: err}
		return s.fail(ctx, err, msg), err
	}
	response, err := s.e(ctx, request)
	if err != nil {
		return s.fail(ctx, err, msg), err
	}
	if f, ok := response.(endpoint.Failer); ok {
		if ferr := f.Failed(); ferr != nil {
			err = &Error{Code: statusCode(ferr, CodeUnprocessable), Message: ferr.Error(), Business: true, err: ferr}
			return s.fail(ctx, err, msg), err
		}
	}
	for _, f := range s.after {
		ctx = f(ctx, reply)
	}
	if err = s.enc(ctx, reply, response); err != nil {
		err = &Error{Code: CodeInternal, Message: "encode response: " + err.Error(), err: err}
		return s.fail(ctx, err, msg), err
	}
	return reply, nil
}

// fail builds an error reply on a fresh message, so nothing a failed encoder
// half-wrote leaks into it.
func (s *Server) fail(ctx context.Context, err error, msg *nats.Msg) *nats.Msg {
	if s.errorHandler != nil {
		s.errorHandler.Handle(ctx, err)
	}
	reply := &nats.Msg{Subject: msg.Reply, Header: make(nats.Header, 3)}
	s.errorEncoder(ctx, err, reply)
	return reply
}

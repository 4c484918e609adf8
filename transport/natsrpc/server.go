package natsrpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/transport"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
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

// ResponseFunc works on a reply message: on a Client it may take
// information from a successful reply into the context, before the response
// is decoded; on a Server it may take information from the context into the
// reply, after the endpoint succeeded and before the response is encoded.
type ResponseFunc func(ctx context.Context, reply *nats.Msg) context.Context

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
	after        []ResponseFunc
	finalizer    []func(ctx context.Context, msg, reply *nats.Msg, err error)
	errorEncoder ErrorEncoder
	errorHandler transport.ErrorHandler
}

// NewServer constructs a method server. Every argument is required. It
// panics with an error matching ErrInvalidOption on an option it cannot
// use.
func NewServer(e endpoint.Endpoint, dec DecodeRequestFunc, enc EncodeResponseFunc, opts ...ServerOption) *Server {
	s := &Server{e: e, dec: dec, enc: enc, errorEncoder: DefaultErrorEncoder}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyServer(s); err != nil {
			panic(err)
		}
	}
	return s
}

// DefaultErrorEncoder writes err as status headers: a *Error (anywhere in the
// chain) keeps its code, message and business flag; an error with a
// StatusCode() int method chooses its code; anything else is CodeInternal.
// The message is err.Error(), cut to 1 KiB and stripped of control
// characters.
func DefaultErrorEncoder(_ context.Context, err error, reply *nats.Msg) {
	if reply.Header == nil {
		reply.Header = make(nats.Header, 3)
	}
	e := asError(err)
	rpcheader.EncodeStatus(reply.Header, rpcheader.Status{Code: e.Code, Message: e.Message, Business: e.Business})
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
			err = &Error{Code: CodeInternal, Message: rpclimit.Message(fmt.Sprint("panic: ", r)), err: errPanic}
			reply = s.fail(ctx, err, msg)
		}
	}()

	for _, f := range s.before {
		ctx = f(ctx, msg)
	}
	request, err := s.dec(ctx, msg)
	if err != nil {
		err = newError(CodeBadRequest, "decode request: ", err)
		return s.fail(ctx, err, msg), err
	}
	response, err := s.e(ctx, request)
	if err != nil {
		return s.fail(ctx, err, msg), err
	}
	if f, ok := response.(endpoint.Failer); ok {
		if ferr := f.Failed(); ferr != nil {
			e := newError(statusCode(ferr, CodeUnprocessable), "", ferr)
			e.Business = true
			err = e
			return s.fail(ctx, err, msg), err
		}
	}
	for _, f := range s.after {
		ctx = f(ctx, reply)
	}
	if err = s.enc(ctx, reply, response); err != nil {
		err = newError(CodeInternal, "encode response: ", err)
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

package natsrpc

import (
	"context"
	"encoding/json"
	"reflect"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
)

// EncodeJSONRequest is an EncodeRequestFunc that JSON-encodes the request
// into the message body.
func EncodeJSONRequest(_ context.Context, msg *nats.Msg, request any) error {
	return encodeJSON(msg, request)
}

// EncodeJSONResponse is an EncodeResponseFunc that JSON-encodes the response
// into the reply body.
func EncodeJSONResponse(_ context.Context, reply *nats.Msg, response any) error {
	return encodeJSON(reply, response)
}

// DecodeJSONRequest is a DecodeRequestFunc that decodes a JSON body into a
// T and hands the endpoint a T, so the endpoint's type assertion is on a
// known type. Use it as natsrpc.DecodeJSONRequest[MyRequest].
func DecodeJSONRequest[T any](_ context.Context, msg *nats.Msg) (any, error) {
	return decodeJSON[T](msg)
}

// DecodeJSONResponse is a DecodeResponseFunc that decodes a JSON reply body
// into a T. Use it as natsrpc.DecodeJSONResponse[MyResponse]. A reply with
// an error status in its headers, or whose body is exactly go-kit's error
// body {"err": "…"} while T has no "err" field of its own (a struct
// without one; not a map, an interface or a json.Unmarshaler), is an
// *Error instead, so the function also serves as a go-kit Publisher's
// decoder (see gokit.go).
func DecodeJSONResponse[T any](_ context.Context, reply *nats.Msg) (any, error) {
	return decodeJSONResponse[T](reply)
}

// encodeJSON is the body of both JSON encoders: requests and replies are
// both messages whose Data is the JSON of a value.
func encodeJSON(m *nats.Msg, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m.Data = b
	return nil
}

// decodeJSON is the body of both JSON decoders: a T, or an error.
func decodeJSON[T any](m *nats.Msg) (any, error) {
	var v T
	if err := json.Unmarshal(m.Data, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// TypedEndpoint turns a typed function into a go-kit endpoint for a server
// whose decoder yields Req (DecodeJSONRequest[Req] does). A request of
// another type is an error matching ErrUnexpectedType, replied as
// CodeBadRequest.
func TypedEndpoint[Req, Resp any](f func(context.Context, Req) (Resp, error)) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req, ok := request.(Req)
		if !ok {
			return nil, &Error{Code: CodeBadRequest, Message: typeMismatch[Req](request).Error(), err: ErrUnexpectedType}
		}
		return f(ctx, req)
	}
}

// NewJSONServer is NewServer with JSON codecs and a typed function: the
// request body is decoded into a Req and the Resp is encoded as the reply.
func NewJSONServer[Req, Resp any](f func(context.Context, Req) (Resp, error), opts ...ServerOption) *Server {
	// The decoded request goes from decoder to endpoint only, so it travels
	// as a *Req: one allocation, where a Req in an interface takes two.
	e := func(ctx context.Context, request any) (any, error) {
		req, ok := request.(*Req)
		if !ok {
			return nil, &Error{Code: CodeBadRequest, Message: typeMismatch[Req](request).Error(), err: ErrUnexpectedType}
		}
		return f(ctx, *req)
	}
	return NewServer(e, decodeJSONPointer[Req], EncodeJSONResponse, opts...)
}

// decodeJSONPointer decodes a JSON body into a new T.
func decodeJSONPointer[T any](_ context.Context, m *nats.Msg) (any, error) {
	v := new(T)
	if err := json.Unmarshal(m.Data, v); err != nil {
		return nil, err
	}
	return v, nil
}

// Call invokes a client endpoint and asserts the response type, so callers
// never cast interface{} by hand. A response of another type is an error
// matching ErrUnexpectedType.
func Call[Resp any](ctx context.Context, e endpoint.Endpoint, request any) (Resp, error) {
	var zero Resp
	response, err := e(ctx, request)
	if err != nil {
		return zero, err
	}
	r, ok := response.(Resp)
	if !ok {
		return zero, typeMismatch[Resp](response)
	}
	return r, nil
}

// JSONFactory is Factory with JSON codecs, decoding replies into a Resp.
func JSONFactory[Resp any](nc *nats.Conn, service, method string, opts ...ClientOption) sd.Factory {
	return Factory(nc, service, method, EncodeJSONRequest, DecodeJSONResponse[Resp], opts...)
}

type typeError struct{ want, have string }

func (e *typeError) Error() string {
	return "natsrpc: unexpected type: want " + e.want + ", have " + e.have
}
func (e *typeError) Is(target error) bool { return target == ErrUnexpectedType }

func typeMismatch[T any](v any) error {
	have := "nil"
	if v != nil {
		have = reflect.TypeOf(v).String()
	}
	return &typeError{want: reflect.TypeFor[T]().String(), have: have}
}

package natsrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// Living with go-kit's transport/nats.
//
// go-kit's Subscriber replies an error as a body, {"err": "message"} (its
// DefaultErrorEncoder: json.Marshal of a struct with one field tagged
// "err"), with no headers; its Publisher sends no headers at all and
// decodes replies with whatever DecodeResponseFunc it is given. The codec
// pairing:
//
//   - natsrpc client → go-kit Subscriber: NewClient(nc, subject,
//     EncodeJSONRequest, DecodeJSONResponse[T]). DecodeJSONResponse reads
//     go-kit's error body as an *Error (CodeInternal, the message), so an
//     error is never a success with an empty response. The Subscriber
//     ignores the Kitnats-Timeout header: its handler runs without the
//     caller's deadline.
//   - go-kit Publisher → natsrpc Service: NewPublisher(nc, subject,
//     EncodeJSONRequest, DecodeJSONResponse[T]) — both functions have
//     go-kit's types. A request without kitnats headers that is not an
//     AegisSDK envelope gets the Service's default deadline
//     (WithDefaultTimeout) and, on failure, the status headers and
//     go-kit's body, which DecodeJSONResponse (or any go-kit decoder that
//     reads "err") turns into an error.

// GoKitErrorEncoder is an ErrorEncoder (see WithErrorEncoder) that writes
// the status headers, as DefaultErrorEncoder does, and go-kit's body
// {"err": "message"} too, for every request. A Service already adds the
// body to the error replies of requests without kitnats headers; this is
// for go-kit callers whose requests carry them.
func GoKitErrorEncoder(ctx context.Context, err error, reply *nats.Msg) {
	DefaultErrorEncoder(ctx, err, reply)
	reply.Data = rpcheader.GoKitErrorBody(rpclimit.Message(asError(err).Message))
}

// decodeJSONResponse is DecodeJSONResponse's body: the status headers'
// error if the reply has one (a go-kit Publisher does not check them
// itself), go-kit's error body when T cannot hold it, or the JSON of a T.
func decodeJSONResponse[T any](reply *nats.Msg) (any, error) {
	if e := replyError(reply); e != nil {
		return nil, e
	}
	if bytes.HasPrefix(reply.Data, rpcheader.GoKitPrefix) && !holdsErr(reflect.TypeFor[T]()) {
		if msg, ok := rpcheader.GoKitError(reply.Data); ok {
			return nil, &Error{Code: CodeInternal, Message: msg, Data: reply.Data}
		}
	}
	return decodeJSON[T](reply)
}

var holdsErrCache sync.Map // reflect.Type → bool

// holdsErr reports whether a JSON object {"err": "…"} decodes into t with
// its err kept: t is a map, an interface, or a struct with a field
// encoding/json would match to "err" (names match case-insensitively).
// Into any other type the body would decode to nothing, or fail: it is
// go-kit's error.
func holdsErr(t reflect.Type) bool {
	if v, ok := holdsErrCache.Load(t); ok {
		return v.(bool)
	}
	h := computeHoldsErr(t)
	holdsErrCache.Store(t, h)
	return h
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func computeHoldsErr(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return true // it decides for itself
	}
	switch t.Kind() {
	case reflect.Map, reflect.Interface:
		return true
	case reflect.Struct:
		for _, f := range reflect.VisibleFields(t) {
			if !f.IsExported() || f.Anonymous && f.Type.Kind() == reflect.Struct {
				continue
			}
			name := f.Name
			if tag, ok := f.Tag.Lookup("json"); ok {
				if tag == "-" {
					continue
				}
				if n, _, _ := strings.Cut(tag, ","); n != "" {
					name = n
				}
			}
			if strings.EqualFold(name, "err") {
				return true
			}
		}
	}
	return false
}

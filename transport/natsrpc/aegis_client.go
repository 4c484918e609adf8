package natsrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// Calling AegisSDK services: a Client with WithEnvelope frames requests in
// AegisSDK envelopes and reads replies as AegisSDK writes them.

// EnvelopeFormat is the encoding of an AegisSDK envelope. The Python
// AegisSDK frames every RPC in an envelope and uses no NATS headers;
// envelopes travel as msgpack (its default) or JSON, told apart by their
// first byte, and an AegisSDK server replies in its own format whatever the
// request used, so a Client reads replies in either.
type EnvelopeFormat uint8

const (
	// EnvelopeJSON is JSON, AegisSDK's optional format.
	EnvelopeJSON EnvelopeFormat = EnvelopeFormat(envelope.JSON)
	// EnvelopeMsgpack is msgpack, AegisSDK's default format.
	EnvelopeMsgpack EnvelopeFormat = EnvelopeFormat(envelope.Msgpack)
)

func (f EnvelopeFormat) valid() bool { return envelope.Format(f).Valid() }

// ErrMalformedEnvelope is matched by the error of a reply, or of a request
// a Service answers, that is not an AegisSDK envelope under AegisSDK's
// strict rules.
var ErrMalformedEnvelope = envelope.ErrMalformed

// ErrNotActive is matched by the error of a call an AegisSDK standby
// refused ("NOT_ACTIVE", in either of its two shapes): the request was not
// processed, and the error is Retryable, so retry middleware moves to
// another instance.
var ErrNotActive = errors.New("natsrpc: instance not active")

// EnvelopeError is an AegisSDK reply that is not a success: success false
// with its error text, or a standby's NOT_ACTIVE answer (NotActive true, in
// either shape). errors.Is(err, ErrRemote) holds for every EnvelopeError,
// errors.Is(err, ErrNotActive) for the NOT_ACTIVE ones. It is Retryable only
// when NotActive: any other failure may come after the handler ran.
//
// AegisSDK errors are free text without codes, so an EnvelopeError does not
// say whether the failure was the handler's deliberate answer or a fault.
type EnvelopeError struct {
	// Message is the reply's error (the result's message for a NOT_ACTIVE
	// of the first shape), cut to 1 KiB.
	Message   string
	NotActive bool
	// MessageID is the reply's message_id; CorrelationID the message_id of
	// the request it answers.
	MessageID, CorrelationID string
}

var _ interface {
	error
	Retryable() bool
	BusinessError() bool
} = (*EnvelopeError)(nil)

func (e *EnvelopeError) Error() string {
	if e.NotActive {
		return "natsrpc: not active: " + e.Message
	}
	return "natsrpc: remote error: " + e.Message
}

// Retryable reports whether the instance refused without processing the
// request: a NOT_ACTIVE answer.
func (e *EnvelopeError) Retryable() bool { return e.NotActive }

// BusinessError is false: an AegisSDK error does not say whether it was a
// deliberate answer. (Its presence tells middleware the instance answered.)
func (e *EnvelopeError) BusinessError() bool { return false }

// Is makes errors.Is(err, ErrRemote) hold, and errors.Is(err, ErrNotActive)
// for NOT_ACTIVE answers.
func (e *EnvelopeError) Is(target error) bool {
	return target == ErrRemote || target == ErrNotActive && e.NotActive
}

// isRemote reports whether a decoder's error is the remote side's answer
// (an *Error or an *EnvelopeError, from an envelope or a go-kit error body),
// which a Client returns as is, rather than a failure to decode.
func isRemote(err error) bool { return errors.Is(err, ErrRemote) }

// notActive tells whether a reply is a standby's answer, in either of
// AegisSDK's two shapes, and returns its message:
//
//  1. success true, result {"success": false, "error": "NOT_ACTIVE", "message": "…", …};
//  2. success false, an error containing NOT_ACTIVE.
//
// The result is read by encoding/json into scalars only: it checks the
// whole result first and skips nested values without recursing.
func notActive(r *envelope.Response) (string, bool) {
	if !r.Success {
		if strings.Contains(r.Error, envelope.NotActiveCode) {
			return r.Error, true
		}
		return "", false
	}
	if len(r.Result) == 0 || r.Result[0] != '{' || !bytes.Contains(r.Result, []byte(envelope.NotActiveCode)) {
		return "", false
	}
	var shape struct {
		Success *bool   `json:"success"`
		Error   *string `json:"error"`
		Message *string `json:"message"`
	}
	if json.Unmarshal(r.Result, &shape) != nil || shape.Success == nil || *shape.Success ||
		shape.Error == nil || *shape.Error != envelope.NotActiveCode {
		return "", false
	}
	if shape.Message != nil && *shape.Message != "" {
		return *shape.Message, true
	}
	return envelope.NotActiveCode, true
}

// aegisConfig is what a Client knows of AegisSDK: whether it speaks
// envelopes, and how its Factory learns which instances do not.
type aegisConfig struct {
	format EnvelopeFormat // 0: the headers protocol
	source string         // the envelope's source
	meta   func(instance string) (map[string]string, bool)
}

// initEnvelope wraps the client's codecs in envelopes, once its options are
// applied.
func (c *Client) initEnvelope() {
	if c.aegis.format == 0 {
		return
	}
	service, method := subjectNames(c.subject)
	c.enc = envelopeEncoder(c.enc, envelope.Format(c.aegis.format), c.aegis.source, service, method)
	c.dec = envelopeDecoder(c.dec)
}

// subjectNames takes the service and method out of
// rpc.{service}.{method}[.{instance}]; for any other subject, the method
// is its last token and the service unknown.
func subjectNames(subject string) (service, method string) {
	tokens := strings.Split(subject, ".")
	if len(tokens) >= 3 && len(tokens) <= 4 && tokens[0] == "rpc" {
		return tokens[1], tokens[2]
	}
	return "", tokens[len(tokens)-1]
}

func envelopeEncoder(enc EncodeRequestFunc, f envelope.Format, source, service, method string) EncodeRequestFunc {
	return func(ctx context.Context, msg *nats.Msg, request any) error {
		if err := enc(ctx, msg, request); err != nil {
			return err
		}
		env := envelope.Request{
			Head: envelope.Head{
				MessageID: newUUID(),
				TraceID:   traceUUID(ctx),
				Timestamp: isoNow(),
				Source:    source,
				Target:    service,
			},
			Method: method,
			Params: msg.Data,
		}
		if dl, ok := ctx.Deadline(); ok {
			// Whole milliseconds, as the headers protocol sends them.
			env.Timeout = max(math.Floor(time.Until(dl).Seconds()*1000)/1000, 0.001)
		}
		data, err := env.Encode(f)
		if err != nil {
			return err
		}
		msg.Data = data
		return nil
	}
}

func envelopeDecoder(dec DecodeResponseFunc) DecodeResponseFunc {
	return func(ctx context.Context, reply *nats.Msg) (any, error) {
		env, _, err := envelope.DecodeResponse(reply.Data)
		if err != nil {
			return nil, err
		}
		if msg, ok := notActive(env); ok {
			return nil, envelopeError(env, msg, true)
		}
		if !env.Success {
			return nil, envelopeError(env, env.Error, false)
		}
		return dec(ctx, &nats.Msg{Subject: reply.Subject, Header: reply.Header, Data: env.Result, Sub: reply.Sub})
	}
}

func envelopeError(env *envelope.Response, msg string, notActive bool) *EnvelopeError {
	return &EnvelopeError{Message: rpclimit.Message(msg), NotActive: notActive,
		MessageID: env.MessageID, CorrelationID: env.CorrelationID}
}

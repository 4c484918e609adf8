package natsrpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/aegis-sdk/kitnats/wire"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

// Living with AegisSDK services: the client side (ClientEnvelope,
// ClientMetadata and Factory's addressing) and the server side (the
// per-request detection of envelopes and foreign callers).

// ---- errors ----

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
	// of the first shape).
	Message   string
	NotActive bool
	// Reply is the whole reply envelope, for its IDs.
	Reply *ResponseEnvelope
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

// ---- identifiers and timestamps ----

// newUUID is a random (version 4) UUID in its 36-character form. Message IDs
// need uniqueness, not secrecy: math/rand/v2's generator is seeded from the
// system and runs without a lock.
func newUUID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// traceUUID is the W3C trace ID of ctx in UUID form, so that an AegisSDK
// peer's logs carry the trace kitnats' spans belong to, or a random UUID
// when ctx has no trace.
func traceUUID(ctx context.Context) string {
	if id := trace.SpanContextFromContext(ctx).TraceID(); id.IsValid() {
		return formatUUID(id)
	}
	return newUUID()
}

func formatUUID(b [16]byte) string {
	const hexdigits = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hexdigits[c>>4], hexdigits[c&0x0f]
		j += 2
	}
	return string(s[:])
}

// isoLayout writes UTC with microseconds and the offset as Python's
// isoformat does: "2025-08-08T05:02:24.123456+00:00".
const isoLayout = "2006-01-02T15:04:05.000000+00:00"

func isoNow() string { return time.Now().UTC().Format(isoLayout) }

// ---- AegisSDK's "not active" answers ----

// notActive tells whether a reply is a standby's answer, in either of
// AegisSDK's two shapes, and returns its message:
//
//  1. success true, result {"success": false, "error": "NOT_ACTIVE", "message": "…", …};
//  2. success false, an error containing NOT_ACTIVE.
func notActive(r *ResponseEnvelope) (string, bool) {
	if !r.Success {
		if strings.Contains(r.Error, NotActiveCode) {
			return r.Error, true
		}
		return "", false
	}
	if !isJSONObject(r.Result) || !bytes.Contains(r.Result, []byte(NotActiveCode)) {
		return "", false
	}
	var shape struct {
		Success *bool   `json:"success"`
		Error   *string `json:"error"`
		Message *string `json:"message"`
	}
	if json.Unmarshal(r.Result, &shape) != nil || shape.Success == nil || *shape.Success ||
		shape.Error == nil || *shape.Error != NotActiveCode {
		return "", false
	}
	if shape.Message != nil && *shape.Message != "" {
		return *shape.Message, true
	}
	return NotActiveCode, true
}

// ---- client ----

// aegisConfig is what a Client knows of AegisSDK: whether it speaks
// envelopes, and how its Factory learns which instances do not.
type aegisConfig struct {
	format EnvelopeFormat // 0: the headers protocol
	source string         // the envelope's source
	meta   MetadataFunc   // for Factory only
}

// ClientEnvelope makes the client speak AegisSDK envelopes in format f
// (EnvelopeJSON or EnvelopeMsgpack; replies are read in either) instead of
// the headers protocol. The request encoder's output must be a JSON object:
// it becomes the envelope's params, converted to msgpack for
// EnvelopeMsgpack. The envelope's method and target are the method and
// service of the client's subject (rpc.{service}.{method}[.{instance}]);
// its timeout is the caller's remaining time in seconds; its trace_id is
// the W3C trace ID of the caller's span in UUID form, if there is one. The
// Kitnats-Timeout header is not sent (the timeout is in the envelope), so a
// kitnats Service answers in envelopes too; trace headers still are.
//
// A reply is decoded under AegisSDK's strict rules, in JSON or msgpack
// whatever was sent. On success the response decoder gets a message whose
// Data is the result as JSON. success:false becomes an *EnvelopeError with
// the remote message, not retryable; a NOT_ACTIVE answer in either shape
// an *EnvelopeError that matches ErrNotActive and is Retryable. A reply
// that is not a valid envelope is a decode error, never a success.
//
// With ClientMetadata, Factory uses envelopes only for instances that do
// not serve instance subjects (see Factory).
func ClientEnvelope(f EnvelopeFormat) ClientOption {
	return func(c *Client) {
		if f.valid() {
			c.aegis.format = f
		}
	}
}

// ClientEnvelopeSource sets the envelope's source, the caller's instance ID
// (null by default). It does not turn envelopes on.
func ClientEnvelopeSource(instance string) ClientOption {
	return func(c *Client) { c.aegis.source = instance }
}

func withoutEnvelope(c *Client) { c.aegis.format = 0 }

func withEnvelope(c *Client) {
	if c.aegis.format == 0 {
		c.aegis.format = EnvelopeJSON
	}
}

// initEnvelope wraps the client's codecs in envelopes, once its options are
// applied.
func (c *Client) initEnvelope() {
	if c.aegis.format == 0 {
		return
	}
	service, method := subjectNames(c.subject)
	c.enc = envelopeEncoder(c.enc, c.aegis.format, c.aegis.source, service, method)
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

func envelopeEncoder(enc EncodeRequestFunc, f EnvelopeFormat, source, service, method string) EncodeRequestFunc {
	return func(ctx context.Context, msg *nats.Msg, request any) error {
		if err := enc(ctx, msg, request); err != nil {
			return err
		}
		env := RequestEnvelope{
			MessageID: newUUID(),
			TraceID:   traceUUID(ctx),
			Timestamp: isoNow(),
			Source:    source,
			Target:    service,
			Method:    method,
			Params:    msg.Data,
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
		env, _, err := DecodeResponseEnvelope(reply.Data)
		if err != nil {
			return nil, err
		}
		if msg, ok := notActive(env); ok {
			return nil, &EnvelopeError{Message: msg, NotActive: true, Reply: env}
		}
		if !env.Success {
			return nil, &EnvelopeError{Message: env.Error, Reply: env}
		}
		return dec(ctx, &nats.Msg{Subject: reply.Subject, Header: reply.Header, Data: env.Result, Sub: reply.Sub})
	}
}

// ---- Factory's addressing ----

// ServesInstanceSubjects reports whether registry metadata says the
// instance serves its instance subjects (MetadataRPC = RPCInstance).
func ServesInstanceSubjects(metadata map[string]string) bool {
	return metadata[wire.MetadataRPC] == wire.RPCInstance
}

// MetadataFunc returns the registry metadata of an instance, ok false when
// it is not known. For a natskv.Instancer:
//
//	func(id string) (map[string]string, bool) {
//		a, ok := instancer.Describe(id)
//		return a.Metadata, ok
//	}
type MetadataFunc func(instance string) (metadata map[string]string, ok bool)

// ClientMetadata lets Factory address each instance as its registry
// metadata says (see Factory). Only Factory reads it.
func ClientMetadata(lookup MetadataFunc) ClientOption {
	return func(c *Client) { c.aegis.meta = lookup }
}

// factoryMetadata is the MetadataFunc among Factory's options, or nil.
func factoryMetadata(opts []ClientOption) MetadataFunc {
	var probe Client
	for _, o := range opts {
		o(&probe)
	}
	return probe.aegis.meta
}

// addressingFactory is Factory with ClientMetadata: an instance whose
// metadata says it serves instance subjects is called there, with the
// headers protocol; any other — an AegisSDK instance, or one the lookup
// does not know — on the service-wide subject, in envelopes (the format
// of ClientEnvelope, JSON by default). Each instance still gets its own
// client, so the balancer counts, ejects and closes it per instance, though
// on the service-wide subject whichever instance NATS picks answers.
func addressingFactory(nc *nats.Conn, service, method string, enc EncodeRequestFunc, dec DecodeResponseFunc, lookup MetadataFunc, opts []ClientOption) sd.Factory {
	instanceOpts := append(slices.Clip(opts), withoutEnvelope)
	serviceOpts := append(slices.Clip(opts), withEnvelope)
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		if err := wire.ValidateInstance(instance); err != nil {
			return nil, nil, err
		}
		var (
			c   *Client
			err error
		)
		if md, ok := lookup(instance); ok && ServesInstanceSubjects(md) {
			c, err = NewInstanceClient(nc, service, method, instance, enc, dec, instanceOpts...)
		} else {
			c, err = NewServiceClient(nc, service, method, enc, dec, serviceOpts...)
		}
		if err != nil {
			return nil, nil, err
		}
		return c.Endpoint(), c, nil
	}
}

// ---- server ----

// foreignRequest is a request without the Kitnats-Timeout header: from an
// AegisSDK client (an envelope), or from go-kit's transport/nats or any
// other plain NATS client.
type foreignRequest struct {
	envelope bool
	format   EnvelopeFormat
	req      *RequestEnvelope // the decoded envelope; nil if it did not decode
	err      error            // why it did not
}

// plainRequest is every foreign request that is not an envelope.
var plainRequest = &foreignRequest{}

var (
	tagMessageID = []byte(`"message_id"`)
	tagMethod    = []byte(`"method"`)
)

// sniffForeign tells what a request without kitnats headers is. An
// envelope is a JSON object or msgpack map (by the first byte, as AegisSDK
// tells them) with message_id and method among its top-level keys; it is
// then decoded under the strict rules, and a failure is kept for the reply.
// Anything else is a plain request, served as a kitnats one.
func sniffForeign(data []byte) *foreignRequest {
	f := DetectEnvelopeFormat(data)
	r := new(RequestEnvelope)
	var err error
	if f == EnvelopeJSON {
		if !bytes.Contains(data, tagMessageID) || !bytes.Contains(data, tagMethod) {
			return plainRequest
		}
		hasID, hasMethod := false, false
		if eachMember(data, func(k, _ []byte) error {
			hasID = hasID || string(k) == keyMessageID
			hasMethod = hasMethod || string(k) == keyMethod
			return nil
		}) != nil || !hasID || !hasMethod {
			return plainRequest
		}
		err = decodeRequestJSON(data, r, true) // validated by eachMember above
	} else {
		if !msgpackHasIDAndMethod(data) {
			return plainRequest
		}
		err = decodeRequestMsgpack(data, r)
	}
	if err != nil {
		return &foreignRequest{envelope: true, format: f, err: err}
	}
	return &foreignRequest{envelope: true, format: f, req: r}
}

// msgpackHasIDAndMethod reports whether data is a msgpack map with
// message_id and method among its top-level keys.
func msgpackHasIDAndMethod(data []byte) bool {
	rd := newMsgpackReader(data)
	defer rd.release()
	n, err := rd.mapLen()
	if err != nil {
		return false
	}
	hasID, hasMethod := false, false
	for range n {
		k, err := rd.key()
		if err != nil || rd.d.Skip() != nil {
			return false
		}
		hasID = hasID || string(k) == keyMessageID
		hasMethod = hasMethod || string(k) == keyMethod
	}
	return hasID && hasMethod
}

// arriveForeign classifies a request that came without Kitnats-Timeout. An
// envelope's timeout is the caller's deadline, counted from arrival like
// the header's; other foreign requests get the service's default deadline.
func (s *Service) arriveForeign(j *job) {
	f := sniffForeign(j.msg.Data)
	j.foreign = f
	if f.req != nil {
		j.deadline = j.recv.Add(f.req.Deadline())
		j.caller = true
	}
}

// serveForeign serves a foreign request. A plain one is served as usual;
// its error replies also carry go-kit's body, {"err": "message"}, which a
// go-kit Publisher can decode. An envelope's handler sees a message whose
// Data is the params as JSON (headers and subject unchanged); the reply is
// an envelope in the request's format, whatever happened: the result (the
// response encoder's output, which must be JSON) on success,
// success:false with the message otherwise — an undecodable envelope, a
// decode failure, a business error, a panic. Finalizers see the message and
// reply of the headers protocol.
func (s *Server) serveForeign(ctx context.Context, f *foreignRequest, msg, into *nats.Msg) (*nats.Msg, error) {
	if !f.envelope {
		reply, err := s.serve(ctx, msg, into)
		if err != nil && len(reply.Data) == 0 {
			reply.Data = goKitErrorBody(AsError(err).Message)
		}
		return reply, err
	}
	if f.err != nil {
		err := &Error{Code: CodeBadRequest, Message: "invalid request envelope: " + f.err.Error(), err: f.err}
		if s.errorHandler != nil {
			s.errorHandler.Handle(ctx, err)
		}
		reply := f.errorEnvelope(msg.Reply, err)
		for _, fin := range s.finalizer {
			fin(ctx, msg, reply, err)
		}
		return reply, err
	}
	inner := &nats.Msg{Subject: msg.Subject, Reply: msg.Reply, Header: msg.Header, Data: f.req.Params, Sub: msg.Sub}
	if len(inner.Data) == 0 {
		inner.Data = []byte("{}")
	}
	reply, err := s.serve(ctx, inner, into)
	if err != nil {
		return f.errorEnvelope(msg.Reply, err), err
	}
	env := f.response(true)
	env.Result = reply.Data
	data, eerr := env.Encode(f.format)
	if eerr != nil {
		err = &Error{Code: CodeInternal, Message: "encode response: the result is not JSON: " + eerr.Error(), err: eerr}
		if s.errorHandler != nil {
			s.errorHandler.Handle(ctx, err)
		}
		return f.errorEnvelope(msg.Reply, err), err
	}
	reply.Data = data
	return reply, nil
}

// response starts a reply envelope to f's request.
func (f *foreignRequest) response(success bool) *ResponseEnvelope {
	env := &ResponseEnvelope{MessageID: newUUID(), TraceID: newUUID(), Timestamp: isoNow(), Success: success}
	if f.req != nil {
		env.CorrelationID = f.req.MessageID
	}
	return env
}

// envelopeErrorText is the error of a success:false reply: the message of
// the error's *Error (as the headers protocol would send it). A 503 — the
// request was not processed — reads "NOT_ACTIVE: …", which AegisSDK
// clients retry on another instance.
func envelopeErrorText(e *Error) string {
	if e.Code == CodeUnavailable && !e.Business {
		return NotActiveCode + ": " + e.Message
	}
	return e.Message
}

// errorEnvelope is a success:false reply to subject.
func (f *foreignRequest) errorEnvelope(subject string, err error) *nats.Msg {
	env := f.response(false)
	env.Error = envelopeErrorText(AsError(err))
	data, _ := env.Encode(f.format) // no result: cannot fail
	return &nats.Msg{Subject: subject, Data: data}
}

// errorReply is the reply of a request the Service refuses or drops
// without running it (see Service.replyError), in the caller's protocol.
func (j *job) errorReply(code int, msg string) *nats.Msg {
	f := j.foreign
	if f == nil {
		return errorReply(j.msg.Reply, code, msg)
	}
	if f.envelope {
		return f.errorEnvelope(j.msg.Reply, &Error{Code: code, Message: msg})
	}
	reply := errorReply(j.msg.Reply, code, msg)
	reply.Data = goKitErrorBody(msg)
	return reply
}

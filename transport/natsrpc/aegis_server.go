package natsrpc

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// Serving callers that do not speak the headers protocol: AegisSDK clients
// (envelopes) and go-kit's transport/nats or any other plain NATS client.

// foreignRequest is a request without the Kitnats-Timeout header: from an
// AegisSDK client (an envelope), or from go-kit's transport/nats or any
// other plain NATS client.
type foreignRequest struct {
	envelope bool
	format   envelope.Format
	req      *envelope.Request // the decoded envelope; nil if it did not decode
	err      error             // why it did not
}

// plainRequest is every foreign request that is not an envelope.
var plainRequest = &foreignRequest{}

// sniffForeign tells what a request without kitnats headers is. An
// envelope is a JSON object or msgpack map with message_id and method among
// its top-level keys; it is then decoded under the strict rules, and a
// failure is kept for the reply. Anything else is a plain request, served
// as a kitnats one. Both walks are linear in the body and bounded in depth
// by explicit stacks: this runs on the reader, before admission.
func sniffForeign(data []byte) *foreignRequest {
	r, f, ok, err := envelope.SniffRequest(data)
	switch {
	case !ok:
		return plainRequest
	case err != nil:
		return &foreignRequest{envelope: true, format: f, err: err}
	}
	return &foreignRequest{envelope: true, format: f, req: r}
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
			reply.Data = rpcheader.GoKitErrorBody(rpclimit.Message(asError(err).Message))
		}
		return reply, err
	}
	if f.err != nil {
		err := newError(CodeBadRequest, "invalid request envelope: ", f.err)
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
		err = newError(CodeInternal, "encode response: the result is not JSON: ", eerr)
		if s.errorHandler != nil {
			s.errorHandler.Handle(ctx, err)
		}
		return f.errorEnvelope(msg.Reply, err), err
	}
	reply.Data = data
	return reply, nil
}

// response starts a reply envelope to f's request.
func (f *foreignRequest) response(success bool) *envelope.Response {
	env := &envelope.Response{Head: envelope.Head{MessageID: newUUID(), TraceID: newUUID(), Timestamp: isoNow()}, Success: success}
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
	msg := rpclimit.Message(e.Message)
	if e.Code == CodeUnavailable && !e.Business {
		return envelope.NotActiveCode + ": " + msg
	}
	return msg
}

// errorEnvelope is a success:false reply to subject.
func (f *foreignRequest) errorEnvelope(subject string, err error) *nats.Msg {
	env := f.response(false)
	env.Error = envelopeErrorText(asError(err))
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
	reply.Data = rpcheader.GoKitErrorBody(msg)
	return reply
}

package envelope

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// DefaultTimeout is the timeout of a request envelope that carries none, as
// AegisSDK defaults it.
const DefaultTimeout = 5 * time.Second

// NotActiveCode is the text by which an AegisSDK standby instance says it is
// not the active one: in an error string of a success:false reply, or as the
// "error" of a result map of a success:true reply.
const NotActiveCode = "NOT_ACTIVE"

// Head is the six members that requests and responses share, in the order
// writers use. The nullable ones use "" for null.
type Head struct {
	MessageID     string // a UUID
	TraceID       string // a UUID
	CorrelationID string // "" is null
	Timestamp     string // ISO-8601 UTC, "2025-08-08T05:02:24.123456+00:00"
	Source        string // "" is null; the caller's instance ID
	Target        string // "" is null; the target service
}

// Request is an AegisSDK request: a map with exactly these keys
// (snake_case; in this order when written, every one of them):
//
//	message_id      string         a UUID
//	trace_id        string         a UUID
//	correlation_id  string | null
//	timestamp       string         ISO-8601 UTC
//	source          string | null  the caller's instance ID
//	target          string | null  the target service
//	method          string         required
//	params          map            never null; the only thing the handler receives
//	timeout         number > 0     seconds; 5.0 when absent
type Request struct {
	Head
	Method string
	// Params is the request's params as a JSON object, whatever the
	// envelope's format (msgpack params are converted). nil is {}.
	Params json.RawMessage
	// Timeout is the caller's budget in seconds; 0 is the default (5 s).
	Timeout float64
}

// Response is an AegisSDK response: the head (a new message_id and
// trace_id, correlation_id = the request's message_id, source and target
// null), then success (bool), result (any) and error, null when success is
// true and a string when it is false. Errors are free text, without codes.
type Response struct {
	Head
	Success bool
	// Result is the result as JSON, whatever the envelope's format (msgpack
	// is converted); a decoded null is "null", and nil is written as null.
	Result json.RawMessage
	// Error is written as null when Success is true.
	Error string
}

// Deadline is the time the caller allows from now: Timeout, or
// DefaultTimeout when it is 0; at least a nanosecond (a positive timeout
// too short to count has still run out), at most rpclimit.MaxEnvelopeTimeout.
func (r *Request) Deadline() time.Duration {
	if r.Timeout <= 0 {
		return DefaultTimeout
	}
	if r.Timeout >= rpclimit.MaxEnvelopeTimeout.Seconds() {
		return rpclimit.MaxEnvelopeTimeout
	}
	return max(time.Duration(r.Timeout*float64(time.Second)), time.Nanosecond)
}

func (r *Request) timeoutOrDefault() float64 {
	if r.Timeout > 0 && !math.IsInf(r.Timeout, 0) {
		return r.Timeout
	}
	return DefaultTimeout.Seconds()
}

// Key names, in the order writers use.
const (
	keyMessageID     = "message_id"
	keyTraceID       = "trace_id"
	keyCorrelationID = "correlation_id"
	keyTimestamp     = "timestamp"
	keySource        = "source"
	keyTarget        = "target"
	keyMethod        = "method"
	keyParams        = "params"
	keyTimeout       = "timeout"
	keySuccess       = "success"
	keyResult        = "result"
	keyError         = "error"
)

var (
	errParamsNotObject = errors.New("natsrpc: envelope params must be a JSON object")
	errResultNotJSON   = errors.New("natsrpc: envelope result is not JSON")
)

// ---- writing ----

func (h *Head) appendJSON(b []byte) []byte {
	b = append(b, `{"message_id":`...)
	b = appendJSONString(b, h.MessageID)
	b = append(b, `,"trace_id":`...)
	b = appendJSONString(b, h.TraceID)
	b = append(b, `,"correlation_id":`...)
	b = appendJSONNullable(b, h.CorrelationID)
	b = append(b, `,"timestamp":`...)
	b = appendJSONString(b, h.Timestamp)
	b = append(b, `,"source":`...)
	b = appendJSONNullable(b, h.Source)
	b = append(b, `,"target":`...)
	return appendJSONNullable(b, h.Target)
}

// appendMsgpack starts a map of the nine members of either envelope with
// the six of the head.
func (h *Head) appendMsgpack(b []byte) []byte {
	b = appendMapLen(b, 9)
	b = appendStr(b, keyMessageID)
	b = appendStr(b, h.MessageID)
	b = appendStr(b, keyTraceID)
	b = appendStr(b, h.TraceID)
	b = appendStr(b, keyCorrelationID)
	b = appendNullable(b, h.CorrelationID)
	b = appendStr(b, keyTimestamp)
	b = appendStr(b, h.Timestamp)
	b = appendStr(b, keySource)
	b = appendNullable(b, h.Source)
	b = appendStr(b, keyTarget)
	return appendNullable(b, h.Target)
}

// AppendJSON appends r as a JSON envelope. Params must be a JSON object (or
// nil for {}).
func (r *Request) AppendJSON(b []byte) ([]byte, error) {
	params := r.Params
	if len(params) == 0 {
		params = json.RawMessage("{}")
	} else if !isJSONObject(params) {
		return b, errParamsNotObject
	}
	out := r.Head.appendJSON(b)
	out = append(out, `,"method":`...)
	out = appendJSONString(out, r.Method)
	out = append(out, `,"params":`...)
	out = append(out, params...)
	out = append(out, `,"timeout":`...)
	out = appendJSONFloat(out, r.timeoutOrDefault())
	return append(out, '}'), nil
}

// AppendMsgpack appends r as a msgpack envelope; its params, given as a
// JSON object, are written as a msgpack map.
func (r *Request) AppendMsgpack(b []byte) ([]byte, error) {
	out := r.Head.appendMsgpack(b)
	out = appendStr(out, keyMethod)
	out = appendStr(out, r.Method)
	out = appendStr(out, keyParams)
	if len(r.Params) == 0 {
		out = appendMapLen(out, 0)
	} else {
		if !isJSONObject(r.Params) {
			return b, errParamsNotObject
		}
		var err error
		if out, err = appendJSONAsMsgpack(out, r.Params); err != nil {
			return b, err
		}
	}
	out = appendStr(out, keyTimeout)
	return appendFloat64(out, r.timeoutOrDefault()), nil
}

// Encode writes r in format f.
func (r *Request) Encode(f Format) ([]byte, error) {
	if f == Msgpack {
		return r.AppendMsgpack(nil)
	}
	return r.AppendJSON(nil)
}

// AppendJSON appends r as a JSON envelope. Result must be JSON (nil is
// null).
func (r *Response) AppendJSON(b []byte) ([]byte, error) {
	result := r.Result
	if len(result) == 0 {
		result = json.RawMessage("null")
	} else if !json.Valid(result) {
		return b, errResultNotJSON
	}
	out := r.Head.appendJSON(b)
	out = append(out, `,"success":`...)
	out = strconv.AppendBool(out, r.Success)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	out = append(out, `,"error":`...)
	if r.Success {
		out = append(out, "null"...)
	} else {
		out = appendJSONString(out, r.Error)
	}
	return append(out, '}'), nil
}

// AppendMsgpack appends r as a msgpack envelope; its result, given as JSON,
// is written as the msgpack value of that JSON.
func (r *Response) AppendMsgpack(b []byte) ([]byte, error) {
	out := r.Head.appendMsgpack(b)
	out = appendStr(out, keySuccess)
	out = appendBool(out, r.Success)
	out = appendStr(out, keyResult)
	if len(r.Result) == 0 {
		out = append(out, mpNil)
	} else {
		var err error
		if out, err = appendJSONAsMsgpack(out, r.Result); err != nil {
			return b, err
		}
	}
	out = appendStr(out, keyError)
	if r.Success {
		return append(out, mpNil), nil
	}
	return appendStr(out, r.Error), nil
}

// Encode writes r in format f.
func (r *Response) Encode(f Format) ([]byte, error) {
	if f == Msgpack {
		return r.AppendMsgpack(nil)
	}
	return r.AppendJSON(nil)
}

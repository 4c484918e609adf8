package natsrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// EnvelopeFormat is the encoding of an AegisSDK envelope (RequestEnvelope,
// ResponseEnvelope). The Python AegisSDK frames every RPC in an envelope and
// uses no NATS headers. Envelopes travel as JSON or msgpack (its default).
// A receiver tells them apart by the first byte (DetectEnvelopeFormat), and
// an AegisSDK server replies in its own configured format whatever the
// request used, so a reply is decoded in either. msgpack strings are str
// (never bin), map keys strings, and timestamps ISO strings, never the
// timestamp extension.
type EnvelopeFormat uint8

const (
	// EnvelopeJSON is JSON, AegisSDK's optional format.
	EnvelopeJSON EnvelopeFormat = iota + 1
	// EnvelopeMsgpack is msgpack, AegisSDK's default format.
	EnvelopeMsgpack
)

func (f EnvelopeFormat) String() string {
	switch f {
	case EnvelopeJSON:
		return "json"
	case EnvelopeMsgpack:
		return "msgpack"
	}
	return "EnvelopeFormat(" + strconv.Itoa(int(f)) + ")"
}

func (f EnvelopeFormat) valid() bool { return f == EnvelopeJSON || f == EnvelopeMsgpack }

// DetectEnvelopeFormat tells an envelope's format by its first byte, as
// AegisSDK does: 0x80–0x9F or 0xC0–0xDF is msgpack (a fixmap, a fixarray,
// nil, bool, bin, ext, a number, str8–32, array16/32 or map16/32),
// anything else, the empty body included, is JSON.
func DetectEnvelopeFormat(data []byte) EnvelopeFormat {
	if len(data) > 0 {
		if c := data[0]; c >= 0x80 && c <= 0x9f || c >= 0xc0 && c <= 0xdf {
			return EnvelopeMsgpack
		}
	}
	return EnvelopeJSON
}

// DefaultEnvelopeTimeout is the timeout of a request envelope that carries
// none, as AegisSDK defaults it.
const DefaultEnvelopeTimeout = 5 * time.Second

// maxEnvelopeTimeout caps the deadline a request envelope may ask for: any
// positive float is a valid timeout to AegisSDK, and a day is as good as
// forever for one call.
const maxEnvelopeTimeout = 24 * time.Hour

// RequestEnvelope is an AegisSDK request: a map with exactly these keys
// (snake_case; in this order when written, every one of them):
//
//	message_id      string         a UUID
//	trace_id        string         a UUID
//	correlation_id  string | null
//	timestamp       string         ISO-8601 UTC, "2025-08-08T05:02:24.123456+00:00"
//	source          string | null  the caller's instance ID
//	target          string | null  the target service
//	method          string         required
//	params          map            never null; the only thing the handler receives
//	timeout         number > 0     seconds; 5.0 when absent
//
// The nullable string fields use "" for null.
type RequestEnvelope struct {
	MessageID     string
	TraceID       string
	CorrelationID string // "" is null
	Timestamp     string
	Source        string // "" is null
	Target        string // "" is null
	Method        string
	// Params is the request's params as a JSON object, whatever the
	// envelope's format (msgpack params are converted). nil is {}.
	Params json.RawMessage
	// Timeout is the caller's budget in seconds; 0 is the default (5 s).
	Timeout float64
}

// Deadline is the time the caller allows from now: Timeout, or
// DefaultEnvelopeTimeout when it is 0; at least a nanosecond, at most a day.
func (r *RequestEnvelope) Deadline() time.Duration {
	if r.Timeout <= 0 {
		return DefaultEnvelopeTimeout
	}
	return secondsToDuration(r.Timeout)
}

// secondsToDuration converts a positive timeout: at least a nanosecond (a
// positive timeout too short to count has still run out), at most a day.
func secondsToDuration(s float64) time.Duration {
	if s >= maxEnvelopeTimeout.Seconds() {
		return maxEnvelopeTimeout
	}
	return max(time.Duration(s*float64(time.Second)), time.Nanosecond)
}

// ResponseEnvelope is an AegisSDK response: the first six keys of a
// request (a new message_id and trace_id, correlation_id = the request's
// message_id, source and target null), then success (bool), result (any)
// and error, null when success is true and a string when it is false.
// Errors are free text, without codes. The nullable string fields use ""
// for null; Error is written as null when Success is true.
type ResponseEnvelope struct {
	MessageID     string
	TraceID       string
	CorrelationID string // "" is null
	Timestamp     string
	Source        string // "" is null
	Target        string // "" is null
	Success       bool
	// Result is the result as JSON, whatever the envelope's format (msgpack
	// is converted); a decoded null is "null", and nil is written as null.
	Result json.RawMessage
	Error  string
}

// NotActiveCode is the text by which an AegisSDK standby instance says it is
// not the active one: in an error string of a success:false reply, or as the
// "error" of a result map of a success:true reply.
const NotActiveCode = "NOT_ACTIVE"

// ErrMalformedEnvelope is matched by every error of the envelope decoders:
// the data is not an AegisSDK envelope under the strict rules.
var ErrMalformedEnvelope = errors.New("natsrpc: malformed envelope")

type envelopeError struct {
	f      EnvelopeFormat
	detail string
}

func (e *envelopeError) Error() string {
	return "natsrpc: malformed " + e.f.String() + " envelope: " + e.detail
}
func (e *envelopeError) Is(target error) bool { return target == ErrMalformedEnvelope }

func badEnvelope(f EnvelopeFormat, detail string) error { return &envelopeError{f: f, detail: detail} }

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

// ---- writing ----

// AppendJSON appends r as a JSON envelope. Params must be a JSON object (or
// nil for {}).
func (r *RequestEnvelope) AppendJSON(b []byte) ([]byte, error) {
	params := r.Params
	if len(params) == 0 {
		params = json.RawMessage("{}")
	} else if !isJSONObject(params) {
		return b, errors.New("natsrpc: envelope params must be a JSON object")
	}
	b = append(b, `{"message_id":`...)
	b = appendJSONString(b, r.MessageID)
	b = append(b, `,"trace_id":`...)
	b = appendJSONString(b, r.TraceID)
	b = append(b, `,"correlation_id":`...)
	b = appendJSONNullable(b, r.CorrelationID)
	b = append(b, `,"timestamp":`...)
	b = appendJSONString(b, r.Timestamp)
	b = append(b, `,"source":`...)
	b = appendJSONNullable(b, r.Source)
	b = append(b, `,"target":`...)
	b = appendJSONNullable(b, r.Target)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"params":`...)
	b = append(b, params...)
	b = append(b, `,"timeout":`...)
	b = appendJSONFloat(b, r.timeoutOrDefault())
	return append(b, '}'), nil
}

func (r *RequestEnvelope) timeoutOrDefault() float64 {
	if r.Timeout > 0 && !math.IsInf(r.Timeout, 0) {
		return r.Timeout
	}
	return DefaultEnvelopeTimeout.Seconds()
}

// head writes the six members requests and responses share, in their order.
func (w *msgpackWriter) head(messageID, traceID, correlationID, timestamp, source, target string) {
	w.str(keyMessageID)
	w.str(messageID)
	w.str(keyTraceID)
	w.str(traceID)
	w.str(keyCorrelationID)
	w.nullable(correlationID)
	w.str(keyTimestamp)
	w.str(timestamp)
	w.str(keySource)
	w.nullable(source)
	w.str(keyTarget)
	w.nullable(target)
}

// AppendMsgpack appends r as a msgpack envelope; its params, given as a
// JSON object, are written as a msgpack map.
func (r *RequestEnvelope) AppendMsgpack(b []byte) ([]byte, error) {
	w := newMsgpackWriter(b)
	defer w.release()
	w.mapLen(9)
	w.head(r.MessageID, r.TraceID, r.CorrelationID, r.Timestamp, r.Source, r.Target)
	w.str(keyMethod)
	w.str(r.Method)
	w.str(keyParams)
	if len(r.Params) == 0 {
		w.mapLen(0)
	} else {
		if !isJSONObject(r.Params) {
			return b, errors.New("natsrpc: envelope params must be a JSON object")
		}
		if err := w.json(r.Params); err != nil {
			return b, err
		}
	}
	w.str(keyTimeout)
	w.float(r.timeoutOrDefault())
	return w.bytes(), w.err
}

// Encode writes r in format f.
func (r *RequestEnvelope) Encode(f EnvelopeFormat) ([]byte, error) {
	if f == EnvelopeMsgpack {
		return r.AppendMsgpack(nil)
	}
	return r.AppendJSON(nil)
}

// AppendJSON appends r as a JSON envelope. Result must be JSON (nil is
// null).
func (r *ResponseEnvelope) AppendJSON(b []byte) ([]byte, error) {
	result := r.Result
	if len(result) == 0 {
		result = json.RawMessage("null")
	} else if !json.Valid(result) {
		return b, errors.New("natsrpc: envelope result is not JSON")
	}
	b = append(b, `{"message_id":`...)
	b = appendJSONString(b, r.MessageID)
	b = append(b, `,"trace_id":`...)
	b = appendJSONString(b, r.TraceID)
	b = append(b, `,"correlation_id":`...)
	b = appendJSONNullable(b, r.CorrelationID)
	b = append(b, `,"timestamp":`...)
	b = appendJSONString(b, r.Timestamp)
	b = append(b, `,"source":`...)
	b = appendJSONNullable(b, r.Source)
	b = append(b, `,"target":`...)
	b = appendJSONNullable(b, r.Target)
	b = append(b, `,"success":`...)
	b = strconv.AppendBool(b, r.Success)
	b = append(b, `,"result":`...)
	b = append(b, result...)
	b = append(b, `,"error":`...)
	if r.Success {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, r.Error)
	}
	return append(b, '}'), nil
}

// AppendMsgpack appends r as a msgpack envelope; its result, given as JSON,
// is written as the msgpack value of that JSON.
func (r *ResponseEnvelope) AppendMsgpack(b []byte) ([]byte, error) {
	w := newMsgpackWriter(b)
	defer w.release()
	w.mapLen(9)
	w.head(r.MessageID, r.TraceID, r.CorrelationID, r.Timestamp, r.Source, r.Target)
	w.str(keySuccess)
	w.boolean(r.Success)
	w.str(keyResult)
	if len(r.Result) == 0 {
		w.null()
	} else if err := w.json(r.Result); err != nil {
		return b, err
	}
	w.str(keyError)
	if r.Success {
		w.null()
	} else {
		w.str(r.Error)
	}
	return w.bytes(), w.err
}

// Encode writes r in format f.
func (r *ResponseEnvelope) Encode(f EnvelopeFormat) ([]byte, error) {
	if f == EnvelopeMsgpack {
		return r.AppendMsgpack(nil)
	}
	return r.AppendJSON(nil)
}

// ---- reading ----

// DecodeRequestEnvelope decodes an AegisSDK request in the format its first
// byte tells (DetectEnvelopeFormat), as strictly as AegisSDK's reader: an
// unknown key (keys are compared exactly), a null where a string is
// required, a wrong type, params that are not a map, a timeout that is not
// a positive number, a msgpack bin where a str is due, an extension, or
// bytes after the envelope make it malformed; keys with a default (all but
// method) may be absent. Every error matches ErrMalformedEnvelope. The Params of a JSON envelope is a slice of
// data, not a copy.
func DecodeRequestEnvelope(data []byte) (*RequestEnvelope, EnvelopeFormat, error) {
	r := new(RequestEnvelope)
	f := DetectEnvelopeFormat(data)
	var err error
	if f == EnvelopeMsgpack {
		err = decodeRequestMsgpack(data, r)
	} else {
		err = decodeRequestJSON(data, r, false)
	}
	if err != nil {
		return nil, f, err
	}
	return r, f, nil
}

// DecodeResponseEnvelope decodes an AegisSDK response in the format its
// first byte tells, under the strict rules: success is required, error is
// null when success is true and a string when it is false. Every error
// matches ErrMalformedEnvelope. The Result of a JSON envelope is a slice of
// data, not a copy.
func DecodeResponseEnvelope(data []byte) (*ResponseEnvelope, EnvelopeFormat, error) {
	r := new(ResponseEnvelope)
	f := DetectEnvelopeFormat(data)
	var err error
	if f == EnvelopeMsgpack {
		err = decodeResponseMsgpack(data, r)
	} else {
		err = decodeResponseJSON(data, r)
	}
	if err != nil {
		return nil, f, err
	}
	return r, f, nil
}

// headMember says where the member named k goes when it is one of the six
// that requests and responses share (given in their order), under which name
// errors report it, and whether it may be null; dst is nil for any other key.
func headMember(k []byte, messageID, traceID, correlationID, timestamp, source, target *string) (dst *string, name string, nullable bool) {
	switch string(k) {
	case keyMessageID:
		return messageID, keyMessageID, false
	case keyTraceID:
		return traceID, keyTraceID, false
	case keyCorrelationID:
		return correlationID, keyCorrelationID, true
	case keyTimestamp:
		return timestamp, keyTimestamp, false
	case keySource:
		return source, keySource, true
	case keyTarget:
		return target, keyTarget, true
	}
	return nil, "", false
}

// decodeRequestJSON reads a JSON request; valid says data is known to be
// valid JSON already.
func decodeRequestJSON(data []byte, r *RequestEnvelope, valid bool) error {
	hasMethod := false
	member := func(k, v []byte) error {
		var err error
		if dst, name, nullable := headMember(k, &r.MessageID, &r.TraceID, &r.CorrelationID, &r.Timestamp, &r.Source, &r.Target); dst != nil {
			*dst, err = jsonStr(name, v, nullable)
			return err
		}
		switch string(k) {
		case keyMethod:
			r.Method, err = jsonStr(keyMethod, v, false)
			hasMethod = true
		case keyParams:
			if v[0] != '{' {
				err = badEnvelope(EnvelopeJSON, "params is not an object")
			}
			r.Params = v
		case keyTimeout:
			r.Timeout, err = jsonTimeout(v)
		default:
			err = badEnvelope(EnvelopeJSON, "unknown key "+strconv.Quote(string(k)))
		}
		return err
	}
	var err error
	if valid {
		err = eachValidMember(data, member)
	} else {
		err = eachMember(data, member)
	}
	if err != nil {
		return err
	}
	if !hasMethod {
		return badEnvelope(EnvelopeJSON, "method missing")
	}
	return nil
}

func decodeResponseJSON(data []byte, r *ResponseEnvelope) error {
	hasSuccess, hasError := false, false
	err := eachMember(data, func(k, v []byte) error {
		var err error
		if dst, name, nullable := headMember(k, &r.MessageID, &r.TraceID, &r.CorrelationID, &r.Timestamp, &r.Source, &r.Target); dst != nil {
			*dst, err = jsonStr(name, v, nullable)
			return err
		}
		switch string(k) {
		case keySuccess:
			switch string(v) {
			case "true":
				r.Success = true
			case "false":
				r.Success = false
			default:
				err = badEnvelope(EnvelopeJSON, "success is not a bool")
			}
			hasSuccess = true
		case keyResult:
			r.Result = v
		case keyError:
			hasError = string(v) != "null"
			if hasError {
				r.Error, err = jsonStr(keyError, v, false)
			} else {
				r.Error = ""
			}
		default:
			err = badEnvelope(EnvelopeJSON, "unknown key "+strconv.Quote(string(k)))
		}
		return err
	})
	if err != nil {
		return err
	}
	if r.Result == nil {
		r.Result = json.RawMessage("null")
	}
	return checkResponse(EnvelopeJSON, r, hasSuccess, hasError)
}

func checkResponse(f EnvelopeFormat, r *ResponseEnvelope, hasSuccess, hasError bool) error {
	switch {
	case !hasSuccess:
		return badEnvelope(f, "success missing")
	case r.Success && hasError:
		return badEnvelope(f, "error is not null in a success")
	case !r.Success && !hasError:
		return badEnvelope(f, "error is not a string in a failure")
	}
	return nil
}

// eachMember calls fn with the key (unescaped) and the raw value of each
// member of the JSON object data, in order, and stops at fn's first error.
// The values are slices of data. Keys are compared exactly: encoding/json
// would match struct fields case-insensitively, which a strict reader must
// not. A repeated key is seen twice (the last one wins, as in Python's
// json.loads).
func eachMember(data []byte, fn func(k, v []byte) error) error {
	if !json.Valid(data) {
		return badEnvelope(EnvelopeJSON, "not JSON")
	}
	return eachValidMember(data, fn)
}

// eachValidMember is eachMember for data known to be valid JSON: every
// string, object and array is closed.
func eachValidMember(data []byte, fn func(k, v []byte) error) error {
	i := skipSpace(data, 0)
	if data[i] != '{' {
		return badEnvelope(EnvelopeJSON, "not an object")
	}
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return nil
	}
	for {
		end := skipString(data, i)
		k := data[i+1 : end-1]
		if bytes.IndexByte(k, '\\') >= 0 || !utf8.Valid(k) {
			var key string
			if err := json.Unmarshal(data[i:end], &key); err != nil {
				return badEnvelope(EnvelopeJSON, err.Error())
			}
			k = []byte(key)
		}
		i = skipSpace(data, end) // at ':'
		i = skipSpace(data, i+1) // at the value
		end = skipValue(data, i)
		if err := fn(k, data[i:end]); err != nil {
			return err
		}
		i = skipSpace(data, end) // at ',' or '}'
		if data[i] == '}' {
			return nil
		}
		i = skipSpace(data, i+1)
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string that starts at data[i].
func skipString(data []byte, i int) int {
	for j := i + 1; ; j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// skipValue returns the index after the value that starts at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch data[j] {
			case '"':
				j = skipString(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
	}
	j := i
	for j < len(data) {
		switch data[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
		j++
	}
	return j
}

// jsonStr reads a JSON string member; null is "" when nullable.
func jsonStr(key string, v json.RawMessage, nullable bool) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		if nullable && string(v) == "null" {
			return "", nil
		}
		return "", badEnvelope(EnvelopeJSON, key+" is not a string")
	}
	if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return string(s), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", badEnvelope(EnvelopeJSON, key+": "+err.Error())
	}
	return s, nil
}

func jsonTimeout(v json.RawMessage) (float64, error) {
	if len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return 0, badEnvelope(EnvelopeJSON, "timeout is not a number")
	}
	t, err := strconv.ParseFloat(string(v), 64)
	if err != nil || !(t > 0) || math.IsInf(t, 0) {
		return 0, badEnvelope(EnvelopeJSON, "timeout "+string(v)+" is not a positive number")
	}
	return t, nil
}

// isJSONObject reports whether v, valid JSON, is an object.
func isJSONObject(v []byte) bool {
	v = bytes.TrimLeft(v, " \t\r\n")
	return len(v) > 0 && v[0] == '{'
}

func decodeRequestMsgpack(data []byte, r *RequestEnvelope) error {
	rd := newMsgpackReader(data)
	defer rd.release()
	n, err := rd.mapLen()
	if err != nil {
		return err
	}
	hasMethod := false
	for range n {
		k, err := rd.key()
		if err != nil {
			return err
		}
		if dst, name, nullable := headMember(k, &r.MessageID, &r.TraceID, &r.CorrelationID, &r.Timestamp, &r.Source, &r.Target); dst != nil {
			if nullable {
				*dst, err = rd.nullableStr(name)
			} else {
				*dst, err = rd.str(name)
			}
			if err != nil {
				return rd.wrap(err)
			}
			continue
		}
		switch string(k) {
		case keyMethod:
			r.Method, err = rd.str(keyMethod)
			hasMethod = true
		case keyParams:
			var c byte
			if c, err = rd.d.PeekCode(); err == nil && !isMsgpackMap(c) {
				err = badEnvelope(EnvelopeMsgpack, "params is not a map")
			}
			if err == nil {
				r.Params, err = rd.toJSON(nil)
			}
		case keyTimeout:
			r.Timeout, err = rd.timeout()
		default:
			err = badEnvelope(EnvelopeMsgpack, "unknown key "+strconv.Quote(string(k)))
		}
		if err != nil {
			return rd.wrap(err)
		}
	}
	if err := rd.end(); err != nil {
		return err
	}
	if !hasMethod {
		return badEnvelope(EnvelopeMsgpack, "method missing")
	}
	return nil
}

func decodeResponseMsgpack(data []byte, r *ResponseEnvelope) error {
	rd := newMsgpackReader(data)
	defer rd.release()
	n, err := rd.mapLen()
	if err != nil {
		return err
	}
	hasSuccess, hasError := false, false
	for range n {
		k, err := rd.key()
		if err != nil {
			return err
		}
		if dst, name, nullable := headMember(k, &r.MessageID, &r.TraceID, &r.CorrelationID, &r.Timestamp, &r.Source, &r.Target); dst != nil {
			if nullable {
				*dst, err = rd.nullableStr(name)
			} else {
				*dst, err = rd.str(name)
			}
			if err != nil {
				return rd.wrap(err)
			}
			continue
		}
		switch string(k) {
		case keySuccess:
			var c byte
			if c, err = rd.d.PeekCode(); err == nil {
				if c != msgpcode.True && c != msgpcode.False {
					err = badEnvelope(EnvelopeMsgpack, "success is not a bool")
				} else {
					r.Success, err = rd.d.DecodeBool()
				}
			}
			hasSuccess = true
		case keyResult:
			r.Result, err = rd.toJSON(nil)
		case keyError:
			var c byte
			if c, err = rd.d.PeekCode(); err == nil {
				if c == msgpcode.Nil {
					err = rd.d.DecodeNil()
					hasError = false
				} else {
					r.Error, err = rd.str(keyError)
					hasError = true
				}
			}
		default:
			err = badEnvelope(EnvelopeMsgpack, "unknown key "+strconv.Quote(string(k)))
		}
		if err != nil {
			return rd.wrap(err)
		}
	}
	if err := rd.end(); err != nil {
		return err
	}
	if r.Result == nil {
		r.Result = json.RawMessage("null")
	}
	return checkResponse(EnvelopeMsgpack, r, hasSuccess, hasError)
}

// ---- JSON writing helpers ----

func appendJSONNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (without its HTML escaping): quotes, backslashes and control
// characters, U+2028 and U+2029; invalid UTF-8 becomes U+FFFD.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	const hexdigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		// At most 4 bytes: the conversion of a []byte needs no allocation.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexdigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONFloat appends a finite float as a JSON number that reads back as
// a float in Python ("5.0", not "5").
func appendJSONFloat(b []byte, f float64) []byte {
	n := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	if !bytes.ContainsAny(b[n:], ".eEn") {
		b = append(b, '.', '0')
	}
	return b
}

// ---- msgpack writing ----

// msgpackWriter writes msgpack with the library's encoder into a byte
// slice: strings as str, floats as float64, integers in their shortest
// form, never an extension. The first error sticks.
type msgpackWriter struct {
	buf *bytes.Buffer
	e   *msgpack.Encoder
	err error
}

func newMsgpackWriter(b []byte) *msgpackWriter {
	w := &msgpackWriter{buf: bytes.NewBuffer(b), e: msgpack.GetEncoder()}
	w.e.Reset(w.buf)
	return w
}

func (w *msgpackWriter) release() {
	if w.e != nil {
		msgpack.PutEncoder(w.e)
		w.e = nil
	}
}

func (w *msgpackWriter) bytes() []byte { return w.buf.Bytes() }

func (w *msgpackWriter) set(err error) {
	if w.err == nil && err != nil {
		w.err = err
	}
}

func (w *msgpackWriter) mapLen(n int)   { w.set(w.e.EncodeMapLen(n)) }
func (w *msgpackWriter) arrayLen(n int) { w.set(w.e.EncodeArrayLen(n)) }
func (w *msgpackWriter) str(s string)   { w.set(w.e.EncodeString(s)) }
func (w *msgpackWriter) null()          { w.set(w.e.EncodeNil()) }
func (w *msgpackWriter) boolean(v bool) { w.set(w.e.EncodeBool(v)) }
func (w *msgpackWriter) float(f float64) {
	w.set(w.e.EncodeFloat64(f))
}

func (w *msgpackWriter) nullable(s string) {
	if s == "" {
		w.null()
		return
	}
	w.str(s)
}

// ---- msgpack reading ----

// msgpackReader reads an envelope with the library's decoder, checking
// every value's type code first, so that bin is never taken for str, nor an
// extension for anything.
type msgpackReader struct {
	data []byte
	rd   *bytes.Reader
	d    *msgpack.Decoder
}

func newMsgpackReader(data []byte) *msgpackReader {
	r := &msgpackReader{data: data, rd: bytes.NewReader(data), d: msgpack.GetDecoder()}
	r.d.Reset(r.rd) // a bytes.Reader is an io.ByteScanner: no buffering
	return r
}

func (r *msgpackReader) release() { msgpack.PutDecoder(r.d) }

// wrap makes a decoder error an envelope error.
func (r *msgpackReader) wrap(err error) error {
	if errors.Is(err, ErrMalformedEnvelope) {
		return err
	}
	return badEnvelope(EnvelopeMsgpack, err.Error())
}

func (r *msgpackReader) mapLen() (int, error) {
	c, err := r.d.PeekCode()
	if err != nil {
		return 0, r.wrap(err)
	}
	if !isMsgpackMap(c) {
		return 0, badEnvelope(EnvelopeMsgpack, "not a map")
	}
	n, err := r.d.DecodeMapLen()
	if err != nil {
		return 0, r.wrap(err)
	}
	return n, nil
}

// key reads a map key, which must be a str, as a slice of the data.
func (r *msgpackReader) key() ([]byte, error) {
	c, err := r.d.PeekCode()
	if err != nil {
		return nil, r.wrap(err)
	}
	if !msgpcode.IsString(c) {
		return nil, badEnvelope(EnvelopeMsgpack, "key is not a str")
	}
	return r.raw()
}

func (r *msgpackReader) str(what string) (string, error) {
	c, err := r.d.PeekCode()
	if err != nil {
		return "", r.wrap(err)
	}
	if !msgpcode.IsString(c) {
		return "", badEnvelope(EnvelopeMsgpack, what+" is not a str")
	}
	s, err := r.d.DecodeString()
	if err != nil {
		return "", r.wrap(err)
	}
	return s, nil
}

func (r *msgpackReader) nullableStr(what string) (string, error) {
	c, err := r.d.PeekCode()
	if err != nil {
		return "", r.wrap(err)
	}
	if c == msgpcode.Nil {
		return "", r.d.DecodeNil()
	}
	return r.str(what)
}

func (r *msgpackReader) timeout() (float64, error) {
	c, err := r.d.PeekCode()
	if err != nil {
		return 0, r.wrap(err)
	}
	var t float64
	switch {
	case c == msgpcode.Float || c == msgpcode.Double:
		t, err = r.d.DecodeFloat64()
	case isMsgpackUint(c):
		var u uint64
		u, err = r.d.DecodeUint64()
		t = float64(u)
	case isMsgpackInt(c):
		var i int64
		i, err = r.d.DecodeInt64()
		t = float64(i)
	default:
		return 0, badEnvelope(EnvelopeMsgpack, "timeout is not a number")
	}
	if err != nil {
		return 0, r.wrap(err)
	}
	if !(t > 0) || math.IsInf(t, 0) {
		return 0, badEnvelope(EnvelopeMsgpack, "timeout "+strconv.FormatFloat(t, 'g', -1, 64)+" is not a positive number")
	}
	return t, nil
}

// end checks that nothing follows the envelope.
func (r *msgpackReader) end() error {
	if r.rd.Len() != 0 {
		return badEnvelope(EnvelopeMsgpack, strconv.Itoa(r.rd.Len())+" bytes after the envelope")
	}
	return nil
}

func isMsgpackMap(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isMsgpackArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

// isMsgpackUint: positive fixint and uint8–64.
func isMsgpackUint(c byte) bool {
	return c <= msgpcode.PosFixedNumHigh || c >= msgpcode.Uint8 && c <= msgpcode.Uint64
}

// isMsgpackInt: negative fixint and int8–64.
func isMsgpackInt(c byte) bool {
	return c >= msgpcode.NegFixedNumLow || c >= msgpcode.Int8 && c <= msgpcode.Int64
}

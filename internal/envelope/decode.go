package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// ErrMalformed is matched by every error of the decoders: the data is not
// an AegisSDK envelope under the strict rules.
var ErrMalformed = errors.New("natsrpc: malformed envelope")

type malformedError struct {
	f      Format
	detail string
}

func (e *malformedError) Error() string {
	return "natsrpc: malformed " + e.f.String() + " envelope: " + e.detail
}

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

// bad is a decoder's error. detail quotes input only through
// rpclimit.Quote, so it is bounded.
func bad(f Format, detail string) error { return &malformedError{f: f, detail: detail} }

var (
	errTruncated = bad(Msgpack, "truncated")
	errTooLarge  = errors.New("natsrpc: envelope larger than " + strconv.Itoa(rpclimit.MaxMessage) + " bytes")
)

// DecodeRequest decodes an AegisSDK request in the format its first byte
// tells (Detect), as strictly as AegisSDK's reader: an unknown key (keys
// are compared exactly), a null where a string is required, a wrong type,
// params that are not a map, a timeout that is not a positive number, a
// msgpack bin where a str is due, an extension, or bytes after the envelope
// make it malformed; keys with a default (all but method) may be absent. A
// repeated key counts once, the last one. Every error matches ErrMalformed.
// The Params of a JSON envelope is a slice of data, not a copy.
func DecodeRequest(data []byte) (*Request, Format, error) {
	r := new(Request)
	f := Detect(data)
	if len(data) > rpclimit.MaxMessage {
		return nil, f, bad(f, errTooLarge.Error())
	}
	if err := r.decode(data, f, false); err != nil {
		return nil, f, err
	}
	return r, f, nil
}

// DecodeResponse decodes an AegisSDK response in the format its first byte
// tells, under the strict rules: success is required, error is null when
// success is true and a string when it is false. Every error matches
// ErrMalformed. The Result of a JSON envelope is a slice of data, not a
// copy.
func DecodeResponse(data []byte) (*Response, Format, error) {
	r := new(Response)
	f := Detect(data)
	if len(data) > rpclimit.MaxMessage {
		return nil, f, bad(f, errTooLarge.Error())
	}
	if err := r.decode(data, f); err != nil {
		return nil, f, err
	}
	return r, f, nil
}

var (
	tagMessageID = []byte(`"message_id"`)
	tagMethod    = []byte(`"method"`)
)

// SniffRequest tells whether data is an AegisSDK request: a JSON object or
// a msgpack map (by the first byte, as AegisSDK tells them) with message_id
// and method among its top-level keys. Only then is it decoded, under
// DecodeRequest's rules: r is the request, or err says why it is
// malformed.
func SniffRequest(data []byte) (r *Request, f Format, ok bool, err error) {
	f = Detect(data)
	if len(data) > rpclimit.MaxMessage {
		return nil, f, false, nil
	}
	if f == JSON {
		if !bytes.Contains(data, tagMessageID) || !bytes.Contains(data, tagMethod) {
			return nil, f, false, nil
		}
		hasID, hasMethod := false, false
		if EachMember(data, func(k, _ []byte) error {
			hasID = hasID || string(k) == keyMessageID
			hasMethod = hasMethod || string(k) == keyMethod
			return nil
		}) != nil || !hasID || !hasMethod {
			return nil, f, false, nil
		}
	} else if !msgpackHasIDAndMethod(data) {
		return nil, f, false, nil
	}
	r = new(Request)
	if err := r.decode(data, f, true); err != nil { // JSON validated above
		return nil, f, true, err
	}
	return r, f, true, nil
}

// msgpackHasIDAndMethod reports whether data is a msgpack map with
// message_id and method among its top-level keys.
func msgpackHasIDAndMethod(data []byte) bool {
	c := cursor{data: data}
	hasID, hasMethod := false, false
	err := eachMsgpackMember(&c, func(k []byte) error {
		hasID = hasID || string(k) == keyMessageID
		hasMethod = hasMethod || string(k) == keyMethod
		return c.skip()
	})
	return err == nil && hasID && hasMethod
}

// eachMsgpackMember calls fn with the key of each member of the msgpack map
// at c, in order; fn reads the value from c. It stops at fn's first error.
func eachMsgpackMember(c *cursor, fn func(k []byte) error) error {
	code, err := c.peek()
	if err != nil {
		return err
	}
	if kindOf(code) != kindMap {
		return bad(Msgpack, "not a map")
	}
	n, err := c.container()
	if err != nil {
		return err
	}
	for range n {
		k, err := c.key()
		if err != nil {
			return err
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// eachField calls fn with the key and the value of each member of the
// envelope data in format f, in order, and stops at fn's first error. fn
// reads the value through v, once. For JSON, valid says data is known to be
// valid JSON already. Requests and responses are both read through it, so
// the two formats' rules are written once.
func eachField(data []byte, f Format, valid bool, fn func(k []byte, v field) error) error {
	if f == JSON {
		// v goes by value: a pointer passed to fn would move it to the heap.
		member := func(k, raw []byte) error { return fn(k, field{f: JSON, raw: raw}) }
		if valid {
			return eachValidMember(data, member)
		}
		return EachMember(data, member)
	}
	c := &cursor{data: data}
	if err := eachMsgpackMember(c, func(k []byte) error { return fn(k, field{f: Msgpack, c: c}) }); err != nil {
		return err
	}
	if c.left() != 0 {
		return bad(Msgpack, strconv.Itoa(c.left())+" bytes after the envelope")
	}
	return nil
}

// member reads k into h if it is one of the head's keys; ok is false for
// any other key.
func (h *Head) member(k []byte, v *field) (ok bool, err error) {
	switch string(k) {
	case keyMessageID:
		h.MessageID, err = v.str(keyMessageID, false)
	case keyTraceID:
		h.TraceID, err = v.str(keyTraceID, false)
	case keyCorrelationID:
		h.CorrelationID, err = v.str(keyCorrelationID, true)
	case keyTimestamp:
		h.Timestamp, err = v.str(keyTimestamp, false)
	case keySource:
		h.Source, err = v.str(keySource, true)
	case keyTarget:
		h.Target, err = v.str(keyTarget, true)
	default:
		return false, nil
	}
	return true, err
}

func (r *Request) decode(data []byte, f Format, valid bool) error {
	hasMethod := false
	err := eachField(data, f, valid, func(k []byte, v field) (err error) {
		if ok, err := r.Head.member(k, &v); ok {
			return err
		}
		switch string(k) {
		case keyMethod:
			r.Method, err = v.str(keyMethod, false)
			hasMethod = true
		case keyParams:
			r.Params, err = v.object(keyParams, r.Params)
		case keyTimeout:
			r.Timeout, err = v.timeout()
		default:
			err = unknownKey(f, k)
		}
		return err
	})
	if err != nil {
		return err
	}
	if !hasMethod {
		return bad(f, "method missing")
	}
	return nil
}

func (r *Response) decode(data []byte, f Format) error {
	hasSuccess, hasError := false, false
	err := eachField(data, f, false, func(k []byte, v field) (err error) {
		if ok, err := r.Head.member(k, &v); ok {
			return err
		}
		switch string(k) {
		case keySuccess:
			r.Success, err = v.boolean(keySuccess)
			hasSuccess = true
		case keyResult:
			r.Result, err = v.value(r.Result)
		case keyError:
			hasError = !v.null()
			r.Error = ""
			if hasError {
				r.Error, err = v.str(keyError, false)
			}
		default:
			err = unknownKey(f, k)
		}
		return err
	})
	switch {
	case err != nil:
		return err
	case !hasSuccess:
		return bad(f, "success missing")
	case r.Success && hasError:
		return bad(f, "error is not null in a success")
	case !r.Success && !hasError:
		return bad(f, "error is not a string in a failure")
	}
	if r.Result == nil {
		r.Result = json.RawMessage("null")
	}
	return nil
}

func unknownKey(f Format, k []byte) error { return bad(f, "unknown key "+rpclimit.Quote(k)) }

// field is the value of one member, in either format: a JSON value (a
// slice of the data), or a msgpack cursor at the value. Each method reads
// it as one type; a msgpack value is consumed whatever the outcome.
type field struct {
	f   Format
	raw []byte  // JSON
	c   *cursor // msgpack
}

// null reports whether the value is null, and consumes a msgpack nil.
func (v *field) null() bool {
	if v.f == JSON {
		return string(v.raw) == "null"
	}
	if code, err := v.c.peek(); err == nil && code == mpNil {
		v.c.i++
		return true
	}
	return false
}

// str reads a string; null is "" when nullable. A msgpack bin is not a
// string.
func (v *field) str(key string, nullable bool) (string, error) {
	if v.f == JSON {
		return jsonStr(key, v.raw, nullable)
	}
	code, err := v.c.peek()
	if err != nil {
		return "", err
	}
	if nullable && code == mpNil {
		v.c.i++
		return "", nil
	}
	if kindOf(code) != kindStr {
		return "", bad(Msgpack, key+" is not a str")
	}
	s, err := v.c.bytes()
	return string(s), err
}

func (v *field) boolean(key string) (bool, error) {
	if v.f == JSON {
		switch string(v.raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return false, bad(JSON, key+" is not a bool")
	}
	code, err := v.c.peek()
	if err != nil {
		return false, err
	}
	if kindOf(code) != kindBool {
		return false, bad(Msgpack, key+" is not a bool")
	}
	v.c.i++
	return code == mpTrue, nil
}

// timeout reads a positive, finite number.
func (v *field) timeout() (float64, error) {
	if v.f == JSON {
		return jsonTimeout(v.raw)
	}
	code, err := v.c.peek()
	if err != nil {
		return 0, err
	}
	var t float64
	switch kindOf(code) {
	case kindFloat:
		t, err = v.c.float()
	case kindUint:
		var u uint64
		u, err = v.c.uint()
		t = float64(u)
	case kindInt:
		var i int64
		i, err = v.c.int()
		t = float64(i)
	default:
		return 0, bad(Msgpack, "timeout is not a number")
	}
	if err != nil {
		return 0, err
	}
	if !(t > 0) || math.IsInf(t, 0) {
		return 0, bad(Msgpack, "timeout "+strconv.FormatFloat(t, 'g', -1, 64)+" is not a positive number")
	}
	return t, nil
}

// object reads a map as a JSON object. A msgpack map is converted into
// prev's memory, the value a repeated key read before (the last one wins):
// repeating a key a million times costs one buffer.
func (v *field) object(key string, prev []byte) (json.RawMessage, error) {
	if v.f == JSON {
		if v.raw[0] != '{' {
			return nil, bad(JSON, key+" is not an object")
		}
		return v.raw, nil
	}
	code, err := v.c.peek()
	if err != nil {
		return nil, err
	}
	if kindOf(code) != kindMap {
		return nil, bad(Msgpack, key+" is not a map")
	}
	return v.c.toJSON(prev[:0])
}

// value reads any value as JSON, into prev's memory as object does.
func (v *field) value(prev []byte) (json.RawMessage, error) {
	if v.f == JSON {
		return v.raw, nil
	}
	return v.c.toJSON(prev[:0])
}

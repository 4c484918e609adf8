package natsrpc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Envelope params and results reach this package's codecs as JSON whatever
// the envelope's format, so that the JSON codecs a Server or Client already
// has serve both: msgpack values are converted to JSON on the way in and
// JSON to msgpack on the way out.

// maxNesting bounds the depth of a converted value, as encoding/json bounds
// what it decodes.
const maxNesting = 10000

var errNesting = errors.New("value nested too deeply")

// toJSON reads the next msgpack value and appends it to b as JSON, keeping
// the order of map keys: nil is null, str a string, bin a base64 string (as
// encoding/json writes []byte), integers and finite floats numbers (floats
// keep a fraction or exponent, so they stay floats), arrays and maps with
// str keys as themselves. Extensions, non-str map keys and NaN or infinite
// floats have no JSON form: they are errors.
func (r *msgpackReader) toJSON(b []byte) ([]byte, error) {
	return r.value(b, 0)
}

func (r *msgpackReader) value(b []byte, depth int) ([]byte, error) {
	if depth > maxNesting {
		return b, badEnvelope(EnvelopeMsgpack, errNesting.Error())
	}
	c, err := r.d.PeekCode()
	if err != nil {
		return b, r.wrap(err)
	}
	switch {
	case c == msgpcode.Nil:
		err = r.d.DecodeNil()
		b = append(b, "null"...)
	case c == msgpcode.True || c == msgpcode.False:
		var v bool
		v, err = r.d.DecodeBool()
		b = strconv.AppendBool(b, v)
	case isMsgpackUint(c):
		var v uint64
		v, err = r.d.DecodeUint64()
		b = strconv.AppendUint(b, v, 10)
	case isMsgpackInt(c):
		var v int64
		v, err = r.d.DecodeInt64()
		b = strconv.AppendInt(b, v, 10)
	case c == msgpcode.Float || c == msgpcode.Double:
		var v float64
		if c == msgpcode.Float {
			var f float32
			f, err = r.d.DecodeFloat32()
			v = float64(f)
		} else {
			v, err = r.d.DecodeFloat64()
		}
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			return b, badEnvelope(EnvelopeMsgpack, "NaN or infinite float has no JSON form")
		}
		b = appendJSONFloat(b, v)
	case msgpcode.IsString(c):
		var s string
		s, err = r.d.DecodeString()
		b = appendJSONString(b, s)
	case msgpcode.IsBin(c):
		var v []byte
		v, err = r.d.DecodeBytes()
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v)
		b = append(b, '"')
	case isMsgpackArray(c):
		var n int
		if n, err = r.d.DecodeArrayLen(); err != nil {
			break
		}
		b = append(b, '[')
		for i := range n {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = r.value(b, depth+1); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	case isMsgpackMap(c):
		var n int
		if n, err = r.d.DecodeMapLen(); err != nil {
			break
		}
		b = append(b, '{')
		for i := range n {
			if i > 0 {
				b = append(b, ',')
			}
			k, err := r.str("map key")
			if err != nil {
				return b, err
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			if b, err = r.value(b, depth+1); err != nil {
				return b, err
			}
		}
		b = append(b, '}')
	case msgpcode.IsExt(c):
		return b, badEnvelope(EnvelopeMsgpack, "extension type 0x"+strconv.FormatUint(uint64(c), 16)+" is not allowed")
	default:
		return b, badEnvelope(EnvelopeMsgpack, "unknown code 0x"+strconv.FormatUint(uint64(c), 16))
	}
	if err != nil {
		return b, r.wrap(err)
	}
	return b, nil
}

// json writes a JSON value as msgpack: null nil, strings str, integers
// that fit 64 bits integers, other numbers float64, arrays arrays, objects
// maps with their keys sorted (JSON objects are unordered; sorting makes
// the output deterministic).
func (w *msgpackWriter) json(raw []byte) error {
	if !json.Valid(raw) {
		return errors.New("natsrpc: not JSON")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	w.value(v)
	return w.err
}

func (w *msgpackWriter) value(v any) {
	switch v := v.(type) {
	case nil:
		w.null()
	case bool:
		w.boolean(v)
	case string:
		w.str(v)
	case json.Number:
		w.number(string(v))
	case []any:
		w.arrayLen(len(v))
		for _, e := range v {
			w.value(e)
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		w.mapLen(len(v))
		for _, k := range keys {
			w.str(k)
			w.value(v[k])
		}
	default:
		w.set(errors.New("natsrpc: unexpected JSON value"))
	}
}

// number writes a JSON number: an integer in its shortest msgpack form when
// it has no fraction or exponent and fits 64 bits, a float64 otherwise.
func (w *msgpackWriter) number(s string) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			w.set(w.e.EncodeInt(i))
			return
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			w.set(w.e.EncodeUint(u))
			return
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		w.set(errors.New("natsrpc: number " + s + " out of float64 range"))
		return
	}
	w.float(f)
}

package natsrpc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Envelope params and results reach this package's codecs as JSON whatever
// the envelope's format, so that the JSON codecs a Server or Client already
// has serve both: msgpack values are converted to JSON on the way in and
// JSON to msgpack on the way out, directly, without building Go values.

// maxNesting bounds the depth of a converted msgpack value, as
// encoding/json bounds the JSON it reads (json.Valid refuses deeper).
const maxNesting = 10000

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
		return b, badEnvelope(EnvelopeMsgpack, "value nested too deeply")
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
		var s []byte
		if s, err = r.raw(); err == nil {
			b = appendJSONString(b, s)
		}
	case msgpcode.IsBin(c):
		var s []byte
		if s, err = r.raw(); err == nil {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, s)
			b = append(b, '"')
		}
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
			if c, err = r.d.PeekCode(); err != nil {
				return b, r.wrap(err)
			}
			if !msgpcode.IsString(c) {
				return b, badEnvelope(EnvelopeMsgpack, "map key is not a str")
			}
			k, err := r.raw()
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

// raw reads the next str or bin and returns its bytes, a slice of the data
// (no copy).
func (r *msgpackReader) raw() ([]byte, error) {
	n, err := r.d.DecodeBytesLen()
	if err != nil {
		return nil, r.wrap(err)
	}
	if n < 0 || n > r.rd.Len() {
		return nil, badEnvelope(EnvelopeMsgpack, "truncated")
	}
	off := len(r.data) - r.rd.Len()
	if _, err := r.rd.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, r.wrap(err)
	}
	return r.data[off : off+n], nil
}

// json writes a JSON value as msgpack: null nil, strings str, integers that
// fit 64 bits integers in their shortest form, other numbers float64,
// arrays arrays, objects maps in their key order.
func (w *msgpackWriter) json(data []byte) error {
	if !json.Valid(data) {
		return errors.New("natsrpc: not JSON")
	}
	// Valid JSON from here on (see eachMember).
	w.jsonValue(data, skipSpace(data, 0))
	return w.err
}

// jsonValue writes the value that starts at data[i] and returns the index
// after it.
func (w *msgpackWriter) jsonValue(data []byte, i int) int {
	switch data[i] {
	case '{':
		w.mapLen(countItems(data, i))
		j := skipSpace(data, i+1)
		if data[j] == '}' {
			return j + 1
		}
		for {
			end := skipString(data, j)
			w.jsonString(data[j:end])
			j = skipSpace(data, end) // ':'
			j = skipSpace(data, j+1) // the value
			j = skipSpace(data, w.jsonValue(data, j))
			if data[j] == '}' {
				return j + 1
			}
			j = skipSpace(data, j+1)
		}
	case '[':
		w.arrayLen(countItems(data, i))
		j := skipSpace(data, i+1)
		if data[j] == ']' {
			return j + 1
		}
		for {
			j = skipSpace(data, w.jsonValue(data, j))
			if data[j] == ']' {
				return j + 1
			}
			j = skipSpace(data, j+1)
		}
	case '"':
		end := skipString(data, i)
		w.jsonString(data[i:end])
		return end
	case 't':
		w.boolean(true)
		return i + len("true")
	case 'f':
		w.boolean(false)
		return i + len("false")
	case 'n':
		w.null()
		return i + len("null")
	}
	end := skipValue(data, i)
	w.number(data[i:end])
	return end
}

// countItems counts the members of the object, or the elements of the
// array, that starts at data[i].
func countItems(data []byte, i int) int {
	j := skipSpace(data, i+1)
	if data[j] == '}' || data[j] == ']' {
		return 0
	}
	n := 1
	for {
		j = skipSpace(data, skipValue(data, j))
		if data[j] == ':' { // after an object's key
			j = skipSpace(data, skipValue(data, skipSpace(data, j+1)))
		}
		if data[j] != ',' {
			return n
		}
		n++
		j = skipSpace(data, j+1)
	}
}

// jsonString writes a quoted JSON string as str: its bytes as they are when
// it has no escape and is valid UTF-8, else as encoding/json decodes it.
func (w *msgpackWriter) jsonString(quoted []byte) {
	s := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		w.strBytes(s)
		return
	}
	var v string
	if err := json.Unmarshal(quoted, &v); err != nil {
		w.set(err)
		return
	}
	w.str(v)
}

// strBytes writes s as a str: the header as the library's encoder writes
// it, then the bytes, into the same buffer (the encoder does not buffer).
func (w *msgpackWriter) strBytes(s []byte) {
	n := len(s)
	switch {
	case n < 32:
		w.buf.WriteByte(msgpcode.FixedStrLow | byte(n))
	case n < 256:
		w.buf.Write([]byte{msgpcode.Str8, byte(n)})
	case n <= math.MaxUint16:
		w.buf.Write([]byte{msgpcode.Str16, byte(n >> 8), byte(n)})
	default:
		w.buf.Write([]byte{msgpcode.Str32, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	w.buf.Write(s)
}

// number writes a JSON number: an integer in its shortest msgpack form when
// it has no fraction or exponent and fits 64 bits, a float64 otherwise.
func (w *msgpackWriter) number(lit []byte) {
	s := string(lit)
	integral := true
	for _, c := range lit {
		if c == '.' || c == 'e' || c == 'E' {
			integral = false
			break
		}
	}
	if integral {
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

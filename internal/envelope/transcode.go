package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// ---- msgpack → JSON ----

// frame is an open array or map of toJSON: how many items are left to
// read, a map counting its keys and its values.
type frame struct {
	left  int
	isMap bool
}

// toJSON reads the next msgpack value and appends it to b as JSON, keeping
// the order of map keys: nil is null, str a string, bin a base64 string (as
// encoding/json writes []byte), integers and finite floats numbers (floats
// keep a fraction or exponent, so they stay floats), arrays and maps with
// str keys as themselves. Extensions, non-str map keys and NaN or infinite
// floats have no JSON form: they are errors, as is nesting deeper than
// rpclimit.MaxDepth. It walks the value with a stack of its own: time and
// memory are linear in the input whatever its shape.
func (c *cursor) toJSON(b []byte) ([]byte, error) {
	var stackBuf [16]frame
	stack := stackBuf[:0]
	for {
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			if top.left--; top.isMap && top.left%2 == 1 { // a key, then its value
				top.left--
				code, err := c.peek()
				if err != nil {
					return b, err
				}
				if kindOf(code) != kindStr {
					return b, bad(Msgpack, "map key is not a str")
				}
				k, err := c.bytes()
				if err != nil {
					return b, err
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
			}
		}
		code, err := c.peek()
		if err != nil {
			return b, err
		}
		switch kindOf(code) {
		case kindNil:
			c.i++
			b = append(b, "null"...)
		case kindBool:
			c.i++
			b = strconv.AppendBool(b, code == mpTrue)
		case kindUint:
			var v uint64
			v, err = c.uint()
			b = strconv.AppendUint(b, v, 10)
		case kindInt:
			var v int64
			v, err = c.int()
			b = strconv.AppendInt(b, v, 10)
		case kindFloat:
			var v float64
			if v, err = c.float(); err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
				return b, bad(Msgpack, "NaN or infinite float has no JSON form")
			}
			b = appendJSONFloat(b, v)
		case kindStr:
			var s []byte
			if s, err = c.bytes(); err == nil {
				b = appendJSONString(b, s)
			}
		case kindBin:
			var s []byte
			if s, err = c.bytes(); err == nil {
				b = append(b, '"')
				b = base64.StdEncoding.AppendEncode(b, s)
				b = append(b, '"')
			}
		case kindArray, kindMap:
			if len(stack) >= rpclimit.MaxDepth {
				return b, bad(Msgpack, "value nested deeper than "+strconv.Itoa(rpclimit.MaxDepth))
			}
			var n int
			if n, err = c.container(); err != nil {
				return b, err
			}
			f := frame{left: n, isMap: kindOf(code) == kindMap}
			if f.isMap {
				f.left *= 2
				b = append(b, '{')
			} else {
				b = append(b, '[')
			}
			stack = append(stack, f)
			if n > 0 {
				continue // to its first item
			}
		case kindExt:
			return b, bad(Msgpack, "extension type 0x"+strconv.FormatUint(uint64(code), 16)+" is not allowed")
		default:
			return b, unknownCode(code)
		}
		if err != nil {
			return b, err
		}
		// A value is complete: close the containers it completes, then
		// separate it from the next item.
		for {
			n := len(stack)
			if n == 0 {
				return b, nil
			}
			if top := &stack[n-1]; top.left > 0 {
				b = append(b, ',')
				break
			} else if top.isMap {
				b = append(b, '}')
			} else {
				b = append(b, ']')
			}
			stack = stack[:n-1]
		}
	}
}

// ---- JSON → msgpack ----

var errNotJSON = errors.New("natsrpc: not JSON")

// appendJSONAsMsgpack writes a JSON value as msgpack: null nil, strings str,
// integers that fit 64 bits integers in their shortest form, other numbers
// float64, arrays arrays, objects maps in their key order. msgpack writes a
// container's length before its items, so a first pass counts the items of
// every container (in the order they open) and a second writes; both are
// single scans of data, with no recursion.
func appendJSONAsMsgpack(b, data []byte) ([]byte, error) {
	if !json.Valid(data) { // also bounds the nesting (encoding/json's 10000)
		return b, errNotJSON
	}
	var countBuf [16]int
	counts := countItems(data, countBuf[:0])
	next := 0
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case ' ', '\t', '\r', '\n', ',', ':', '}', ']':
			i++
		case '{':
			b = appendMapLen(b, counts[next])
			next++
			i++
		case '[':
			b = appendArrayLen(b, counts[next])
			next++
			i++
		case '"':
			end := skipString(data, i)
			var err error
			if b, err = appendJSONStringAsStr(b, data[i:end]); err != nil {
				return b, err
			}
			i = end
		case 't':
			b = append(b, mpTrue)
			i += len("true")
		case 'f':
			b = append(b, mpFalse)
			i += len("false")
		case 'n':
			b = append(b, mpNil)
			i += len("null")
		default:
			end := skipValue(data, i)
			var err error
			if b, err = appendNumber(b, data[i:end]); err != nil {
				return b, err
			}
			i = end
		}
	}
	return b, nil
}

// countItems appends to counts the number of members or elements of every
// object and array of valid JSON data, in the order they open. An item is
// counted when its first byte is seen where an item may start: just after
// the container opens or after a comma at its level.
func countItems(data []byte, counts []int) []int {
	var stackBuf [16]int
	open := stackBuf[:0] // indexes into counts of the open containers
	expect := false      // the next value-start byte begins an item of the innermost container
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case ' ', '\t', '\r', '\n', ':':
			continue
		case ',':
			expect = true
			continue
		case '}', ']':
			open = open[:len(open)-1]
			expect = false
			continue
		}
		if expect {
			counts[open[len(open)-1]]++
			expect = false
		}
		switch c {
		case '{', '[':
			open = append(open, len(counts))
			counts = append(counts, 0)
			expect = true
		case '"':
			i = skipString(data, i) - 1
		default: // a number or a literal: step over the rest of it
			for i+1 < len(data) && !isDelim(data[i+1]) {
				i++
			}
		}
	}
	return counts
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ':', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// appendJSONStringAsStr writes a quoted JSON string as str: its bytes as
// they are when it has no escape and is valid UTF-8, else as encoding/json
// decodes it.
func appendJSONStringAsStr(b, quoted []byte) ([]byte, error) {
	s := quoted[1 : len(quoted)-1]
	if isPlain(s) {
		return appendStr(b, s), nil
	}
	var v string
	if err := json.Unmarshal(quoted, &v); err != nil {
		return b, err
	}
	return appendStr(b, v), nil
}

// isPlain reports whether the contents of a valid JSON string need no
// unescaping: no escape, and valid UTF-8.
func isPlain(s []byte) bool {
	for i, c := range s {
		if c == '\\' {
			return false
		}
		if c >= utf8.RuneSelf {
			return bytes.IndexByte(s[i:], '\\') < 0 && utf8.Valid(s[i:])
		}
	}
	return true
}

// appendNumber writes a JSON number: an integer in its shortest msgpack form
// when it has no fraction or exponent and fits 64 bits, a float64 otherwise.
func appendNumber(b, lit []byte) ([]byte, error) {
	integral := true
	for _, c := range lit {
		if c == '.' || c == 'e' || c == 'E' {
			integral = false
			break
		}
	}
	if integral && len(lit) <= 20 {
		if i, err := strconv.ParseInt(string(lit), 10, 64); err == nil {
			return appendInt(b, i), nil
		}
		if u, err := strconv.ParseUint(string(lit), 10, 64); err == nil {
			return appendUint(b, u), nil
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.IsInf(f, 0) {
		return b, errors.New("natsrpc: number " + rpclimit.Quote(lit) + " out of float64 range")
	}
	return appendFloat64(b, f), nil
}

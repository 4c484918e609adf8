package envelope

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// ---- msgpack → JSON ----

var errTooDeep = bad(Msgpack, "value nested deeper than "+strconv.Itoa(rpclimit.MaxDepth))

// frame is an open array or map of toJSON: how many items are left to
// read (a map counts its keys and its values) shifted left by one, the low
// bit set for a map. Four bytes a level: rpclimit.MaxMessage keeps the
// count within 28 bits.
type frame uint32

func (f frame) left() uint32 { return uint32(f) >> 1 }
func (f frame) isMap() bool  { return f&1 == 1 }

// toJSON reads the next msgpack value and appends it to b as JSON, keeping
// the order of map keys: nil is null, str a string, bin a base64 string (as
// encoding/json writes []byte), integers and finite floats numbers (floats
// keep a fraction or exponent, so they stay floats), arrays and maps with
// str keys as themselves. Extensions, non-str map keys and NaN or infinite
// floats have no JSON form: they are errors, as is nesting deeper than
// rpclimit.MaxDepth. It walks the value with a stack of its own: time and
// memory are linear in the input whatever its shape.
func (c *cursor) toJSON(b []byte) ([]byte, error) {
	if cap(b) == 0 {
		// JSON from msgpack is seldom much longer; grow doubles it.
		b = make([]byte, 0, min(c.left(), 64<<10)+16)
	}
	var stackBuf [64]frame
	stack := stackBuf[:0]
	for {
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			if *top -= 2; top.isMap() && top.left()%2 == 1 { // a key, then its value
				*top -= 2
				k, err := c.key()
				if err != nil {
					return b, err
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
			}
		}
		b = grow(b, 32) // room for any scalar, bracket or separator
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
				b = grow(b, base64.StdEncoding.EncodedLen(len(s))+2)
				b = append(b, '"')
				b = base64.StdEncoding.AppendEncode(b, s)
				b = append(b, '"')
			}
		case kindArray, kindMap:
			if len(stack) >= rpclimit.MaxDepth {
				return b, errTooDeep
			}
			var n int
			if n, err = c.container(); err != nil {
				return b, err
			}
			f, open := frame(n)<<1, byte('[')
			if kindOf(code) == kindMap {
				f, open = frame(n)<<2|1, '{'
			}
			b = append(b, open)
			stack = append(stack, f)
			if n > 0 {
				continue // to its first item or key
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
		n := len(stack)
		for ; n > 0 && stack[n-1].left() == 0; n-- {
			if stack[n-1].isMap() {
				b = append(b, '}')
			} else {
				b = append(b, ']')
			}
		}
		if n == 0 {
			return b, nil
		}
		stack = stack[:n]
		b = append(b, ',')
	}
}

// appendInteger writes a JSON integer literal (an optional minus, digits)
// that fits 64 bits, in its shortest form: ok is false when it does not
// fit. It allocates nothing, whatever the literal.
func appendInteger(b, lit []byte) ([]byte, bool) {
	digits := lit
	neg := len(lit) > 0 && lit[0] == '-'
	if neg {
		digits = lit[1:]
	}
	if len(digits) == 0 || len(digits) > 20 {
		return b, false
	}
	var u uint64
	for _, c := range digits {
		d := uint64(c - '0')
		if d > 9 || u > (math.MaxUint64-d)/10 {
			return b, false
		}
		u = u*10 + d
	}
	if !neg {
		return appendUint(b, u), true
	}
	if u > 1<<63 {
		return b, false
	}
	return appendInt(b, -int64(u)), true // -(1<<63) wraps to itself: MinInt64
}

// grow makes room for n more bytes, at least doubling b when it must: a
// value that expands as it converts (a control byte becomes six) costs at
// most about four times its final size in allocations, where append's
// growth of large slices by a quarter would cost twenty.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
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
	if len(data) > rpclimit.MaxMessage {
		return b, errTooLarge
	}
	var countBuf [16]int32
	counts := countItems(data, countBuf[:0])
	b = slices.Grow(b, len(data)+16) // msgpack is seldom longer than its JSON
	next := 0
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case ' ', '\t', '\r', '\n', ',', ':', '}', ']':
			i++
		case '{':
			b = appendMapLen(b, int(counts[next]))
			next++
			i++
		case '[':
			b = appendArrayLen(b, int(counts[next]))
			next++
			i++
		case '"':
			end := skipString(data, i)
			b = appendJSONStringAsStr(b, data[i:end])
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
func countItems(data []byte, counts []int32) []int32 {
	var stackBuf [16]int32
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
			open = append(open, int32(len(counts)))
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
func appendJSONStringAsStr(b, quoted []byte) []byte {
	s := quoted[1 : len(quoted)-1]
	if isPlain(s) {
		return appendStr(b, s)
	}
	// The header needs the unescaped length: unescape after room for the
	// longest header, then write the header the length takes and move the
	// bytes up to it.
	start := len(b)
	b = appendUnquoted(append(b, 0, 0, 0, 0, 0), s)
	n := len(b) - start - 5
	var buf [5]byte
	head := strHeader(buf[:0], n)
	copy(b[start+len(head):], b[start+5:])
	copy(b[start:], head)
	return b[:start+len(head)+n]
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
	if integral {
		if out, ok := appendInteger(b, lit); ok {
			return out, nil
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.IsInf(f, 0) {
		return b, errors.New("natsrpc: number " + rpclimit.Quote(lit) + " out of float64 range")
	}
	return appendFloat64(b, f), nil
}

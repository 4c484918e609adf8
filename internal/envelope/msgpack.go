package envelope

import (
	"encoding/binary"
	"math"
	"strconv"
)

// The msgpack codes this package reads and writes (the msgpack
// specification's table).
const (
	mpPosFixIntMax = 0x7f
	mpFixMap       = 0x80 // 0x80–0x8f
	mpFixArray     = 0x90 // 0x90–0x9f
	mpFixStr       = 0xa0 // 0xa0–0xbf
	mpNil          = 0xc0
	mpNever        = 0xc1
	mpFalse        = 0xc2
	mpTrue         = 0xc3
	mpBin8         = 0xc4
	mpBin16        = 0xc5
	mpBin32        = 0xc6
	mpExt8         = 0xc7
	mpExt16        = 0xc8
	mpExt32        = 0xc9
	mpFloat32      = 0xca
	mpFloat64      = 0xcb
	mpUint8        = 0xcc
	mpUint16       = 0xcd
	mpUint32       = 0xce
	mpUint64       = 0xcf
	mpInt8         = 0xd0
	mpInt16        = 0xd1
	mpInt32        = 0xd2
	mpInt64        = 0xd3
	mpFixExt1      = 0xd4 // 0xd4–0xd8: fixext 1, 2, 4, 8, 16
	mpFixExt16     = 0xd8
	mpStr8         = 0xd9
	mpStr16        = 0xda
	mpStr32        = 0xdb
	mpArray16      = 0xdc
	mpArray32      = 0xdd
	mpMap16        = 0xde
	mpMap32        = 0xdf
	mpNegFixIntMin = 0xe0
)

// ---- writing: what vmihailenco/msgpack's encoder writes, appended ----

func appendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, mpFixMap|byte(n))
	case n <= math.MaxUint16:
		return append(b, mpMap16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpMap32), uint32(n))
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, mpFixArray|byte(n))
	case n <= math.MaxUint16:
		return append(b, mpArray16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
}

// appendStr writes s as a str, never a bin.
func appendStr[S string | []byte](b []byte, s S) []byte {
	return append(strHeader(b, len(s)), s...)
}

// strHeader writes the header of a str of n bytes.
func strHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, mpFixStr|byte(n))
	case n < 256:
		return append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		return append(b, mpStr16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, mpNil)
	}
	return appendStr(b, s)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

func appendFloat64(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, mpFloat64), math.Float64bits(f))
}

// appendUint and appendInt write an integer in its shortest form.
func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= mpPosFixIntMax:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, mpUint8, byte(n))
	case n <= math.MaxUint16:
		return append(b, mpUint16, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), n)
}

func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, mpInt8, byte(n))
	case n >= math.MinInt16:
		return append(b, mpInt16, byte(n>>8), byte(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, mpInt32), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(n))
}

// ---- reading ----

// cursor reads msgpack from a byte slice. Every read checks its length
// against what is left, so a length prefix cannot make it read, allocate or
// loop past the data; nothing it reads is copied unless asked.
type cursor struct {
	data []byte
	i    int
}

func (c *cursor) left() int { return len(c.data) - c.i }

func (c *cursor) peek() (byte, error) {
	if c.i >= len(c.data) {
		return 0, errTruncated
	}
	return c.data[c.i], nil
}

// take returns the next n bytes.
func (c *cursor) take(n int) ([]byte, error) {
	if n < 0 || n > c.left() {
		return nil, errTruncated
	}
	b := c.data[c.i : c.i+n]
	c.i += n
	return b, nil
}

// uintN reads a big-endian unsigned integer of n bytes (1, 2, 4 or 8).
func (c *cursor) uintN(n int) (uint64, error) {
	b, err := c.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(b[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(b)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(b)), nil
	}
	return binary.BigEndian.Uint64(b), nil
}

// length reads the length that follows a code in n bytes. It cannot
// exceed what is left of the data (every byte, item or entry takes at
// least a byte), so no count can outrun the input.
func (c *cursor) length(n int) (int, error) {
	v, err := c.uintN(n)
	if err != nil {
		return 0, err
	}
	if v > uint64(c.left()) {
		return 0, errTruncated
	}
	return int(v), nil
}

// Kinds of value, by their first byte.
type kind uint8

const (
	kindInvalid kind = iota
	kindNil
	kindBool
	kindUint
	kindInt
	kindFloat
	kindStr
	kindBin
	kindArray
	kindMap
	kindExt
)

// kindOf is a value's kind by its first byte.
func kindOf(c byte) kind { return kinds[c] }

var kinds = func() (t [256]kind) {
	for c := range t {
		t[c] = kindOfCode(byte(c))
	}
	return t
}()

func kindOfCode(c byte) kind {
	switch {
	case c <= mpPosFixIntMax:
		return kindUint
	case c < mpFixArray:
		return kindMap
	case c < mpFixStr:
		return kindArray
	case c < mpNil:
		return kindStr
	case c >= mpNegFixIntMin:
		return kindInt
	}
	switch c {
	case mpNil:
		return kindNil
	case mpFalse, mpTrue:
		return kindBool
	case mpBin8, mpBin16, mpBin32:
		return kindBin
	case mpExt8, mpExt16, mpExt32, mpFixExt1, mpFixExt1 + 1, mpFixExt1 + 2, mpFixExt1 + 3, mpFixExt16:
		return kindExt
	case mpFloat32, mpFloat64:
		return kindFloat
	case mpUint8, mpUint16, mpUint32, mpUint64:
		return kindUint
	case mpInt8, mpInt16, mpInt32, mpInt64:
		return kindInt
	case mpStr8, mpStr16, mpStr32:
		return kindStr
	case mpArray16, mpArray32:
		return kindArray
	case mpMap16, mpMap32:
		return kindMap
	}
	return kindInvalid // 0xc1
}

// container reads an array's or a map's header and returns its length.
func (c *cursor) container() (int, error) {
	code := c.data[c.i]
	c.i++
	switch {
	case code < mpFixStr: // fixmap, fixarray
		return int(code & 0x0f), nil
	case code == mpArray16 || code == mpMap16:
		return c.length(2)
	}
	return c.length(4)
}

// bytes reads a str's or a bin's contents, a slice of the data.
func (c *cursor) bytes() ([]byte, error) {
	code := c.data[c.i]
	c.i++
	var n int
	var err error
	switch code {
	case mpStr8, mpBin8:
		n, err = c.length(1)
	case mpStr16, mpBin16:
		n, err = c.length(2)
	case mpStr32, mpBin32:
		n, err = c.length(4)
	default:
		n = int(code & 0x1f)
	}
	if err != nil {
		return nil, err
	}
	return c.take(n)
}

// key reads a map key, which must be a str, as a slice of the data.
func (c *cursor) key() ([]byte, error) {
	code, err := c.peek()
	if err != nil {
		return nil, err
	}
	if kindOf(code) != kindStr {
		return nil, errKeyNotStr
	}
	return c.bytes()
}

var errKeyNotStr = bad(Msgpack, "map key is not a str")

// uint reads a positive fixint or uint8–64.
func (c *cursor) uint() (uint64, error) {
	code := c.data[c.i]
	c.i++
	if code <= mpPosFixIntMax {
		return uint64(code), nil
	}
	return c.uintN(1 << (code - mpUint8))
}

// int reads a negative fixint or int8–64.
func (c *cursor) int() (int64, error) {
	code := c.data[c.i]
	c.i++
	if code >= mpNegFixIntMin {
		return int64(int8(code)), nil
	}
	n := 1 << (code - mpInt8)
	v, err := c.uintN(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return int64(int8(v)), nil
	case 2:
		return int64(int16(v)), nil
	case 4:
		return int64(int32(v)), nil
	}
	return int64(v), nil
}

// float reads a float32 or float64.
func (c *cursor) float() (float64, error) {
	code := c.data[c.i]
	c.i++
	if code == mpFloat32 {
		v, err := c.uintN(4)
		return float64(math.Float32frombits(uint32(v))), err
	}
	v, err := c.uintN(8)
	return math.Float64frombits(v), err
}

// ext skips an extension value.
func (c *cursor) ext() error {
	code := c.data[c.i]
	c.i++
	var n int
	var err error
	switch code {
	case mpExt8:
		n, err = c.length(1)
	case mpExt16:
		n, err = c.length(2)
	case mpExt32:
		n, err = c.length(4)
	default:
		n = 1 << (code - mpFixExt1)
	}
	if err != nil {
		return err
	}
	_, err = c.take(n + 1) // the type byte and the data
	return err
}

// skip steps over one value, nested or not. It needs no stack: every
// container adds its items to the count of values still to step over, and
// every value takes at least a byte, so the loop ends within the data.
func (c *cursor) skip() error {
	for todo := 1; todo > 0; todo-- {
		code, err := c.peek()
		if err != nil {
			return err
		}
		switch kindOf(code) {
		case kindNil, kindBool:
			c.i++
		case kindUint:
			_, err = c.uint()
		case kindInt:
			_, err = c.int()
		case kindFloat:
			_, err = c.float()
		case kindStr, kindBin:
			_, err = c.bytes()
		case kindExt:
			err = c.ext()
		case kindArray, kindMap:
			var n int
			if n, err = c.container(); err == nil {
				if kindOf(code) == kindMap {
					n *= 2
				}
				if n > c.left() {
					return errTruncated
				}
				todo += n
			}
		default:
			return unknownCode(code)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func unknownCode(code byte) error {
	return bad(Msgpack, "unknown code 0x"+strconv.FormatUint(uint64(code), 16))
}

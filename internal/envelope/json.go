package envelope

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// EachMember calls fn with the key (unescaped) and the raw value of each
// member of the JSON object data, in order, and stops at fn's first error.
// The values are slices of data; a key is valid only while fn runs. Keys are compared exactly: encoding/json
// would match struct fields case-insensitively, which a strict reader must
// not. A repeated key is seen twice (the last one wins, as in Python's
// json.loads). Data that is not a JSON object is an error matching
// ErrMalformed. It is linear in data and does not recurse.
func EachMember(data []byte, fn func(k, v []byte) error) error {
	if !json.Valid(data) {
		return bad(JSON, "not JSON")
	}
	return eachValidMember(data, fn)
}

// eachValidMember is EachMember for data known to be valid JSON: every
// string, object and array is closed.
func eachValidMember(data []byte, fn func(k, v []byte) error) error {
	i := skipSpace(data, 0)
	if data[i] != '{' {
		return bad(JSON, "not an object")
	}
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return nil
	}
	var keyBuf []byte // for keys with escapes, reused
	for {
		end := skipString(data, i)
		k := data[i+1 : end-1]
		if !isPlain(k) {
			keyBuf = appendUnquoted(keyBuf[:0], k)
			k = keyBuf
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

// skipValue returns the index after the value that starts at data[i],
// counting the depth of containers rather than recursing into them.
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
	for j < len(data) && !isDelim(data[j]) {
		j++
	}
	return j
}

// isJSONObject reports whether v, valid JSON, is an object.
func isJSONObject(v []byte) bool {
	v = bytes.TrimLeft(v, " \t\r\n")
	return len(v) > 0 && v[0] == '{'
}

// ---- reading members ----

// jsonStr reads a JSON string member; null is "" when nullable.
func jsonStr(key string, v []byte, nullable bool) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		if nullable && string(v) == "null" {
			return "", nil
		}
		return "", bad(JSON, key+" is not a string")
	}
	s := v[1 : len(v)-1]
	if isPlain(s) {
		return string(s), nil
	}
	return string(appendUnquoted(make([]byte, 0, len(s)), s)), nil
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

// appendUnquoted appends the contents of a valid JSON string (without its
// quotes) as encoding/json reads them: escapes resolved, surrogate pairs
// joined, and a lone surrogate or each byte of invalid UTF-8 as U+FFFD.
// One pass, no allocation beyond b's growth.
func appendUnquoted(b, s []byte) []byte {
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != unicode.ReplacementChar {
						r += 6
						rr = dec
					} else {
						rr = unicode.ReplacementChar
					}
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return b
}

// getu4 reads the \uXXXX escape at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

func jsonTimeout(v []byte) (float64, error) {
	if len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return 0, bad(JSON, "timeout is not a number")
	}
	t, err := strconv.ParseFloat(string(v), 64)
	if err != nil || !(t > 0) || math.IsInf(t, 0) {
		return 0, bad(JSON, "timeout "+rpclimit.Quote(v)+" is not a positive number")
	}
	return t, nil
}

// ---- writing ----

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
	b = grow(b, len(s)+2) // exactly, unless it needs escapes
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = grow(b, i-start+6+len(s)-i)
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
		// At most 4 bytes: converting a string needs no allocation, and a
		// []byte no conversion.
		r, size := utf8.DecodeRune([]byte(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			b = grow(b, i-start+6+len(s)-i)
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, '\\', 'u', '2', '0', '2', hexdigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonSafe marks the ASCII bytes a JSON string holds as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()

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

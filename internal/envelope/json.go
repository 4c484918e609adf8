package envelope

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// EachMember calls fn with the key (unescaped) and the raw value of each
// member of the JSON object data, in order, and stops at fn's first error.
// The values are slices of data. Keys are compared exactly: encoding/json
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
	for {
		end := skipString(data, i)
		k := data[i+1 : end-1]
		if !isPlain(k) {
			var key string
			if err := json.Unmarshal(data[i:end], &key); err != nil {
				return bad(JSON, err.Error())
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
	if s := v[1 : len(v)-1]; isPlain(s) {
		return string(s), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", bad(JSON, key+": "+err.Error())
	}
	return s, nil
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

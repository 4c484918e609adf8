package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// What kitnats prints of what it reads. Every name, version, metadata
// value, reply and error text came from the network (or a registry writer)
// and is hostile: human output escapes control characters with
// safetext.Terminal and is cut to these sizes; JSON output is exact in
// value, with what a terminal would act on written as \u escapes.
const (
	maxCell  = 256      // a table cell, a field of a watch line
	maxLine  = 16 << 10 // one line of human output
	maxFacts = 10       // metadata changes listed in one watch line
	maxRows  = 20       // records listed one a line in a summary (--json lists them all)
)

// clean is s escaped for a terminal and cut to limit bytes of s.
func clean(s string, limit int) string { return safetext.Terminal(safetext.Truncate(s, limit)) }

// say writes one line of human output, escaped and bounded.
func say(w io.Writer, format string, args ...any) {
	io.WriteString(w, clean(fmt.Sprintf(format, args...), maxLine)+"\n")
}

// textLines is s for a terminal as lines: each line escaped (a carriage
// return or an escape sequence cannot rewrite what is on the screen), the
// line breaks kept.
func textLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safetext.Terminal(l)
	}
	return strings.Join(lines, "\n")
}

// printable says s holds nothing a terminal acts on but line breaks: what
// safetext.Terminal escapes, a backslash aside.
func printable(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if safetext.Terminal(l) != strings.ReplaceAll(l, `\`, `\\`) {
			return false
		}
	}
	return true
}

// safeJSON rewrites valid JSON so that it holds no byte a terminal acts on,
// with the same value: in strings, the characters safetext.Terminal escapes
// (C1 and format controls, bidi overrides, U+2028/9) become \u escapes and
// invalid UTF-8 becomes \ufffd (as decoders read it); between tokens,
// whitespace other than a space or a line break becomes a space. encoding/json
// escapes C0 controls itself but passes the others, and a json.RawMessage
// through as it is. One pass, linear in the input.
func safeJSON(b []byte) []byte {
	if isPlainJSON(b) {
		return b
	}
	s := string(b)
	out := bytes.NewBuffer(make([]byte, 0, len(b)+16))
	inString, escaped := false, false
	clean := 0 // s[clean:i] is to be copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case inString && escaped:
				escaped = false
			case inString && c == '\\':
				escaped = true
			case c == '"':
				inString = !inString
			}
			if c >= 0x20 && c != 0x7f || c == '\n' && !inString {
				i++
				continue
			}
			out.WriteString(s[clean:i])
			if inString {
				// DEL, or (not valid JSON) a C0 control: written inert.
				writeU(out, rune(c))
			} else {
				out.WriteByte(' ') // whitespace between tokens
			}
			i++
			clean = i
			continue
		}
		escaped = false
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			out.WriteString(s[clean:i])
			out.WriteString(`\ufffd`)
		case escapes(r, s[i:i+size]):
			out.WriteString(s[clean:i])
			writeU(out, r)
		default:
			i += size
			continue
		}
		i += size
		clean = i
	}
	out.WriteString(s[clean:])
	return out.Bytes()
}

// isPlainJSON says b is ASCII without controls but line breaks: safeJSON
// would copy it as it is.
func isPlainJSON(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf || c < 0x20 && c != '\n' || c == 0x7f {
			return false
		}
	}
	return true
}

// writeU writes r as a JSON \u escape (a surrogate pair beyond the BMP).
func writeU(out *bytes.Buffer, r rune) {
	if r > 0xffff {
		r -= 0x10000
		writeU(out, 0xd800+(r>>10))
		writeU(out, 0xdc00+(r&0x3ff))
		return
	}
	const hex = "0123456789abcdef"
	out.Write([]byte{'\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf]})
}

// bmpEscapes is, for each character of the Basic Multilingual Plane,
// whether safetext.Terminal escapes it: asked once, so that the rule
// stays safetext's and a document of escapes costs no more per character
// than a plain one.
var bmpEscapes struct {
	once sync.Once
	bits [1 << 16 / 64]uint64
}

// escapes says safetext.Terminal escapes r, which is c.
func escapes(r rune, c string) bool {
	if r > 0xffff {
		return safetext.Terminal(c) != c
	}
	bmpEscapes.once.Do(func() {
		for r := rune(utf8.RuneSelf); r <= 0xffff; r++ {
			if c := string(r); safetext.Terminal(c) != c {
				bmpEscapes.bits[r>>6] |= 1 << (r & 63)
			}
		}
	})
	return bmpEscapes.bits[r>>6]&(1<<(r&63)) != 0
}

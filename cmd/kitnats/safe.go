package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
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
			switch {
			case c >= 0x20 && c != 0x7f, c == '\n' && !inString:
				out.WriteByte(c)
			case inString:
				// Not valid JSON; written so that it stays inert.
				fmt.Fprintf(out, `\u%04x`, c)
			default:
				out.WriteByte(' ')
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			out.WriteString(`\ufffd`)
		case safetext.Terminal(s[i:i+size]) != s[i:i+size]:
			writeU(out, r)
		default:
			out.WriteString(s[i : i+size])
		}
		escaped = false
		i += size
	}
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
	out.WriteString(`\u`)
	h := strconv.FormatInt(int64(r), 16)
	out.WriteString(strings.Repeat("0", 4-len(h)) + h)
}

// Package safetext bounds and escapes text that came from the network before
// it reaches an error message, a log line, a $SRV.STATS reply or an
// operator's terminal. Every byte from the network is hostile: an error that
// quotes a 900 KB request is a 900 KB error, and a registry record can carry
// terminal escape sequences.
package safetext

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxQuote is how many bytes of input an error message quotes. The rest is
// counted, not copied.
const MaxQuote = 128

// Quote is strconv.Quote of at most MaxQuote bytes of s (cut on a rune
// boundary), followed by how many bytes were left out. It is the only way
// kitnats quotes input in an error: the text is bounded and every control
// byte is escaped.
func Quote(s string) string {
	return QuoteN(s, MaxQuote)
}

// QuoteN is Quote with a limit of its own.
func QuoteN(s string, limit int) string {
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := Cut(s, limit)
	return strconv.Quote(cut) + "…(" + strconv.Itoa(len(s)-len(cut)) + " more bytes)"
}

// Cut returns the longest prefix of s of at most limit bytes that does not
// split a UTF-8 sequence.
func Cut(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	if limit <= 0 {
		return ""
	}
	n := limit
	// Back up at most utf8.UTFMax-1 bytes to a rune start.
	for i := 0; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}

// Truncate is Cut followed by a marker saying how much was cut, for error
// text that is not quoted (a remote error message).
func Truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := Cut(s, limit)
	return cut + "…(" + strconv.Itoa(len(s)-len(cut)) + " more bytes)"
}

// Terminal makes s safe to print on a terminal: control characters (C0, DEL,
// C1, and the Unicode format and bidi controls that reorder text) and
// invalid UTF-8 are written as Go escapes (\x1b, \u202e), and a backslash as
// \\ so the escapes cannot be forged. Printable text, spaces and non-ASCII
// letters are kept as they are. It costs one pass and, when nothing needs
// escaping, no allocation.
func Terminal(s string) string {
	if isClean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case r == '\\':
			b.WriteString(`\\`)
		case needsEscape(r):
			q := strconv.QuoteRuneToASCII(r) // 'x1b' style, with quotes
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '\\' || c >= 0x80 {
			if c >= 0x80 {
				return cleanUnicode(s[i:])
			}
			return false
		}
	}
	return true
}

func cleanUnicode(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r == '\\' || needsEscape(r) {
			return false
		}
	}
	return true
}

func needsEscape(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Cf, r) ||
		r == '\u2028' || r == '\u2029'
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

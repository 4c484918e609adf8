package safetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuoteBounded(t *testing.T) {
	long := strings.Repeat("a", 900_000)
	q := Quote(long)
	if len(q) > MaxQuote+40 {
		t.Fatalf("Quote of 900 KB is %d bytes", len(q))
	}
	if !strings.Contains(q, "899872 more bytes") {
		t.Fatalf("Quote does not count what it left out: %s", q)
	}
	if got := Quote("abc"); got != `"abc"` {
		t.Fatalf("short input: %s", got)
	}
}

func TestCutKeepsRunes(t *testing.T) {
	s := strings.Repeat("é", 100) // 2 bytes each
	for limit := 0; limit < 20; limit++ {
		c := Cut(s, limit)
		if !utf8.ValidString(c) || len(c) > limit {
			t.Fatalf("Cut(%d) = %q", limit, c)
		}
	}
}

func TestTerminal(t *testing.T) {
	for in, want := range map[string]string{
		"greeter-1":        "greeter-1",
		"héllo wörld":      "héllo wörld",
		"\x1b]0;pwned\x07": `\x1b]0;pwned\a`,
		"a\x1b[2Jb":        `a\x1b[2Jb`,
		"tab\there":        `tab\there`,
		"new\nline":        `new\nline`,
		"back\\x1b":        `back\\x1b`,
		"\u202eevil":       `\u202eevil`,
		"c1\u009b31m":      `c1\u009b31m`,
		"bad\xffutf":       `bad\xffutf`,
		"del\x7f":          `del\x7f`,
	} {
		got := Terminal(in)
		if got != want {
			t.Errorf("Terminal(%q) = %q, want %q", in, got, want)
		}
		for _, c := range []byte(got) {
			if c < 0x20 || c == 0x7f {
				t.Errorf("Terminal(%q) kept control byte %#x", in, c)
			}
		}
	}
}

func TestTerminalCleanDoesNotAllocate(t *testing.T) {
	s := "greeter-1 ACTIVE 1.2.3 zone=eu-west-1a héllo"
	if n := testing.AllocsPerRun(100, func() { _ = Terminal(s) }); n != 0 {
		t.Fatalf("Terminal allocated %v times on clean text", n)
	}
}

func FuzzTerminal(f *testing.F) {
	f.Add("\x1b[31mred")
	f.Add("plain")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		out := Terminal(s)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		for _, r := range out {
			if needsEscape(r) {
				t.Fatalf("Terminal(%q) kept %U", s, r)
			}
		}
		if len(out) > 10*len(s)+16 {
			t.Fatalf("Terminal grew %d bytes into %d", len(s), len(out))
		}
		q := Quote(s)
		if len(q) > 6*MaxQuote+40 {
			t.Fatalf("Quote of %d bytes is %d bytes", len(s), len(q))
		}
	})
}

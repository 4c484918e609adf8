package rpclimit

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMessageBounded(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("x", MaxErrorMessage), strings.Repeat("é", 900_000), strings.Repeat("\xff", 5000)} {
		m := Message(s)
		if len(m) > MaxErrorMessage {
			t.Fatalf("%d bytes → %d", len(s), len(m))
		}
		if len(s) <= MaxErrorMessage && m != s {
			t.Fatalf("a short message was changed: %q", m)
		}
		if Message(m) != m {
			t.Fatalf("not idempotent: %q", m)
		}
		if utf8.ValidString(s) && !utf8.ValidString(m) {
			t.Fatalf("cut inside a rune: %q", m[len(m)-40:])
		}
	}
}

func TestQuoteBounded(t *testing.T) {
	long := []byte(strings.Repeat("a", 900_000))
	q := Quote(long)
	if len(q) > MaxQuote+40 || !strings.Contains(q, "899872 more bytes") {
		t.Fatalf("Quote of 900 KB: %d bytes, %q", len(q), q[len(q)-30:])
	}
	if got := Quote([]byte("a\x00b")); got != `"a\x00b"` {
		t.Fatalf("short input: %s", got)
	}
	if n := testing.AllocsPerRun(10, func() { _ = Quote(long) }); n > 6 {
		t.Fatalf("%v allocations", n)
	}
}

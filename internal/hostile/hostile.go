// Package hostile makes the inputs a reader of network bytes must survive —
// deep nesting, long strings, huge and negative numbers, invalid UTF-8,
// control bytes, duplicate keys — and measures what reading them costs, for
// the tests of natsrpc and its codecs.
package hostile

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// Controls is text that would retitle, clear or spoof a terminal, and
// break a header line.
const Controls = "\x1b]0;pwned\x07\x1b[2J\r\nX-Injected: 1\x00\x7f\u202e"

// InvalidUTF8 is no UTF-8 at all.
const InvalidUTF8 = "\xff\xfe\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc"

// Long is a string of n bytes that mixes plain text, control bytes and
// invalid UTF-8, so that every escaping path is taken.
func Long(n int) string {
	unit := "abcdefgh" + Controls + InvalidUTF8 + `"\`
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

// Numbers are literals a number reader must refuse or bound.
var Numbers = []string{
	"-1", "-0", "0", "-9223372036854775809", "18446744073709551616",
	"99999999999999999999999999999999", "1e309", "-1e309", "1e-400",
	"123456789012345678901234567890e999999999", strings.Repeat("9", 4096),
	"0x10", "1_000", "+5", "NaN", "Infinity",
}

// DeepJSON is n nested JSON arrays.
func DeepJSON(n int) []byte {
	return append(bytes.Repeat([]byte{'['}, n), bytes.Repeat([]byte{']'}, n)...)
}

// DeepJSONObject is n nested JSON objects, {"a":{"a":…{}…}}.
func DeepJSONObject(n int) []byte {
	b := bytes.Repeat([]byte(`{"a":`), n)
	b = append(b, "{}"...)
	return append(b, bytes.Repeat([]byte{'}'}, n)...)
}

// DeepMsgpack is n nested one-entry msgpack maps {"a": {"a": … nil}}, the
// nesting bomb: three bytes a level.
func DeepMsgpack(n int) []byte {
	b := bytes.Repeat([]byte{0x81, 0xa1, 'a'}, n)
	return append(b, 0xc0)
}

// DeepMsgpackArray is n nested one-element msgpack arrays: a byte a level.
func DeepMsgpackArray(n int) []byte {
	return append(bytes.Repeat([]byte{0x91}, n), 0xc0)
}

// Allocs reports the bytes and the allocations f makes (the process's, so
// run it where nothing else allocates much).
func Allocs(f func()) (bytes, allocs uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, after.Mallocs - before.Mallocs
}

// Linear fails tb when f, reading input, allocates more than perByte bytes
// for each byte of input (plus slack for fixed costs), or more than
// maxAllocs allocations: the cost of reading hostile bytes stays a bounded
// multiple of their size.
func Linear(tb testing.TB, name string, input []byte, perByte float64, maxAllocs float64, f func()) {
	tb.Helper()
	const slack = 64 << 10
	f() // warm up pools and caches
	n, a := Allocs(f)
	perByte *= raceFactor
	maxAllocs *= raceFactor
	if float64(n) > perByte*float64(len(input))+slack {
		tb.Errorf("%s: %d bytes allocated for %d bytes of input (%.1f per byte, want ≤ %.1f)",
			name, n, len(input), float64(n)/float64(max(len(input), 1)), perByte)
	}
	if float64(a) > maxAllocs {
		tb.Errorf("%s: %d allocations, want ≤ %v", name, a, maxAllocs)
	}
}

// StackInUse is the memory the process's goroutine stacks take now.
func StackInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

// Size is the size of the corpus's large inputs: a message at nats-server's
// default max payload (1 MB), less under the race detector, which reads
// every byte ten times slower. Linear cost shows at either size.
const Size = 900_000 * 2 / (raceFactor + 1)

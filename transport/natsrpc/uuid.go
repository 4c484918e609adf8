package natsrpc

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// The identifiers and timestamps of the envelopes a Client and a Service
// write.

// newUUID is a random (version 4) UUID in its 36-character form. Message IDs
// need uniqueness, not secrecy: math/rand/v2's generator is seeded from the
// system and runs without a lock.
func newUUID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// traceUUID is the W3C trace ID of ctx in UUID form, so that an AegisSDK
// peer's logs carry the trace kitnats' spans belong to, or a random UUID
// when ctx has no trace.
func traceUUID(ctx context.Context) string {
	if id := trace.SpanContextFromContext(ctx).TraceID(); id.IsValid() {
		return formatUUID(id)
	}
	return newUUID()
}

func formatUUID(b [16]byte) string {
	const hexdigits = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hexdigits[c>>4], hexdigits[c&0x0f]
		j += 2
	}
	return string(s[:])
}

// isoLayout writes UTC with microseconds and the offset as Python's
// isoformat does: "2025-08-08T05:02:24.123456+00:00".
const isoLayout = "2006-01-02T15:04:05.000000+00:00"

func isoNow() string { return time.Now().UTC().Format(isoLayout) }

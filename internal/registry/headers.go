package registry

import (
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// OpOf reads the KV operation of a message from its headers: a put, a
// clean delete, a purge, or a server-side expiry (a limit marker).
func OpOf(h nats.Header) ChangeKind {
	if len(h) == 0 {
		return ChangeUpdated
	}
	switch h.Get("KV-Operation") {
	case "DEL":
		return ChangeDeleted
	case "PURGE":
		return ChangePurged
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge":
		return ChangeExpired
	case "Purge":
		return ChangePurged
	case "Remove":
		return ChangeDeleted
	}
	return ChangeUpdated
}

// maxTTLSeconds is the longest TTL a time.Duration holds, in seconds.
const maxTTLSeconds = math.MaxInt64 / int64(time.Second)

// MsgTTL reads the per-message TTL a write asked the server for (the
// Nats-TTL header a Registrar sets on buckets with per-key TTL), as the
// server reads it: a Go duration of at least a second ("30s", truncated to
// whole seconds) or whole seconds ("30"). ok is false when the message has
// none, one that never expires ("never", in any case), or one the server
// refuses. A TTL beyond what a time.Duration holds (292 years) is that
// longest duration. The record expires at the message's time plus the TTL.
func MsgTTL(h nats.Header) (ttl time.Duration, ok bool) {
	v := h.Get(jetstream.MsgTTLHeader)
	if v == "" || strings.EqualFold(v, "never") {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < time.Second {
			return 0, false
		}
		return d.Truncate(time.Second), true
	}
	// Whole seconds: digits only, as the server reads them.
	if len(v) > 20 {
		return 0, false // more digits than any int64
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, false // overflows int64: the server refuses it too
		}
		n = n*10 + int64(c-'0')
	}
	switch {
	case n <= 0:
		return 0, false
	case n > maxTTLSeconds:
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(n) * time.Second, true
}

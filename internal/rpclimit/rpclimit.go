// Package rpclimit states, in one place, what transport/natsrpc and its
// codecs (internal/envelope, internal/rpcheader) accept from the network.
// Every reader of RPC bytes runs in time linear in its input, walks nesting
// by iteration (an explicit stack, never the goroutine's), and quotes input
// in error text only through Quote or safetext, cut to a fixed length.
package rpclimit

import (
	"strconv"
	"time"

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

const (
	// MaxMessage is the largest message the codecs read or write: the
	// largest max_payload a nats-server accepts. A larger one is refused
	// before it is parsed.
	MaxMessage = 64 << 20

	// MaxDepth bounds the nesting of containers in an envelope's params or
	// result, in both formats: encoding/json's own limit, so a value that
	// converts also decodes.
	MaxDepth = 10000

	// MaxTimeoutDigits bounds the Kitnats-Timeout header: 12 digits of
	// milliseconds is over 30 years and keeps the conversion to
	// time.Duration from overflowing.
	MaxTimeoutDigits = 12

	// MaxEnvelopeTimeout caps the deadline a request envelope may ask for:
	// any positive float is a valid timeout to AegisSDK, and a day is as
	// good as forever for one call.
	MaxEnvelopeTimeout = 24 * time.Hour

	// MaxErrorMessage bounds an error message wherever one is written or
	// kept: the Nats-Service-Error header, an envelope's error, go-kit's
	// error body, a remote error read by a client, and the last error a
	// Service reports in $SRV.STATS.
	MaxErrorMessage = 1024

	// MaxQuote is how many bytes of input an error message quotes, and
	// MaxQuoted how long the quotation is at most: each byte may be
	// escaped as \xNN, and the quotation says how much it left out.
	MaxQuote  = safetext.MaxQuote
	MaxQuoted = 4*MaxQuote + 32
)

// Quote is safetext.Quote of b without copying more of b than it quotes.
func Quote(b []byte) string {
	if len(b) <= MaxQuote {
		return strconv.Quote(string(b))
	}
	head := safetext.Cut(string(b[:MaxQuote+1]), MaxQuote)
	return strconv.Quote(head) + "…(" + strconv.Itoa(len(b)-len(head)) + " more bytes)"
}

// Message bounds an error message to MaxErrorMessage bytes: a longer one
// is cut on a rune boundary and says how much was cut, within the bound, so
// Message(Message(s)) == Message(s).
func Message(s string) string {
	if len(s) <= MaxErrorMessage {
		return s
	}
	const marker = 32 // room for "…(N more bytes)"
	cut := safetext.Cut(s, MaxErrorMessage-marker)
	return cut + "…(" + strconv.Itoa(len(s)-len(cut)) + " more bytes)"
}

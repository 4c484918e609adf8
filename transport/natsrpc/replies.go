package natsrpc

import (
	"errors"
	"strings"

	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// A caller chooses the subject a reply goes to. A Service publishes replies
// only to inbox-shaped subjects (see WithReplyPrefixes): a reply anywhere
// else would be a write the caller chose, made with the Service's
// permissions.

// defaultReplyPrefixes is nats.go's inbox prefix (nats.InboxPrefix).
var defaultReplyPrefixes = []string{"_INBOX."}

// replyAllowed reports whether a Service with the given prefixes (each
// ending in a dot) answers reply subject. No reply subject is allowed: the
// request is run and nothing is published.
func replyAllowed(prefixes []string, subject string) bool {
	if subject == "" {
		return true
	}
	for _, p := range prefixes {
		if len(subject) > len(p) && strings.HasPrefix(subject, p) {
			return true
		}
	}
	return false
}

// validReplyPrefix checks a reply prefix (without its trailing dot):
// subject tokens, no wildcard, no '$'.
func validReplyPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > 256:
		return errors.New("longer than 256 bytes")
	case strings.HasPrefix(p, "$"):
		return errors.New("reserved to NATS's own APIs")
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		if strings.ContainsAny(tok, "*> \t\r\n") || tok == ">" {
			return errors.New("wildcard or space")
		}
	}
	return nil
}

// quote is input quoted for error text, bounded.
func quote(s string) string { return safetext.Quote(s) }

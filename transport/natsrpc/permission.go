package natsrpc

import (
	"strings"
)

// reservedReply reports whether a request's reply subject is reserved to
// NATS's own APIs ($JS, $KV, $O, $SRV, $SYS...). No inbox starts with '$';
// a reply there would be a write the caller chose and could not make
// itself — a Service whose connection may write its own registry key would
// write the reply over its record — so such requests are not served.
func reservedReply(subject string) bool { return strings.HasPrefix(subject, "$") }

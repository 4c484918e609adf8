package natsrpc

import (
	"strings"

	"github.com/aegis-sdk/kitnats/internal/natserr"
)

// ErrPermission is matched (errors.Is) by the error a client call or
// NewService returns when the NATS server refuses it for lack of a
// permission: a *PermissionError, which says which. The permissions each
// role needs are in package github.com/aegis-sdk/kitnats/permissions; the
// registry's ErrPermission is the same sentinel.
var ErrPermission = natserr.ErrPermission

// PermissionError is the permission the NATS user lacked: Op ("publish",
// "subscribe") on Subject, in queue group Queue for a queue subscription.
// It matches ErrPermission, and nats.ErrPermissionViolation when the server
// reported a subject permission violation. It is the registry's
// PermissionError too: one errors.As target for both packages.
type PermissionError = natserr.PermissionError

// reservedReply reports whether a request's reply subject is reserved to
// NATS's own APIs ($JS, $KV, $O, $SRV, $SYS...). No inbox starts with '$';
// a reply there would be a write the caller chose and could not make
// itself — a Service whose connection may write its own registry key would
// write the reply over its record — so such requests are not served.
func reservedReply(subject string) bool { return strings.HasPrefix(subject, "$") }

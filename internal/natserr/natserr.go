// Package natserr recognises the NATS server refusing an operation for lack
// of permission, and turns it into one typed error, *PermissionError,
// matching ErrPermission: the registry (sd/natskv), the transport
// (transport/natsrpc) and the permission templates (permissions) re-export
// both, so callers match one error whichever package refused.
//
// How a refusal shows. The server does not answer a publish or a
// subscription it refuses: it sends the connection an asynchronous
// "-ERR 'Permissions Violation for Publish to "subject"'" (or "for
// Subscription to", or "for Publish with Reply of"), which nats.go turns
// into an error wrapping nats.ErrPermissionViolation, hands to the
// connection's async error handler and keeps as Conn.LastError. A request
// whose publish was refused — a JetStream API call, a JetStream publish such
// as a registry write, an RPC — gets no reply and would only time out; a
// request whose reply subscription (the connection's inbox) was refused
// times out too. JetStream itself answers no 401 or 403 in nats-server 2.15:
// permissions are enforced on subjects, before JetStream sees a request.
// (An API error with such a code is recognised all the same, should a
// server send one.)
//
// Probe watches Conn.LastError for a violation the server reports after it
// is made, matched against the subjects an operation uses; Do runs an
// operation and returns the violation as soon as it is reported, instead of
// waiting for the operation's timeout. Neither touches the connection's
// error handler, which belongs to the caller.
package natserr

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrPermission is matched (errors.Is) by every *PermissionError.
var ErrPermission = errors.New("kitnats: permission denied")

// The operations a NATS user is permitted, or not.
const (
	OpPublish   = "publish"
	OpSubscribe = "subscribe"
	// OpReply: a publish whose reply subject the server refused (a reserved
	// reply prefix).
	OpReply = "publish with reply"
	// OpJetStream: a JetStream API error with code 401 or 403.
	OpJetStream = "jetstream"
)

// PermissionError is an operation the NATS server refused because the
// connection's user lacks the permission for it: Op (OpPublish,
// OpSubscribe...) on Subject (in queue group Queue, for a queue
// subscription). Err is what nats.go reported; errors.Is(err,
// nats.ErrPermissionViolation) holds for a subject permission violation.
type PermissionError struct {
	Op      string
	Subject string
	Queue   string
	Err     error
}

// Error says which permission the user lacks.
func (e *PermissionError) Error() string {
	var b strings.Builder
	b.WriteString("kitnats: permission denied: the NATS user may not ")
	b.WriteString(e.Op)
	if e.Op == OpPublish || e.Op == OpSubscribe {
		b.WriteString(" to")
	}
	b.WriteString(` "` + e.Subject + `"`)
	if e.Queue != "" {
		b.WriteString(` in queue group "` + e.Queue + `"`)
	}
	if e.Err != nil {
		b.WriteString(" (" + e.Err.Error() + ")")
	}
	return b.String()
}

// Unwrap exposes ErrPermission and the error nats.go reported.
func (e *PermissionError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrPermission}
	}
	return []error{ErrPermission, e.Err}
}

var (
	violationRe = regexp.MustCompile(`(?i)permissions violation for (publish to|subscription to|publish with reply of) "([^"]*)"(?: using queue "([^"]*)")?`)
)

// Parse recognises a permission refusal in err: an error wrapping
// nats.ErrPermissionViolation or carrying the server's "Permissions
// Violation for ..." text, a *PermissionError already, or a JetStream API
// error with code 401 or 403. It returns nil for any other error.
func Parse(err error) *PermissionError {
	if err == nil {
		return nil
	}
	var pe *PermissionError
	if errors.As(err, &pe) {
		return pe
	}
	if m := violationRe.FindStringSubmatch(err.Error()); m != nil {
		op := OpPublish
		switch strings.ToLower(m[1]) {
		case "subscription to":
			op = OpSubscribe
		case "publish with reply of":
			op = OpReply
		}
		return &PermissionError{Op: op, Subject: m[2], Queue: m[3], Err: err}
	}
	if errors.Is(err, nats.ErrPermissionViolation) {
		return &PermissionError{Op: "operate", Subject: "?", Err: err}
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && (api.Code == 401 || api.Code == 403) {
		return &PermissionError{Op: OpJetStream, Subject: api.Description, Err: err}
	}
	return nil
}

// Match reports whether subject is matched by pattern, a NATS subject with
// wildcards ('*' one token, '>' the rest). A subject holding wildcards
// itself (a refused wildcard subscription) is matched token by token, its
// wildcards as plain tokens.
func Match(pattern, subject string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case pt == ">":
			return st != ""
		case pt != "*" && pt != st:
			return false
		case !pmore || !smore:
			return !pmore && !smore
		}
		pattern, subject = prest, srest
	}
}

// matchAny reports whether any pattern matches subject.
func matchAny(patterns []string, subject string) bool {
	for _, p := range patterns {
		if Match(p, subject) {
			return true
		}
	}
	return false
}

// InboxPattern is the subject pattern of nc's inboxes, "_INBOX.>" unless
// the connection was made with nats.CustomInboxPrefix: where the replies of
// its requests arrive, and what its user must be allowed to subscribe to.
func InboxPattern(nc *nats.Conn) string {
	if nc == nil {
		return nats.InboxPrefix + ">"
	}
	in := nc.NewInbox()
	if i := strings.LastIndexByte(in, '.'); i > 0 {
		return in[:i] + ".>"
	}
	return nats.InboxPrefix + ">"
}

// Probe notices a permission violation the server reports on a connection
// after the probe is made. It reads Conn.LastError, which holds the newest
// asynchronous error only: a violation followed at once by another error
// may be missed (the operation then fails as it would have without the
// probe).
type Probe struct {
	nc     *nats.Conn
	before error
}

// NewProbe starts watching nc (nil: a probe that finds nothing).
func NewProbe(nc *nats.Conn) *Probe {
	p := &Probe{nc: nc}
	if nc != nil {
		p.before = nc.LastError()
	}
	return p
}

// Check returns the violation reported since the probe was made when its
// subject matches one of patterns (none: any subject), or nil.
func (p *Probe) Check(patterns ...string) *PermissionError {
	if p == nil || p.nc == nil {
		return nil
	}
	err := p.nc.LastError()
	if err == nil || same(err, p.before) {
		return nil
	}
	pe := Parse(err)
	if pe == nil || (len(patterns) > 0 && !matchAny(patterns, pe.Subject)) {
		return nil
	}
	return pe
}

// Refused is the connection's last error when it is a refusal of one of
// patterns, however old: for an operation that failed without a Probe, on
// a connection that never did what it tried.
func Refused(nc *nats.Conn, patterns ...string) *PermissionError {
	if nc == nil {
		return nil
	}
	pe := Parse(nc.LastError())
	if pe == nil || (len(patterns) > 0 && !matchAny(patterns, pe.Subject)) {
		return nil
	}
	return pe
}

// same compares two errors without panicking on uncomparable ones.
func same(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb || !ta.Comparable() {
		return false
	}
	return a == b
}

// pollEvery is how often Do looks for a violation while its operation runs.
const pollEvery = 5 * time.Millisecond

// Do runs op with a context that ends as soon as the server reports a
// permission violation on nc whose subject matches one of patterns, and
// then returns the *PermissionError rather than op's error. A violation
// found once op has failed is returned too; op's success is returned as
// is. With a nil nc, Do is op(ctx).
func Do(ctx context.Context, nc *nats.Conn, patterns []string, op func(context.Context) error) error {
	if nc == nil {
		return op(ctx)
	}
	p := NewProbe(nc)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if pe := p.Check(patterns...); pe != nil {
					cancel(pe)
					return
				}
			}
		}
	}()
	err := op(ctx)
	close(done)
	<-watched
	if err == nil {
		return nil
	}
	var pe *PermissionError
	if errors.As(context.Cause(ctx), &pe) {
		return pe
	}
	if pe := p.Check(patterns...); pe != nil {
		return pe
	}
	if pe := Parse(err); pe != nil {
		return pe
	}
	return err
}

package natskv

import (
	"errors"
	"sync"

	"github.com/aegis-sdk/kitnats/internal/natserr"
)

// ErrPermission is matched (errors.Is) by the error a Registrar, an
// Instancer or BindBucket returns or logs when the NATS server refuses it
// for lack of a permission: a *PermissionError, which says which. The
// permissions each role needs are in package
// github.com/aegis-sdk/kitnats/permissions; the transport's ErrPermission
// is the same sentinel.
var ErrPermission = natserr.ErrPermission

// PermissionError is the permission the NATS user lacked: Op ("publish",
// "subscribe") on Subject, in queue group Queue for a queue subscription.
// It matches ErrPermission, and nats.ErrPermissionViolation when the server
// reported a subject permission violation. It is the transport's
// PermissionError too: one errors.As target for both packages.
type PermissionError = natserr.PermissionError

// refusal is the first time the server refused an Instancer's watch (or
// polling listing) for lack of a permission: its constructor, waiting for
// the first set, fails with it rather than return an empty set.
type refusal struct {
	once sync.Once
	err  *PermissionError
	ch   chan struct{} // closed when err is set
}

// refused records a refusal of i's watch.
func (i *Instancer) refused(pe *PermissionError) {
	i.refusal.once.Do(func() {
		i.refusal.err = pe
		close(i.refusal.ch)
	})
}

// refuse tells every view of the watch that the server refused it, when
// err is a refusal. (Each failure is also logged and sent to subscribers
// as sd.Event{Err}, and the watch keeps retrying: permissions may be
// granted by a configuration reload.)
func (w *watcher) refuse(err error) {
	var pe *PermissionError
	if !errors.As(err, &pe) {
		return
	}
	w.mu.Lock()
	var views []*Instancer
	for _, f := range w.follows {
		views = append(views, f.views...)
	}
	w.mu.Unlock()
	for _, v := range views {
		v.refused(pe)
	}
}

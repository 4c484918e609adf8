package natskv

import (
	"errors"
	"sync"

	"github.com/aegis-sdk/kitnats/internal/natserr"
)

// refusal is the first time the server refused an Instancer's watch (or
// polling listing) for lack of a permission: its constructor, waiting for
// the first set, fails with it rather than return an empty set.
type refusal struct {
	once sync.Once
	err  *natserr.PermissionError
	ch   chan struct{} // closed when err is set
}

// refused records a refusal of i's watch.
func (i *Instancer) refused(pe *natserr.PermissionError) {
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
	var pe *natserr.PermissionError
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

package breaker

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// detector tells correlated failures from an instance's own. It is shared by
// the breakers one Factory makes: each instance owns a slot holding the time
// and kind of its latest failure. A failure is correlated when, counting
// itself, at least max(2, ⌈share × instances⌉) instances failed the same
// way (same kind) within the window, instances whose breaker is open left
// out: then the fault lies with what the
// calls have in common — the client, its connection, the network, a shared
// dependency — and ejecting instances would only take the healthy ones out
// of rotation.
//
// The success path never touches it. A failure stores one word and reads the
// other instances' words, without locks; the slot list is copied on write,
// under mu, when instances come and go.
type detector struct {
	share  float64
	window int64 // nanoseconds
	mu     sync.Mutex
	slots  atomic.Pointer[[]*slot]
}

// slot is one instance's latest failure, now() << kindBits | kind (0 for
// none), and whether its breaker is open.
type slot struct {
	last atomic.Uint64
	open atomic.Bool
}

func newDetector(share float64, window time.Duration) *detector {
	if share <= 0 || window <= 0 {
		return nil
	}
	d := &detector{share: min(share, 1), window: int64(window)}
	d.slots.Store(new([]*slot))
	return d
}

// add gives a new instance its slot.
func (d *detector) add() *slot {
	s := &slot{}
	d.mu.Lock()
	defer d.mu.Unlock()
	next := append(slices.Clone(*d.slots.Load()), s)
	d.slots.Store(&next)
	return s
}

// remove takes the slot of an instance that left out of the count.
func (d *detector) remove(s *slot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := slices.DeleteFunc(slices.Clone(*d.slots.Load()), func(o *slot) bool { return o == s })
	d.slots.Store(&next)
}

// failed records a failure of s's instance at time at and reports whether
// it is correlated with the failures of the others. Instances whose breaker
// is open are out of the count: they take no calls, so they cannot fail
// with the others, and an instance ejected for its own fault must not keep
// a later fault of all the rest from being seen as shared.
func (d *detector) failed(s *slot, k kind, at int64) bool {
	s.last.Store(uint64(at)<<kindBits | uint64(k))
	slots := *d.slots.Load()
	live, same := 0, 0
	for _, o := range slots {
		if o.open.Load() && o != s {
			continue
		}
		live++
		v := o.last.Load()
		if v != 0 && kind(v&(1<<kindBits-1)) == k && at-int64(v>>kindBits) <= d.window {
			same++
		}
	}
	return same >= max(2, int(math.Ceil(d.share*float64(live))))
}

// kind sorts failures for the correlation rule: failures are correlated
// only when they fail the same way.
type kind uint64

const (
	kindTimeout kind = iota + 1
	kindNoResponders
	kindRemote // the instance answered with an error status
	kindOther
	kindBits = 3
)

func kindOf(err error) kind {
	if k, ok := transportKind(err); ok {
		return k // HTTP and gRPC clients' failures (transport.go)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return kindTimeout
	case errors.Is(err, nats.ErrNoResponders):
		return kindNoResponders
	}
	// natsrpc's *Error, found without importing the transport.
	var remote interface{ BusinessError() bool }
	if errors.As(err, &remote) {
		return kindRemote
	}
	return kindOther
}

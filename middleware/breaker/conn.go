package breaker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// clockBase starts this package's monotonic clock.
var clockBase = time.Now()

// now is the time in nanoseconds since the package started; never 0, so 0
// can mean "never".
func now() int64 { return int64(time.Since(clockBase)) + 1 }

// transportEpoch counts the status changes of every watched connection. An
// attempt reads it when it starts (one atomic load, the only cost the
// connection rule adds to a call that succeeds); a watcher stores the value
// of its connection's last change, so "did my connection change status
// while the attempt ran" is a comparison of two numbers. One counter for
// all connections keeps the attempt from having to know which connection it
// uses.
var transportEpoch atomic.Uint64

// watchers holds one watcher per watched connection, shared by every
// breaker that watches it; a watcher leaves when its connection closes.
var watchers sync.Map // *nats.Conn -> *connWatch

// statusPoll is how often a watcher reads the connection's status besides
// listening to its events: nats.go drops events when a listener's buffer is
// full, and a watcher that missed a reconnection must not excuse failures
// forever.
const statusPoll = time.Second

// connWatch follows one connection's status for the breakers that use it.
type connWatch struct {
	nc          *nats.Conn
	changed     atomic.Uint64 // transportEpoch after the connection's last status change
	connectedAt atomic.Int64  // now() when the connection last came back; 0 if it never left
	up          bool          // the status last observed; owned by the watching goroutine
}

// watch returns the watcher of nc, starting it if needed.
func watch(nc *nats.Conn) *connWatch {
	if w, ok := watchers.Load(nc); ok {
		return w.(*connWatch)
	}
	w := &connWatch{nc: nc, up: true}
	if actual, loaded := watchers.LoadOrStore(nc, w); loaded {
		return actual.(*connWatch)
	}
	// Listen before reading the status, so no change falls in between.
	ch := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	s := nc.Status()
	w.observe(s)
	if s == nats.CLOSED {
		w.stop(ch)
		return w
	}
	go w.run(ch)
	return w
}

// run follows the connection until it closes. A connection that is never
// closed keeps its watcher, one goroutine, for as long as it lives.
func (w *connWatch) run(ch chan nats.Status) {
	t := time.NewTicker(statusPoll)
	defer t.Stop()
	for {
		var s nats.Status
		select {
		case s = <-ch:
		case <-t.C:
			s = w.nc.Status()
		}
		w.observe(s)
		if s == nats.CLOSED {
			w.stop(ch)
			return
		}
	}
}

func (w *connWatch) stop(ch chan nats.Status) {
	w.nc.RemoveStatusListener(ch)
	watchers.CompareAndDelete(w.nc, w)
}

// observe records a status. Leaving CONNECTED and coming back are both
// changes: an attempt that spans either one may have lost its request or
// its reply to the transport.
func (w *connWatch) observe(s nats.Status) {
	up := s == nats.CONNECTED
	if up == w.up {
		return
	}
	w.up = up
	if up {
		w.connectedAt.Store(now())
	}
	w.changed.Store(transportEpoch.Add(1))
}

// excuses reports whether a failure of an attempt that started at epoch
// (when known) is the transport's: the connection is not connected now, it
// changed status since the attempt started, or it came back less than grace
// ago.
func (w *connWatch) excuses(epoch uint64, known bool, grace time.Duration, at int64) bool {
	if w.nc.Status() != nats.CONNECTED {
		return true
	}
	if known && w.changed.Load() > epoch {
		return true
	}
	back := w.connectedAt.Load()
	return back != 0 && at-back < int64(grace)
}

// isTransportError reports whether err by itself proves a fault of the
// caller's NATS connection rather than of the instance called: the
// connection closed, disconnected, reconnecting, draining or stale, its
// reconnect buffer full, no server to connect to. natsrpc's ErrConnClosed
// matches, since it wraps nats.ErrConnectionClosed. Breakers built by New
// and Factory never count such errors, with or without WithConn.
func isTransportError(err error) bool {
	for _, target := range transportErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

var transportErrors = []error{
	nats.ErrConnectionClosed,
	nats.ErrDisconnected,
	nats.ErrConnectionReconnecting,
	nats.ErrConnectionDraining,
	nats.ErrStaleConnection,
	nats.ErrReconnectBufExceeded,
	nats.ErrNoServers,
}

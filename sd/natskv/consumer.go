package natskv

import (
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A watcher is the one watch of a process on a bucket: every Instancer that
// watches a service of the bucket through the same JetStream context, with
// the same layout and watch heartbeat, is a view over it. It keeps one
// consumer on the bucket's stream, filtered by the subjects of the services
// it follows (LayoutAegis: the whole bucket), one book per service (each
// record decoded once), one clock for staleness, and one recovery for all.
//
// A service it does not follow yet is loaded with a direct get of the last
// record of each of its keys (one request; a consumer scan when the bucket
// does not allow direct gets or the service has more keys than a direct get
// returns), while the consumer's filter is updated to include it; the views
// of the service are ready when the get returns. The records the consumer
// delivers are applied above the get's sequence; if the update took effect
// past that sequence, the service is fetched again up to it, so nothing
// written between the two is lost. When the last view of a service stops,
// the filter drops it; when the last view stops, the consumer is deleted.
//
// Locks: watchers.mu, then watcher.mu, then a subscriber's. A watcher's lock
// guards its follows, their books, every view's state and subscribers.

// watcherKey is what views must share to share a watch.
type watcherKey struct {
	conn   any // the JetStream context, or the Bucket when that is not comparable
	bucket string
	layout Layout
	hb     time.Duration
	strict bool // WithStrictRecords: a book decodes one way
}

var watchers = struct {
	sync.Mutex
	m map[watcherKey]*watcher
}{m: map[watcherKey]*watcher{}}

// follow is one service a watcher follows.
type follow struct {
	service string
	book    *book
	views   []*Instancer
	// fetch is the direct get (or scan) in flight that loads the book;
	// meanwhile the consumer's records of the service wait in buf.
	fetch *fetchOp
	buf   []record
	// The consumer's records at or below floor are in the book already.
	floor      uint64
	floorKnown bool // the full set said what sequence it was read at
	// needFrom: an update of the consumer's filter that added the service
	// said the consumer delivers its records above this sequence; a full
	// set read below it is read again.
	needFrom uint64
	// staleAt: nothing of the service can go stale before it (zero: judge
	// at the next tick). Live writes only make entries younger, so it
	// stays a safe bound until a full set or a new view comes.
	staleAt time.Time
}

type watcher struct {
	key    watcherKey
	b      *Bucket
	layout Layout
	hb     time.Duration
	prefix string // "$KV.<bucket>."
	api    string // the JetStream API prefix
	logger log.Logger
	refs   int // views, under watchers' lock

	stop    func() // cancels the loops
	done    chan struct{}
	wg      sync.WaitGroup
	kick    chan struct{}   // follows changed: reconcile the consumer's filter
	refresh chan chan error // Refresh: rebuild the consumer

	inbox string // "<inbox>." + a token is the reply subject of a fetch
	isub  *nats.Subscription

	mu        sync.Mutex
	follows   map[string]*follow
	cur       *session // the consumer whose records count
	fetches   map[string]*fetchOp
	nextFetch uint64
	retryWait time.Duration // the shortest any view asked for
	tickEvery time.Duration // the staleness clock's period
	scanWait  time.Duration
}

// acquireWatcher returns the watcher i's settings share, starting it if
// need be, and counts i as one of its views.
func acquireWatcher(b *Bucket, o *instancerOptions, logger log.Logger) *watcher {
	var conn any = b
	if t := reflect.TypeOf(b.js); t != nil && t.Comparable() {
		conn = b.js
	}
	k := watcherKey{conn: conn, bucket: b.Name(), layout: o.layout, hb: o.watchHeartbeat, strict: *o.strict}
	watchers.Lock()
	defer watchers.Unlock()
	w := watchers.m[k]
	if w == nil {
		w = newWatcher(k, b, o, logger)
		watchers.m[k] = w
	}
	w.refs++
	return w
}

// release drops a view; the last one stops the watcher and waits for it.
func (w *watcher) release() {
	watchers.Lock()
	w.refs--
	last := w.refs == 0
	if last {
		delete(watchers.m, w.key)
	}
	watchers.Unlock()
	if last {
		w.stop()
		w.wg.Wait()
		if w.isub != nil {
			_ = w.isub.Unsubscribe()
		}
	}
}

func newWatcher(k watcherKey, b *Bucket, o *instancerOptions, logger log.Logger) *watcher {
	w := &watcher{
		key:       k,
		b:         b,
		layout:    o.layout,
		hb:        o.watchHeartbeat,
		prefix:    "$KV." + b.Name() + ".",
		api:       apiPrefix(b.js),
		logger:    log.With(logger, "component", "natskv.watch", "bucket", b.Name()),
		done:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		refresh:   make(chan chan error),
		follows:   map[string]*follow{},
		fetches:   map[string]*fetchOp{},
		retryWait: o.retryWait,
		tickEvery: time.Second,
		scanWait:  max(4*o.watchHeartbeat, 5*time.Second),
	}
	var once sync.Once
	w.stop = func() { once.Do(func() { close(w.done) }) }
	if nc := b.js.Conn(); nc != nil && b.direct {
		w.inbox = nc.NewInbox()
		if sub, err := nc.Subscribe(w.inbox+".*", w.onReply); err == nil {
			w.isub = sub
		} else {
			w.inbox = ""
		}
	}
	w.wg.Add(2)
	go w.watchLoop()
	go w.staleLoop()
	return w
}

// signal asks the watch loop to reconcile the consumer's filter.
func (w *watcher) signal() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// join makes i a view of its service, following the service if no view
// did, and publishes the set at once when the service is loaded.
func (w *watcher) join(i *Instancer) {
	now := time.Now()
	w.mu.Lock()
	w.retryWait = min(w.retryWait, i.opts.retryWait)
	if sa := i.opts.staleAfter; sa > 0 {
		w.tickEvery = min(w.tickEvery, max(sa/4, 10*time.Millisecond))
	}
	f := w.follows[i.service]
	created := f == nil
	if created {
		f = &follow{service: i.service, book: newBook(i.service, w.layout, w.key.strict)}
		w.follows[i.service] = f
	}
	i.setState(newView(f.book, i.stateConfig()))
	f.views = append(f.views, i)
	f.staleAt = time.Time{}
	batch := w.add(nil, i, i.st.joined(now), nil)
	if created && w.cur != nil && w.cur.init {
		w.startFetch(f)
	}
	w.mu.Unlock()
	if created {
		w.signal()
	}
	deliver(&w.mu, batch)
}

// leave removes a stopped view; the last view of a service stops following
// it. The caller holds w.mu.
func (w *watcher) leaveLocked(i *Instancer) {
	f := w.follows[i.service]
	if f == nil {
		return
	}
	f.views = slices.DeleteFunc(f.views, func(v *Instancer) bool { return v == i })
	if len(f.views) > 0 {
		return
	}
	delete(w.follows, i.service)
	if f.fetch != nil {
		w.dropFetch(f.fetch)
		f.fetch = nil
	}
	w.signal()
}

// viewUpdate is what an operation did to one view, delivered outside the
// watcher's lock.
type viewUpdate struct {
	v      *Instancer
	u      update
	logErr error
}

// add queues a view's update for delivery. The caller holds w.mu.
func (w *watcher) add(batch []viewUpdate, v *Instancer, u update, logErr error) []viewUpdate {
	return v.queue(batch, u, logErr)
}

// queue queues the Instancer's update for delivery, and marks it ready when
// it first has a set. The caller holds i.mu.
func (i *Instancer) queue(batch []viewUpdate, u update, logErr error) []viewUpdate {
	if !i.isReady && i.st.hasSet() {
		i.isReady = true
		close(i.ready)
	}
	if i.stopped || (len(u.changes) == 0 && !u.publish && logErr == nil && u.guard == nil) {
		return batch
	}
	i.cb.Add(1)
	return append(batch, viewUpdate{v: i, u: u, logErr: logErr})
}

// deliver tells each view's changes (outside the lock: WithChangeFunc may
// take its time), then offers the views' latest events to their
// subscribers under mu. When two deliveries race, every subscriber still
// gets the newest event last.
func deliver(mu *sync.Mutex, batch []viewUpdate) {
	if len(batch) == 0 {
		return
	}
	for _, vu := range batch {
		if vu.logErr != nil {
			vu.v.logger.Log("err", vu.logErr)
		}
		vu.v.recordGuard(vu.u.guard)
		vu.v.recordChanges(vu.u.changes)
	}
	mu.Lock()
	for _, vu := range batch {
		if vu.u.publish {
			vu.v.offerLocked()
		}
	}
	mu.Unlock()
	for _, vu := range batch {
		vu.v.cb.Done()
	}
}

// live applies one record the consumer delivered after its initial values.
// The caller holds w.mu.
func (w *watcher) live(batch []viewUpdate, f *follow, r record) []viewUpdate {
	switch {
	case f.fetch != nil:
		f.buf = append(f.buf, r) // applied once the full set is in
		return batch
	case !f.book.loaded || r.rev <= f.floor:
		return batch
	}
	c, ok := f.book.apply(r)
	if !ok {
		return batch
	}
	for _, v := range f.views {
		batch = w.add(batch, v, v.st.changed([]Change{c}), nil)
		// A new entry may go stale before anything the clock knew of.
		if sa := v.opts.staleAfter; sa > 0 && !f.staleAt.IsZero() && (c.Kind == ChangeAdded || c.Kind == ChangeUpdated) {
			if at := r.seen.Add(sa); at.Before(f.staleAt) {
				f.staleAt = at
			}
		}
	}
	return batch
}

// loaded makes a fetched full set the book of its service, applies the
// consumer's records that waited for it, and re-publishes every view. The
// caller holds w.mu.
func (w *watcher) loaded(batch []viewUpdate, op *fetchOp, l *load, upTo uint64, known bool, now time.Time) []viewUpdate {
	f := op.f
	if f.fetch != op || w.follows[f.service] != f || w.cur != op.sess {
		return batch // stale: the service was dropped, or the consumer rebuilt
	}
	f.fetch = nil
	f.staleAt = time.Time{}
	cs := f.book.replace(l, now)
	f.floor, f.floorKnown = max(upTo, l.maxRev), known
	for _, r := range f.buf {
		if r.rev <= f.floor {
			continue
		}
		if c, ok := f.book.apply(r); ok {
			cs = append(cs, c)
		}
	}
	f.buf = nil
	for _, v := range f.views {
		batch = w.add(batch, v, v.st.reloaded(cs, now), nil)
	}
	w.checkFloor(f)
	return batch
}

// checkFloor fetches a service again when its full set was read below the
// sequence the consumer's filter took it from. The caller holds w.mu.
func (w *watcher) checkFloor(f *follow) {
	if f.fetch == nil && f.book.loaded && f.needFrom > 0 && (!f.floorKnown || f.floor < f.needFrom) {
		w.startFetch(f)
	}
}

// failWith tells every view that the watch is lost: once per outage, with
// the last set kept.
func (w *watcher) failWith(err error) {
	w.mu.Lock()
	var batch []viewUpdate
	for _, f := range w.follows {
		f.book.lose(err)
		f.buf = nil
		for _, v := range f.views {
			batch = w.add(batch, v, v.st.failed(err), err)
		}
	}
	w.mu.Unlock()
	deliver(&w.mu, batch)
}

// staleLoop is the one clock of every view's staleness.
func (w *watcher) staleLoop() {
	defer w.wg.Done()
	w.mu.Lock()
	every := w.tickEvery
	w.mu.Unlock()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case now := <-t.C:
			var batch []viewUpdate
			w.mu.Lock()
			for _, f := range w.follows {
				if !f.book.live || now.Before(f.staleAt) {
					continue
				}
				next := now.Add(time.Hour)
				for _, v := range f.views {
					if sa := v.opts.staleAfter; sa > 0 {
						batch = w.add(batch, v, v.st.tick(now), nil)
						if v.st.guarded() {
							// Held entries are past their time: judge
							// them again next tick.
							next = now.Add(w.tickEvery)
						}
						for _, e := range f.book.entries {
							if at := e.seen.Add(sa); at.After(now) && at.Before(next) {
								next = at
							}
						}
					}
				}
				f.staleAt = next
			}
			every = w.tickEvery
			w.mu.Unlock()
			deliver(&w.mu, batch)
			t.Reset(every)
		}
	}
}

// wholeAbove is how many services a watch filters by name at most; past
// it the consumer takes the whole registry and the client keeps what it
// follows. The server checks a consumer's filters pairwise on every update,
// so many filters cost it more than the records of the services not
// followed cost us (about 2 ms of server time per update at 64 filters,
// 200 ms at 1,000). It goes back to names at half as many.
const wholeAbove = 64

// wantWhole says whether a consumer covering n services should take the
// whole registry, given whether it does now.
func wantWhole(now bool, n int) bool {
	if now {
		return n > wholeAbove/2
	}
	return n > wholeAbove
}

// filters is the consumer's filter for services, or for the whole registry.
func (w *watcher) filters(services []string, whole bool) []string {
	switch {
	case w.layout == LayoutAegis:
		return []string{w.prefix + ">"} // keys are one token: no filter but the bucket
	case whole:
		return []string{w.prefix + keyPrefix + ".>"}
	}
	out := make([]string, len(services))
	for n, s := range services {
		out[n] = w.prefix + w.layout.watchFilter(s)
	}
	return out
}

// followed is the services followed, sorted. The caller holds w.mu.
func (w *watcher) followed() []string {
	out := make([]string, 0, len(w.follows))
	for s := range w.follows {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		if !strings.HasSuffix(o.APIPrefix, ".") {
			return o.APIPrefix + "."
		}
		return o.APIPrefix
	}
	return jetstream.DefaultAPIPrefix
}

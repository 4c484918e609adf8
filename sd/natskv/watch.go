package natskv

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/registry"
)

// This file is the shared watch's views: which services it follows, the
// Instancers over each, and how updates reach them. consumer.go keeps its
// JetStream consumer alive; fetch.go loads a service it starts to follow.
//
// A watcher is the one watch of a Bucket: every Instancer made from the
// Bucket with the same layout, strictness and watch heartbeat is a view
// over it. It keeps one consumer on the bucket's stream, filtered by the
// subjects of the services it follows (LayoutAegis: the whole bucket), one
// book per service (each record decoded once), one clock for staleness,
// and one recovery for all.
//
// Locks: Bucket.watchMu, then watcher.mu, then a subscriber's. A watcher's
// lock guards its follows, every view's state and subscribers. No record
// is decoded under it: a feed decodes a record (Book.Decode) before it
// takes the lock, so a hostile record costs its own feed the time to read
// it, and no Instancer, of its service or another, waits on it.

// watchKey is what views must share to share a watch.
type watchKey struct {
	layout Layout
	hb     time.Duration
	strict bool // WithStrictRecords: a book decodes one way
}

// follow is one service a watcher follows.
type follow struct {
	service string
	book    *registry.Book
	views   []*Instancer
	// fetch is the direct get (or scan) in flight that loads the book;
	// meanwhile the consumer's records of the service wait in buf.
	fetch *fetchOp
	buf   []registry.Msg
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
	key    watchKey
	b      *Bucket
	layout registry.Layout
	hb     time.Duration
	prefix string // "$KV.<bucket>."
	api    string // the JetStream API prefix
	logger log.Logger
	refs   int // views, under the bucket's watchMu

	stop    func() // cancels the loops
	done    chan struct{}
	wg      sync.WaitGroup
	kick    chan struct{}   // follows changed: reconcile the consumer's filter
	refresh chan chan error // Refresh: rebuild the consumer

	inbox string // "<inbox>." + a token is the reply subject of a fetch
	isub  *nats.Subscription

	// books: the followed services' books, read without the lock by the
	// feeds that decode records for them (written under mu).
	books sync.Map // service → *registry.Book

	mu        sync.Mutex
	follows   map[string]*follow
	cur       *session // the consumer whose records count
	fetches   map[string]*fetchOp
	nextFetch uint64
	retryWait time.Duration // the shortest any view asked for
	tickEvery time.Duration // the staleness clock's period
	scanWait  time.Duration

	// decodeHook, when set (tests), runs before each record is decoded.
	decodeHook func(key string)
}

// acquireWatcher returns the watch of b that o's settings share, starting
// it if need be, and counts one more view of it.
func acquireWatcher(b *Bucket, o *instancerOptions, logger log.Logger) *watcher {
	k := watchKey{layout: o.layout, hb: o.watchHeartbeat, strict: *o.strict}
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	w := b.watches[k]
	if w == nil {
		if b.watches == nil {
			b.watches = map[watchKey]*watcher{}
		}
		w = newWatcher(k, b, o, logger)
		b.watches[k] = w
	}
	w.refs++
	return w
}

// release drops a view; the last one stops the watcher and waits for it.
func (w *watcher) release() {
	b := w.b
	b.watchMu.Lock()
	w.refs--
	last := w.refs == 0
	if last {
		delete(b.watches, w.key)
	}
	b.watchMu.Unlock()
	if last {
		w.stop()
		w.wg.Wait()
		if w.isub != nil {
			_ = w.isub.Unsubscribe()
		}
	}
}

func newWatcher(k watchKey, b *Bucket, o *instancerOptions, logger log.Logger) *watcher {
	w := &watcher{
		key:        k,
		b:          b,
		layout:     o.layout.reg(),
		hb:         o.watchHeartbeat,
		prefix:     "$KV." + b.Name() + ".",
		api:        apiPrefix(b.js),
		logger:     log.With(logger, "component", "natskv.watch", "bucket", b.Name()),
		done:       make(chan struct{}),
		kick:       make(chan struct{}, 1),
		refresh:    make(chan chan error),
		follows:    map[string]*follow{},
		fetches:    map[string]*fetchOp{},
		retryWait:  o.retryWait,
		tickEvery:  time.Second,
		scanWait:   max(4*o.watchHeartbeat, 5*time.Second),
		decodeHook: b.decodeHook,
	}
	var once sync.Once
	w.stop = func() {
		w.mu.Lock() // goLocked adds to wg under it: none after this
		once.Do(func() { close(w.done) })
		w.mu.Unlock()
	}
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

// decode reads m's record for the book of its service, if the watcher
// follows it, before the caller takes the lock. A record of a service
// followed meanwhile is decoded when it is folded.
func (w *watcher) decode(m *registry.Msg) {
	svc, ok := w.layout.ServiceOf(m.Key)
	if !ok {
		return
	}
	if b, ok := w.books.Load(svc); ok {
		w.decodeFor(b.(*registry.Book), m)
	}
}

// decodeFor decodes m for book b, outside the lock.
func (w *watcher) decodeFor(b *registry.Book, m *registry.Msg) {
	if w.decodeHook != nil {
		w.decodeHook(m.Key)
	}
	b.Decode(m)
}

// goLocked runs f on a goroutine the watcher waits for, unless it is
// stopping. The caller holds w.mu.
func (w *watcher) goLocked(f func()) {
	select {
	case <-w.done:
		return
	default:
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
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
		w.tickEvery = min(w.tickEvery, registry.TickEvery(sa))
	}
	f := w.follows[i.service]
	created := f == nil
	if created {
		f = &follow{service: i.service, book: registry.NewBook(i.service, w.layout, w.key.strict)}
		w.follows[i.service] = f
		w.books.Store(i.service, f.book)
	}
	i.setState(registry.NewView(f.book, i.stateConfig()))
	f.views = append(f.views, i)
	f.staleAt = time.Time{}
	batch := i.queue(nil, i.st.Joined(now), nil)
	if created && w.cur != nil && w.cur.init {
		w.startFetch(f)
	}
	w.mu.Unlock()
	if created {
		w.signal()
	}
	deliver(&w.mu, batch)
}

// leaveLocked removes a stopped view; the last view of a service stops
// following it. The caller holds w.mu.
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
	w.books.Delete(i.service)
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
	u      registry.Update
	logErr error
}

// queue queues the Instancer's update for delivery, and marks it ready when
// it first has a set. The caller holds i.mu.
func (i *Instancer) queue(batch []viewUpdate, u registry.Update, logErr error) []viewUpdate {
	if !i.isReady && i.st.HasSet() {
		i.isReady = true
		close(i.ready)
	}
	if i.stopped || (len(u.Changes) == 0 && !u.Publish && logErr == nil && u.Guard == nil) {
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
		vu.v.recordGuard(vu.u.Guard)
		vu.v.recordChanges(vu.u.Changes)
	}
	mu.Lock()
	for _, vu := range batch {
		if vu.u.Publish {
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
func (w *watcher) live(batch []viewUpdate, f *follow, m registry.Msg) []viewUpdate {
	switch {
	case f.fetch != nil:
		f.buf = append(f.buf, m) // applied once the full set is in
		return batch
	case !f.book.Loaded() || m.Rev <= f.floor:
		return batch
	}
	c, ok := f.book.Apply(m)
	if !ok {
		return batch
	}
	for _, v := range f.views {
		batch = v.queue(batch, v.st.Changed([]registry.Change{c}), nil)
		// A new entry may go stale before anything the clock knew of.
		if sa := v.opts.staleAfter; sa > 0 && !f.staleAt.IsZero() && (c.Kind == registry.ChangeAdded || c.Kind == registry.ChangeUpdated) {
			if at := m.Seen.Add(sa); at.Before(f.staleAt) {
				f.staleAt = at
			}
		}
	}
	return batch
}

// loaded makes a fetched full set the book of its service, applies the
// consumer's records that waited for it, and re-publishes every view. The
// caller holds w.mu.
func (w *watcher) loaded(batch []viewUpdate, op *fetchOp, l *registry.Load, upTo uint64, known bool, now time.Time) []viewUpdate {
	f := op.f
	if f.fetch != op || w.follows[f.service] != f || w.cur != op.sess {
		return batch // stale: the service was dropped, or the consumer rebuilt
	}
	f.fetch = nil
	f.staleAt = time.Time{}
	cs := f.book.Replace(l, now)
	f.floor, f.floorKnown = max(upTo, l.MaxRev()), known
	for _, m := range f.buf {
		if m.Rev <= f.floor {
			continue
		}
		if c, ok := f.book.Apply(m); ok {
			cs = append(cs, c)
		}
	}
	f.buf = nil
	for _, v := range f.views {
		batch = v.queue(batch, v.st.Reloaded(cs, now), nil)
	}
	w.checkFloor(f)
	return batch
}

// checkFloor fetches a service again when its full set was read below the
// sequence the consumer's filter took it from. The caller holds w.mu.
func (w *watcher) checkFloor(f *follow) {
	if f.fetch == nil && f.book.Loaded() && f.needFrom > 0 && (!f.floorKnown || f.floor < f.needFrom) {
		w.startFetch(f)
	}
}

// failWith tells every view that the watch is lost: once per outage, with
// the last set kept.
func (w *watcher) failWith(err error) {
	w.mu.Lock()
	var batch []viewUpdate
	for _, f := range w.follows {
		f.book.Lose(err)
		f.buf = nil
		for _, v := range f.views {
			batch = v.queue(batch, v.st.Failed(err), err)
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
				if !f.book.Live() || now.Before(f.staleAt) {
					continue
				}
				next := now.Add(time.Hour)
				for _, v := range f.views {
					if sa := v.opts.staleAfter; sa > 0 {
						batch = v.queue(batch, v.st.Tick(now), nil)
						if v.st.Guarded() {
							// Held entries are past their time: judge
							// them again next tick.
							next = now.Add(w.tickEvery)
						}
						next = f.book.NextStale(now, next, sa)
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

// followed is the services followed, sorted. The caller holds w.mu.
func (w *watcher) followed() []string {
	out := make([]string, 0, len(w.follows))
	for s := range w.follows {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
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
	case w.layout == registry.LayoutAegis:
		return []string{w.prefix + ">"} // keys are one token: no filter but the bucket
	case whole:
		return []string{w.prefix + registry.KeyPrefix + ".>"}
	}
	out := make([]string, len(services))
	for n, s := range services {
		out[n] = w.prefix + w.layout.WatchFilter(s)
	}
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

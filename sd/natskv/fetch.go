package natskv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/internal/safetext"
)

// fetchTimeout bounds a direct get; past it the service is scanned with a
// consumer instead.
const fetchTimeout = 2 * time.Second

// fetchOp loads the full set of one service that a watcher starts to follow
// while its consumer runs: a batched direct get of the last record of each
// of the service's keys (nats-server ≥ 2.11), or, where that is refused, a
// scan with a short-lived consumer.
type fetchOp struct {
	f     *follow
	sess  *session
	token string
	msgs  []registry.Msg // the replies, by the reply goroutine only
	timer *time.Timer
	probe *natserr.Probe // the server refusing the get
}

// directRequest is the body of a batched direct get ("multi_last").
type directRequest struct {
	MultiLast []string `json:"multi_last"`
}

// startFetch loads f's full set; meanwhile the consumer's records of f wait.
// The caller holds w.mu.
func (w *watcher) startFetch(f *follow) {
	op := &fetchOp{f: f, sess: w.cur}
	f.fetch = op
	if w.inbox == "" {
		w.scanLater(op)
		return
	}
	w.nextFetch++
	op.token = strconv.FormatUint(w.nextFetch, 36)
	w.fetches[op.token] = op
	body, _ := json.Marshal(directRequest{MultiLast: w.filters([]string{f.service}, false)})
	op.probe = natserr.NewProbe(w.b.js.Conn())
	err := w.b.js.Conn().PublishMsg(&nats.Msg{
		Subject: w.api + "DIRECT.GET." + w.b.stream(),
		Reply:   w.inbox + "." + op.token,
		Data:    body,
	})
	if err != nil {
		delete(w.fetches, op.token)
		w.scanLater(op)
		return
	}
	op.timer = time.AfterFunc(fetchTimeout, func() { w.directFailed(op, errors.New("direct get timed out")) })
}

// dropFetch forgets a fetch in flight. The caller holds w.mu.
func (w *watcher) dropFetch(op *fetchOp) {
	if op.token != "" {
		delete(w.fetches, op.token)
	}
	if op.timer != nil {
		op.timer.Stop()
	}
}

// clearFetches forgets every fetch in flight: a new consumer loads every
// service followed. The caller holds w.mu.
func (w *watcher) clearFetches() {
	for _, op := range w.fetches {
		w.dropFetch(op)
	}
	for _, f := range w.follows {
		f.fetch = nil
	}
}

// onReply handles one reply of a direct get: a record, kept as it came,
// or the end. The replies of every fetch arrive on one goroutine, so the
// records are decoded on a goroutine of the fetch's own: a service's
// records never hold up another's load.
func (w *watcher) onReply(m *nats.Msg) {
	token := m.Subject[len(w.inbox)+1:]
	w.mu.Lock()
	op := w.fetches[token]
	w.mu.Unlock()
	if op == nil {
		return
	}
	r, end, upTo, err := parseDirect(w.prefix, m)
	switch {
	case err != nil:
		w.directFailed(op, err)
	case !end:
		op.msgs = append(op.msgs, r)
	default:
		msgs := op.msgs
		op.msgs = nil
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.fetches[token] != op {
			return
		}
		if op.timer != nil {
			op.timer.Stop() // the get answered: no fallback, however long the decoding takes
		}
		w.goLocked(func() {
			l := op.f.book.NewLoad()
			for i := range msgs {
				w.decodeFor(op.f.book, &msgs[i])
				l.Add(msgs[i])
			}
			now := time.Now()
			w.mu.Lock()
			var batch []viewUpdate
			if w.fetches[token] == op {
				w.dropFetch(op)
				batch = w.loaded(batch, op, l, upTo, upTo > 0, now)
			}
			w.mu.Unlock()
			deliver(&w.mu, batch)
		})
	}
}

// directFailed falls back to a scan when a direct get is refused (a bucket
// without direct gets, more keys than one returns) or times out.
func (w *watcher) directFailed(op *fetchOp, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fetches[op.token] != op {
		return
	}
	w.dropFetch(op)
	if op.f.fetch == op {
		if pe := op.probe.Check(w.api + "DIRECT.GET." + w.b.stream()); pe != nil {
			err = pe
		}
		w.logger.Log("service", op.f.service, "direct", err, "then", "scan")
		w.scanLater(op)
	}
}

// scanLater scans for op on a goroutine of its own. The caller holds w.mu.
func (w *watcher) scanLater(op *fetchOp) {
	w.goLocked(func() {
		l := op.f.book.NewLoad()
		upTo, err := w.scan(op.f, l)
		now := time.Now()
		w.mu.Lock()
		var batch []viewUpdate
		if op.f.fetch == op && w.cur == op.sess {
			if err != nil {
				op.sess.fail(fmt.Errorf("load %s: %w", op.f.service, err))
			} else {
				batch = w.loaded(batch, op, l, upTo, true, now)
			}
		}
		w.mu.Unlock()
		deliver(&w.mu, batch)
	})
}

// scan reads the service's full set through a consumer of its own, as of at
// least the stream's last sequence before it started, which it returns.
func (w *watcher) scan(f *follow, l *registry.Load) (uint64, error) {
	service := f.service
	ctx, cancel := w.request(w.scanWait)
	defer cancel()
	st, err := w.b.js.Stream(ctx, w.b.stream())
	if err != nil {
		return 0, err
	}
	upTo := st.CachedInfo().State.LastSeq
	cons, err := w.b.js.CreateConsumer(ctx, w.b.stream(), jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects:    w.filters([]string{service}, false),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		_ = w.b.js.DeleteConsumer(dctx, w.b.stream(), cons.CachedInfo().Name)
	}()
	if cons.CachedInfo().NumPending == 0 {
		return upTo, nil
	}
	done := make(chan error, 1)
	var last uint64
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		meta, err := msg.Metadata()
		if err != nil {
			select {
			case done <- err:
			default:
			}
			return
		}
		if meta.Sequence.Consumer != last+1 {
			select {
			case done <- fmt.Errorf("delivery gap: consumer sequence %d after %d", meta.Sequence.Consumer, last):
			default:
			}
			return
		}
		last = meta.Sequence.Consumer
		r := registry.Msg{Key: strings.TrimPrefix(msg.Subject(), w.prefix), Op: registry.OpOf(msg.Headers()), Data: msg.Data(),
			Rev: meta.Sequence.Stream, Seen: meta.Timestamp}
		w.decodeFor(f.book, &r)
		l.Add(r)
		if meta.NumPending == 0 {
			select {
			case done <- nil:
			default:
			}
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		select {
		case done <- err:
		default:
		}
	}))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	select {
	case err := <-done:
		return max(upTo, l.MaxRev()), err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// parseDirect reads one reply of a batched direct get: a record (its
// subject less prefix is the key), or the end of the batch (end), with the
// sequence the batch was read at (0 when the reply does not say: a service
// with no keys). A reply that is neither is an error.
// Every header is the server's, but quoted at most safetext.MaxQuote bytes
// in an error all the same, and a time stamp longer than one can be is not
// parsed.
func parseDirect(prefix string, m *nats.Msg) (r registry.Msg, end bool, upTo uint64, err error) {
	switch status := m.Header.Get("Status"); status {
	case "":
	case "204": // end of batch
		if s := m.Header.Get("Nats-UpTo-Sequence"); s != "" {
			if upTo, err = strconv.ParseUint(s, 10, 64); err != nil {
				return registry.Msg{}, false, 0, fmt.Errorf("direct get: bad up-to sequence %s", safetext.Quote(s))
			}
		}
		return registry.Msg{}, true, upTo, nil
	case "404": // no keys
		return registry.Msg{}, true, 0, nil
	default:
		return registry.Msg{}, false, 0, fmt.Errorf("direct get: %s %s", safetext.Quote(status), safetext.Quote(m.Header.Get("Description")))
	}
	subj := m.Header.Get("Nats-Subject")
	key, ok := strings.CutPrefix(subj, prefix)
	if !ok || key == "" {
		return registry.Msg{}, false, 0, fmt.Errorf("direct get: subject %s outside %s", safetext.Quote(subj), prefix)
	}
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil || seq == 0 {
		return registry.Msg{}, false, 0, fmt.Errorf("direct get: bad sequence %s", safetext.Quote(m.Header.Get("Nats-Sequence")))
	}
	stamp := m.Header.Get("Nats-Time-Stamp")
	if len(stamp) > 64 {
		return registry.Msg{}, false, 0, fmt.Errorf("direct get: bad time stamp %s", safetext.Quote(stamp))
	}
	ts, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return registry.Msg{}, false, 0, fmt.Errorf("direct get: bad time stamp %s", safetext.Quote(stamp))
	}
	return registry.Msg{Key: key, Op: registry.OpOf(m.Header), Data: m.Data, Rev: seq, Seen: ts}, false, 0, nil
}

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
	load  *load // filled by the reply goroutine only
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
	op := &fetchOp{f: f, sess: w.cur, load: f.book.newLoad()}
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

// onReply handles one reply of a direct get: a record, or the end.
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
		op.load.add(r)
	default:
		now := time.Now()
		w.mu.Lock()
		var batch []viewUpdate
		if w.fetches[token] == op {
			w.dropFetch(op)
			batch = w.loaded(batch, op, op.load, upTo, upTo > 0, now)
		}
		w.mu.Unlock()
		deliver(&w.mu, batch)
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
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		l := op.f.book.newLoad()
		upTo, err := w.scan(op.f.service, l)
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
	}()
}

// scan reads the service's full set through a consumer of its own, as of at
// least the stream's last sequence before it started, which it returns.
func (w *watcher) scan(service string, l *load) (uint64, error) {
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
		l.add(record{key: strings.TrimPrefix(msg.Subject(), w.prefix), op: opOf(msg.Headers()), data: msg.Data(),
			rev: meta.Sequence.Stream, seen: meta.Timestamp})
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
		return max(upTo, l.maxRev), err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// parseDirect reads one reply of a batched direct get: a record (its
// subject less prefix is the key), or the end of the batch (end), with the
// sequence the batch was read at (0 when the reply does not say: a service
// with no keys). A reply that is neither is an error.
func parseDirect(prefix string, m *nats.Msg) (r record, end bool, upTo uint64, err error) {
	switch status := m.Header.Get("Status"); status {
	case "":
	case "204": // end of batch
		if s := m.Header.Get("Nats-UpTo-Sequence"); s != "" {
			if upTo, err = strconv.ParseUint(s, 10, 64); err != nil {
				return record{}, false, 0, fmt.Errorf("direct get: bad up-to sequence %q", s)
			}
		}
		return record{}, true, upTo, nil
	case "404": // no keys
		return record{}, true, 0, nil
	default:
		return record{}, false, 0, fmt.Errorf("direct get: %s %s", status, m.Header.Get("Description"))
	}
	subj := m.Header.Get("Nats-Subject")
	key, ok := strings.CutPrefix(subj, prefix)
	if !ok || key == "" {
		return record{}, false, 0, fmt.Errorf("direct get: subject %q outside %s", subj, prefix)
	}
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil || seq == 0 {
		return record{}, false, 0, fmt.Errorf("direct get: bad sequence %q", m.Header.Get("Nats-Sequence"))
	}
	ts, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
	if err != nil {
		return record{}, false, 0, fmt.Errorf("direct get: bad time stamp %q", m.Header.Get("Nats-Time-Stamp"))
	}
	return record{key: key, op: opOf(m.Header), data: m.Data, rev: seq, seen: ts}, false, 0, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// op is what a key's latest message is.
type op string

const (
	opPut     op = "put"
	opDelete  op = "delete"  // a clean Deregister (KV delete)
	opPurge   op = "purge"   // purged by an operator
	opExpired op = "expired" // an expiry marker: the TTL ran out on the server
)

// keyRecord is the latest message of one key of the bucket, as the server
// holds it.
type keyRecord struct {
	Key     string
	Op      op
	Data    []byte // nil for a value over registry.MaxRecordSize: clients skip it unread
	Size    int    // the value's size
	Seq     uint64
	Written time.Time     // the server's timestamp of the write
	TTL     time.Duration // the write's per-message TTL; 0: none
}

// opOf classifies a message as the registry's watchers do.
func opOf(m jetstream.Msg) op {
	switch registry.OpOf(m.Headers()) {
	case registry.ChangeDeleted:
		return opDelete
	case registry.ChangePurged:
		return opPurge
	case registry.ChangeExpired:
		return opExpired
	}
	return opPut
}

// maxScanBytes bounds the values a scan holds; --max-keys the keys.
const maxScanBytes = 64 << 20

// scanned is what a scan read: at most --max-keys keys (and maxScanBytes
// of values) of the Total the bucket has.
type scanned struct {
	Records []keyRecord
	Total   uint64
}

// cut says, when the scan stopped short of the bucket's keys, what it
// read; empty otherwise.
func (s scanned) cut() string {
	if uint64(len(s.Records)) >= s.Total {
		return ""
	}
	return fmt.Sprintf("read the first %d of the bucket's %d keys (--max-keys, and %d MiB of values at most): the rest is not shown", len(s.Records), s.Total, maxScanBytes>>20)
}

// scan reads the latest message of every key of the bucket in one pass: an
// ephemeral consumer delivering the last message per subject, deleted
// afterwards. Unlike a KV listing it keeps the headers, which hold each
// write's TTL and how removed keys went. It stops at maxKeys keys or
// maxScanBytes of values, and holds no value larger than a record can be.
func scan(ctx context.Context, s *session, timeout time.Duration, maxKeys int) (scanned, error) {
	stream := "KV_" + s.b.Name()
	prefix := "$KV." + s.b.Name() + "."
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
	defer cancel()
	cons, err := s.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubject:     prefix + ">",
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return scanned{}, fmt.Errorf("scan bucket %s: %w", s.b.Name(), err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, stream, name)
	}()
	pending := cons.CachedInfo().NumPending
	out := scanned{Total: pending}
	held := 0
	for pending > 0 && len(out.Records) < maxKeys && held < maxScanBytes {
		batch, err := cons.Fetch(int(min(pending, 1024, uint64(maxKeys-len(out.Records)))), jetstream.FetchContext(ctx))
		if err != nil {
			return scanned{}, fmt.Errorf("scan bucket %s: %w", s.b.Name(), err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return scanned{}, fmt.Errorf("scan bucket %s: %w", s.b.Name(), err)
			}
			r := keyRecord{Key: strings.TrimPrefix(m.Subject(), prefix), Op: opOf(m), Data: m.Data(), Size: len(m.Data()),
				Seq: meta.Sequence.Stream, Written: meta.Timestamp}
			if r.Size > registry.MaxRecordSize {
				r.Data = nil
			}
			r.TTL, _ = registry.MsgTTL(m.Headers())
			held += len(r.Data) + len(r.Key)
			out.Records = append(out.Records, r)
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return scanned{}, fmt.Errorf("scan bucket %s: %w", s.b.Name(), err)
		}
		if n == 0 {
			if ctx.Err() != nil {
				return scanned{}, fmt.Errorf("scan bucket %s: %w", s.b.Name(), ctx.Err())
			}
			return scanned{}, fmt.Errorf("scan bucket %s: %d keys announced, none delivered", s.b.Name(), pending)
		}
	}
	return out, nil
}

// decode reads a live record as a client of the layout does: one larger
// than a record may be is refused unread, as clients refuse it.
func decode(l natskv.Layout, r keyRecord) (registry.Instance, error) {
	if r.Data == nil && r.Size > registry.MaxRecordSize {
		return registry.Instance{}, fmt.Errorf("record too large: %d bytes, over the %d clients read", r.Size, registry.MaxRecordSize)
	}
	return registry.DecodeKey(registry.Layout(l), r.Key, r.Data)
}

// classified is a scanned record read in a layout.
type classified struct {
	keyRecord
	Service  string // from the key; empty when the key is not of the layout
	Instance string
	Record   registry.Instance
	Err      error // why clients skip it
}

// bucketView is the scanned bucket read in one layout.
type bucketView struct {
	Records []classified // live records (puts) of the layout, by key
	Removed []keyRecord  // keys whose latest message is a removal marker
	Foreign []keyRecord  // live records not of the layout
	Other   int          // how many of Foreign are of the other layout
}

func otherLayout(l natskv.Layout) natskv.Layout {
	if l == natskv.LayoutAegis {
		return natskv.LayoutDotted
	}
	return natskv.LayoutAegis
}

// classify reads each record as a client of the layout would.
func classify(recs []keyRecord, l natskv.Layout) bucketView {
	var v bucketView
	for _, r := range recs {
		if r.Op != opPut {
			v.Removed = append(v.Removed, r)
			continue
		}
		service, instance, ok := registry.Layout(l).Parse(r.Key)
		if !ok {
			v.Foreign = append(v.Foreign, r)
			if _, _, ok := registry.Layout(otherLayout(l)).Parse(r.Key); ok {
				v.Other++
			}
			continue
		}
		c := classified{keyRecord: r, Service: service, Instance: instance}
		c.Record, c.Err = decode(l, r)
		v.Records = append(v.Records, c)
	}
	return v
}

// layoutHint says, when the bucket's keys look like the other layout, which
// flag to pass. Empty when there is nothing to say.
func layoutHint(v bucketView, l natskv.Layout, service string) string {
	other := otherLayout(l)
	n := 0
	for _, r := range v.Foreign {
		if s, _, ok := registry.Layout(other).Parse(r.Key); ok && (service == "" || s == service) {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d key(s) are of the %s layout, which clients using --layout %s do not see: pass --layout %s", n, other, l, other)
}

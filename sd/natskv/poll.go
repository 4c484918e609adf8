package natskv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
)

// pollLoop is discovery WithPolling: the AegisSDK's cached listing, re-read
// every interval instead of watched. A polling Instancer has its own book,
// lock and goroutines.
func (i *Instancer) pollLoop() {
	defer i.wg.Done()
	i.relist()
	t := time.NewTicker(i.opts.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-i.ctx.Done():
			return
		case <-t.C:
			i.relist()
		case w := <-i.refresh:
			w <- i.relist()
		}
	}
}

// emit delivers one update of a polling Instancer.
func (i *Instancer) emit(u registry.Update, logErr error) {
	i.mu.Lock()
	batch := i.queue(nil, u, logErr)
	i.mu.Unlock()
	deliver(i.mu, batch)
}

// relist reads the service's current records and makes them the state. On
// failure the cached set stays and subscribers get the error.
func (i *Instancer) relist() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(i.ctx, min(max(i.opts.pollInterval, time.Second), 5*time.Second))
	defer cancel()
	i.mu.Lock()
	l := i.st.NewLoad()
	i.mu.Unlock()
	nc := i.b.js.Conn()
	api := apiPrefix(i.b.js)
	// nats.go's KV watch: a push consumer on an inbox, with flow control.
	refusals := []string{api + "CONSUMER.CREATE." + i.b.stream() + ".>", api + "CONSUMER.DELETE." + i.b.stream() + ".*",
		"$JS.FC." + i.b.stream() + ".>", natserr.InboxPattern(nc)}
	err := natserr.Do(ctx, nc, refusals, func(ctx context.Context) error {
		w, err := i.b.kv.WatchFiltered(ctx, []string{i.opts.layout.reg().WatchFilter(i.service)}, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e, ok := <-w.Updates():
				if !ok {
					return nats.ErrConnectionClosed
				}
				if e == nil {
					return nil
				}
				// The load reads only the book's service and layout, and
				// decodes the record: no lock.
				l.Add(registry.Msg{Key: e.Key(), Op: registry.ChangeUpdated, Data: e.Value(), Rev: e.Revision(), Seen: e.Created()})
			}
		}
	})
	i.m.listDur.Record(context.Background(), time.Since(start).Seconds(), i.m.set)
	if err != nil {
		if i.ctx.Err() != nil {
			return ErrStopped
		}
		err = fmt.Errorf("natskv: list %s: %w", i.service, err)
		i.mu.Lock()
		u := i.st.Lost(err)
		i.mu.Unlock()
		i.emit(u, err) // logged, and told to subscribers
		if pe := (*natserr.PermissionError)(nil); errors.As(err, &pe) {
			i.refused(pe)
		}
		return err
	}
	i.mu.Lock()
	u := i.st.Replace(l, start)
	i.mu.Unlock()
	i.emit(u, nil)
	return nil
}

// staleLoop is a polling Instancer's staleness clock.
func (i *Instancer) staleLoop() {
	defer i.wg.Done()
	if i.opts.staleAfter <= 0 {
		return
	}
	t := time.NewTicker(registry.TickEvery(i.opts.staleAfter))
	defer t.Stop()
	for {
		select {
		case <-i.ctx.Done():
			return
		case now := <-t.C:
			i.mu.Lock()
			u := i.st.Tick(now)
			i.mu.Unlock()
			i.emit(u, nil)
		}
	}
}

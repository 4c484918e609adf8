package natskv

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pollLoop is discovery WithPolling: the AegisSDK's cached listing, re-read
// every interval instead of watched.
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

// relist reads the service's current records and makes them the state. On
// failure the cached set stays and subscribers get the error.
func (i *Instancer) relist() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(i.ctx, min(max(i.opts.pollInterval, time.Second), 5*time.Second))
	defer cancel()
	i.mu.Lock()
	l := i.st.newLoad()
	i.mu.Unlock()
	err := func() error {
		w, err := i.b.kv.WatchFiltered(ctx, []string{i.opts.layout.watchFilter(i.service)}, jetstream.IgnoreDeletes())
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
				// The load reads only the state's settings: no lock.
				l.add(record{key: e.Key(), op: ChangeUpdated, data: e.Value(), rev: e.Revision(), seen: e.Created()})
			}
		}
	}()
	i.m.listDur.Record(context.Background(), time.Since(start).Seconds(), i.m.set)
	if err != nil {
		if i.ctx.Err() != nil {
			return ErrStopped
		}
		err = fmt.Errorf("natskv: list %s: %w", i.service, err)
		i.failWith(err)
		return err
	}
	i.mu.Lock()
	u := i.st.replace(l, start)
	i.mu.Unlock()
	i.emit(u)
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

// watchEvent is one line of `kitnats watch`.
type watchEvent struct {
	Time     time.Time `json:"time"`
	Event    string    `json:"event"` // added, updated, status, heartbeat, deleted, purged, expired, stale, skipped, watching, watch lost, watch resumed, disconnected, reconnected
	Service  string    `json:"service,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Key      string    `json:"key,omitempty"`
	Revision uint64    `json:"revision,omitempty"`
	Status   string    `json:"status,omitempty"`
	Version  string    `json:"version,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// printer writes events from any goroutine without blocking them: the
// Instancer's change func must not block, so lines go through a buffer to
// one writer goroutine, and are counted and dropped if the output cannot
// keep up.
type printer struct {
	w       io.Writer
	asJSON  bool
	mu      sync.Mutex
	closed  bool
	ch      chan watchEvent
	dropped atomic.Int64
	done    chan struct{}
}

func newPrinter(w io.Writer, asJSON bool) *printer {
	p := &printer{w: w, asJSON: asJSON, ch: make(chan watchEvent, 4096), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *printer) emit(e watchEvent) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	select {
	case p.ch <- e:
	default:
		p.dropped.Add(1)
	}
}

func (p *printer) run() {
	defer close(p.done)
	for e := range p.ch {
		if n := p.dropped.Swap(0); n > 0 {
			p.write(watchEvent{Time: time.Now(), Event: "dropped", Detail: fmt.Sprintf("%d event(s) not shown: the output could not keep up", n)})
		}
		p.write(e)
	}
}

func (p *printer) write(e watchEvent) {
	if p.asJSON {
		b, _ := json.Marshal(e)
		fmt.Fprintf(p.w, "%s\n", safeJSON(b))
		return
	}
	subject := e.Service
	if e.Instance != "" {
		subject += "/" + e.Instance
	}
	line := fmt.Sprintf("%s  %-13s", e.Time.Format(timeFormat), e.Event)
	if subject != "" {
		line += "  " + subject
	}
	if e.Detail != "" {
		line += "  " + e.Detail
	}
	say(p.w, "%s", strings.TrimRight(line, " "))
}

// close writes what is buffered and stops.
func (p *printer) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.ch)
	}
	p.mu.Unlock()
	<-p.done
}

type watchOptions struct {
	asJSON      bool
	heartbeats  bool
	rescan      time.Duration
	maxServices int
}

func (a *app) watchCommand() *cobra.Command {
	var o watchOptions
	cmd := &cobra.Command{
		Use:   "watch [SERVICE]",
		Short: "Stream the registry's changes as they happen, one line each",
		Long: `Stream the registry's changes, one line each with a timestamp, as a client
sees them (through natskv.Instancer, one per service):

  added          a record appeared
  updated        a record changed (version, metadata, sticky group)
  status         its status changed (ACTIVE, STANDBY, UNHEALTHY)
  heartbeat      a rewrite that changed nothing else (only with --heartbeats)
  deleted        removed cleanly (Deregister)
  purged         purged by an operator
  expired        its TTL ran out on the server: the owner stopped writing
  stale          no write for longer than the stale threshold: clients drop it
  skipped        a record clients ignore, and why
  watch lost     the watch failed (server gone, consumer lost); clients keep their last set
  watch resumed  the watch is back; changes missed meanwhile follow
  disconnected, reconnected   the connection to NATS

Without SERVICE every service is watched, up to --max-services at once:
services that appear later are picked up within --rescan, and a service is
no longer followed once its last key has gone for two rescans ("limit" says
when services go unwatched). It runs until interrupted and survives server
restarts. --json writes one JSON object per line.`,
		Example: `  kitnats watch
  kitnats watch greeter --heartbeats
  kitnats watch --json | jq -c 'select(.event == "expired")'`,
		Args: argsBetween(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			return a.watch(cmd, service, o)
		},
	}
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "write one JSON object per line")
	cmd.Flags().BoolVar(&o.heartbeats, "heartbeats", false, "show rewrites that change nothing but the heartbeat")
	cmd.Flags().DurationVar(&o.rescan, "rescan", 2*time.Second, "how often to look for new services (without SERVICE)")
	cmd.Flags().IntVar(&o.maxServices, "max-services", 1000, "services followed at once (without SERVICE)")
	return cmd
}

// watcher follows the registry's services, one Instancer each. What it
// holds is bounded by what it follows: at most --max-services services,
// each dropped once its keys are gone, with the records of its live keys.
type watcher struct {
	a    *app
	s    *session
	p    *printer
	o    watchOptions
	ctx  context.Context
	only string        // the service named on the command line, if any: followed for good
	quit chan struct{} // closed by stop
	wg   sync.WaitGroup

	mu     sync.Mutex
	last   map[string]natskv.Instance // by key: the last record told
	gone   map[string]bool            // keys gone stale
	bad    map[string]uint64          // keys skipped, at the revision told
	svcs   map[string]*svcWatch       // written by the command's goroutine only
	absent map[string]int             // followed services missing from consecutive listings
	full   bool                       // the last listing had services beyond --max-services
}

type svcWatch struct {
	inst *natskv.Instancer
	ch   chan sd.Event
	quit chan struct{} // closed when the service is dropped
}

// watchStarted, when set (by tests), is given every watcher started.
var watchStarted func(*watcher)

func (a *app) watch(cmd *cobra.Command, service string, o watchOptions) error {
	ctx := cmd.Context()
	l, err := a.layoutFor(service)
	if err != nil {
		return err
	}
	if o.rescan <= 0 {
		return usagef("--rescan must be positive")
	}
	if o.maxServices < 1 {
		return usagef("--max-services must be at least 1")
	}
	p := newPrinter(a.stdout, o.asJSON)
	defer p.close()
	var closing atomic.Bool
	s, err := a.open(ctx, cmd,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if closing.Load() {
				return
			}
			d := "connection lost"
			if err != nil {
				d += ": " + err.Error()
			}
			p.emit(watchEvent{Event: "disconnected", Detail: d})
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if !closing.Load() {
				p.emit(watchEvent{Event: "reconnected", Detail: "to " + redact(nc.ConnectedUrl())})
			}
		}))
	if err != nil {
		return err
	}
	defer func() {
		closing.Store(true)
		s.close()
	}()
	stale := "never"
	if d := s.judge.StaleAfter(); d > 0 {
		stale = "after " + human(d)
	}
	what := "every service"
	if service != "" {
		what = "service " + service
	}
	say(a.stderr, "watching %s in bucket %s at %s (layout %s, stale %s); interrupt to stop", what, s.b.Name(), s.where, l, stale)

	w := &watcher{a: a, s: s, p: p, o: o, ctx: ctx, only: service, quit: make(chan struct{}),
		last: map[string]natskv.Instance{}, gone: map[string]bool{}, bad: map[string]uint64{},
		svcs: map[string]*svcWatch{}, absent: map[string]int{}}
	defer w.stop()
	if watchStarted != nil {
		watchStarted(w)
	}
	if service != "" {
		if err := w.start(service); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	w.discover()
	t := time.NewTicker(o.rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.discover()
		}
	}
}

// discover starts watching the services whose keys are in the bucket and
// not watched yet, up to --max-services, and stops following those whose
// keys have been gone from two listings in a row. What it holds while
// listing is bounded by the services it may follow, however many names
// the bucket holds.
func (w *watcher) discover() {
	if !w.s.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.a.conn.timeout)
	defer cancel()
	kl, err := w.s.b.KeyValue().ListKeys(ctx)
	if err != nil {
		return // the server is away: the next rescan tries again
	}
	present := map[string]bool{} // followed services with a key
	fresh := map[string]bool{}   // services to follow, within the free places
	free, more := w.o.maxServices-len(w.svcs), false
	for k := range kl.Keys() {
		svc, _, ok := registry.Layout(w.s.layout).Parse(k)
		switch {
		case !ok:
		case w.svcs[svc] != nil:
			present[svc] = true
		case fresh[svc]:
		case len(fresh) < free:
			fresh[svc] = true
		default:
			more = true
		}
	}
	if ctx.Err() != nil {
		// The listing was cut short: what it missed is not gone.
		return
	}
	for svc := range w.svcs {
		if present[svc] || svc == w.only {
			delete(w.absent, svc)
			continue
		}
		// Two listings in a row, a rescan apart: the removals have been
		// told by then.
		if w.absent[svc]++; w.absent[svc] >= 2 {
			w.drop(svc)
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(fresh)) {
		if err := w.start(svc); err != nil {
			w.p.emit(watchEvent{Event: "skipped", Service: svc, Detail: "cannot watch: " + err.Error()})
		}
	}
	w.mu.Lock()
	told := w.full
	w.full = more
	w.mu.Unlock()
	if more && !told {
		w.p.emit(watchEvent{Event: "limit", Detail: fmt.Sprintf("following %d services (--max-services); the bucket holds more, not watched until places free up: raise --max-services, or watch one by name", w.o.maxServices)})
	}
}

// start watches one service with its own Instancer.
func (w *watcher) start(service string) error {
	opts := append(w.a.instancerOptions(w.s.layout), natskv.WithChangeFunc(func(c natskv.Change) { w.change(service, c) }))
	inst, err := natskv.NewInstancer(w.s.b, service, nil, opts...)
	if err != nil {
		return err
	}
	sw := &svcWatch{inst: inst, ch: make(chan sd.Event), quit: make(chan struct{})}
	w.mu.Lock()
	w.svcs[service] = sw
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.follow(service, sw)
	}()
	inst.Register(sw.ch) // its receiver is ready: the set is handed over at once
	return nil
}

// drop stops following a service, and forgets its keys.
func (w *watcher) drop(service string) {
	sw := w.svcs[service]
	sw.inst.Deregister(sw.ch)
	sw.inst.Stop()
	close(sw.quit)
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.svcs, service)
	delete(w.absent, service)
	mine := func(key string) bool { svc, _, _ := registry.Layout(w.s.layout).Parse(key); return svc == service }
	maps.DeleteFunc(w.last, func(k string, _ natskv.Instance) bool { return mine(k) })
	maps.DeleteFunc(w.gone, func(k string, _ bool) bool { return mine(k) })
	maps.DeleteFunc(w.bad, func(k string, _ uint64) bool { return mine(k) })
}

// followed is how many services are followed, how many keys' records are
// held, and whether the last listing had services beyond the limit.
func (w *watcher) followed() (services, keys int, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.svcs), len(w.last) + len(w.gone) + len(w.bad), w.full
}

// follow reports the service's watch going down and coming back, from the
// Instancer's events.
func (w *watcher) follow(service string, sw *svcWatch) {
	first, lost := true, false
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.quit:
			return
		case <-sw.quit:
			return
		case ev := <-sw.ch:
			switch {
			case ev.Err != nil:
				if !lost {
					w.p.emit(watchEvent{Event: "watch lost", Service: service, Detail: ev.Err.Error() + "; clients keep their last set"})
				}
				lost, first = true, false
			case first:
				w.p.emit(watchEvent{Event: "watching", Service: service, Detail: offered(ev.Instances)})
				first = false
			case lost:
				w.p.emit(watchEvent{Event: "watch resumed", Service: service, Detail: offered(ev.Instances)})
				lost = false
			}
		}
	}
}

func offered(ids []string) string {
	if len(ids) == 0 {
		return "no instance offered to clients"
	}
	return fmt.Sprintf("%d offered to clients: %s", len(ids), listSome(ids, maxFacts))
}

// stop ends every Instancer and waits for the followers.
func (w *watcher) stop() {
	close(w.quit)
	for _, sw := range w.svcs {
		sw.inst.Stop()
	}
	w.wg.Wait()
}

// change is the Instancer's change func: it tells one change, as a line.
// It runs on the Instancer's goroutines and does not block.
func (w *watcher) change(service string, c natskv.Change) {
	e := watchEvent{Service: service, Instance: c.Instance.InstanceID, Key: c.Key, Revision: c.Revision}
	if e.Instance == "" {
		_, e.Instance, _ = registry.Layout(w.s.layout).Parse(c.Key)
	}
	if c.Instance.Status != "" {
		e.Status, e.Version = string(c.Instance.Status), c.Instance.Version
	}
	w.mu.Lock()
	prev, had := w.last[c.Key]
	wasStale := w.gone[c.Key]
	if c.Kind == natskv.ChangeSkipped && c.Revision != 0 && w.bad[c.Key] == c.Revision {
		// A rebuilt watch reads the same bad record again: told already.
		w.mu.Unlock()
		return
	}
	delete(w.bad, c.Key)
	switch c.Kind {
	case natskv.ChangeAdded, natskv.ChangeUpdated:
		w.last[c.Key] = c.Instance
		delete(w.gone, c.Key)
	case natskv.ChangeStale:
		w.gone[c.Key] = true
	case natskv.ChangeSkipped:
		w.bad[c.Key] = c.Revision
		delete(w.last, c.Key)
		delete(w.gone, c.Key)
	default:
		delete(w.last, c.Key)
		delete(w.gone, c.Key)
	}
	w.mu.Unlock()

	switch c.Kind {
	case natskv.ChangeAdded:
		e.Event, e.Detail = "added", describe(c.Instance)
	case natskv.ChangeUpdated:
		switch d := diff(prev, c.Instance); {
		case wasStale:
			e.Event, e.Detail = "updated", "written again after going stale: "+describe(c.Instance)
		case !had:
			e.Event, e.Detail = "updated", describe(c.Instance)
		case prev.Status != c.Instance.Status:
			e.Event, e.Detail = "status", fmt.Sprintf("%s → %s", prev.Status, c.Instance.Status)
			if d != "" {
				e.Detail += "; " + d
			}
		case d != "":
			e.Event, e.Detail = "updated", d
		default:
			if !w.o.heartbeats {
				return
			}
			e.Event, e.Detail = "heartbeat", "at "+c.Instance.LastHeartbeat.Format(timeFormat)
		}
	case natskv.ChangeDeleted:
		e.Event, e.Detail = "deleted", "deregistered cleanly"
	case natskv.ChangePurged:
		e.Event, e.Detail = "purged", "purged from the bucket"
	case natskv.ChangeExpired:
		e.Event, e.Detail = "expired", "its TTL ran out on the server: the owner stopped writing"
	case natskv.ChangeStale:
		e.Event, e.Detail = "stale", fmt.Sprintf("no write for over %s: clients stop offering it", human(w.s.judge.StaleAfter()))
	case natskv.ChangeSkipped:
		e.Event, e.Detail = "skipped", fmt.Sprint(c.Err)
		if c.Instance.InstanceID != "" {
			e.Detail += " (the record held before is dropped)"
		}
		e.Status, e.Version = "", ""
	default:
		e.Event = c.Kind.String()
	}
	w.p.emit(e)
}

// describe is a record in a few words: status, version, zone.
func describe(in natskv.Instance) string {
	s := string(in.Status) + " " + cut(in.Version)
	if z := in.Metadata[wire.MetadataZone]; z != "" {
		s += " zone=" + cut(z)
	}
	return s
}

// cut bounds one field of a line (the line is escaped as a whole).
func cut(s string) string { return safetext.Truncate(s, maxCell) }

// diff says what changed between two records besides status and heartbeat.
func diff(a, b natskv.Instance) string {
	var d []string
	if a.Version != b.Version {
		d = append(d, fmt.Sprintf("version %s → %s", cut(a.Version), cut(b.Version)))
	}
	if a.StickyActiveGroup != b.StickyActiveGroup {
		d = append(d, fmt.Sprintf("sticky group %q → %q", cut(a.StickyActiveGroup), cut(b.StickyActiveGroup)))
	}
	keys := map[string]bool{}
	for k := range a.Metadata {
		keys[k] = true
	}
	for k := range b.Metadata {
		keys[k] = true
	}
	n := 0
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		va, ina := a.Metadata[k]
		vb, inb := b.Metadata[k]
		if ina && inb && va == vb {
			continue
		}
		if n++; n > maxFacts {
			continue
		}
		k, va, vb := cut(k), cut(va), cut(vb)
		switch {
		case !ina:
			d = append(d, fmt.Sprintf("%s=%s added", k, vb))
		case !inb:
			d = append(d, fmt.Sprintf("%s removed", k))
		default:
			d = append(d, fmt.Sprintf("%s %s → %s", k, va, vb))
		}
	}
	if n > maxFacts {
		d = append(d, fmt.Sprintf("and %d more metadata changes", n-maxFacts))
	}
	return strings.Join(d, "; ")
}

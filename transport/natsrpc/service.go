package natsrpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/wire"
)

// Defaults of a Service's options.
const (
	defaultMaxConcurrent = 64
	defaultMaxPending    = 256
)

// Messages of the 503 and 504 replies of requests a Service does not run.
const (
	msgShuttingDown = "service shutting down"
	msgOverloaded   = "service overloaded: the queue would outlast the deadline"
	msgExpired      = "deadline exceeded before the handler ran"
)

// Service serves a set of methods for one instance of a service. Each method
// is subscribed twice:
//
//   - rpc.{service}.{method} in queue group rpc.{service}: any instance
//     answers (the AegisSDK convention; callers without discovery use it);
//   - rpc.{service}.{method}.{instance}, no queue group: only this instance
//     answers (client-side balancing through Factory uses it).
//
// It answers NATS micro discovery, so `nats micro ls|info|stats` see it as
// a micro service whose endpoints are those subjects; the instance ID is in
// its metadata under wire.MetadataInstance, and each endpoint's stats data
// counts errors, panics, malformed headers and the requests it rejected,
// expired or dropped.
//
// Requests run on at most WithMaxConcurrent workers, each method keeping a
// reserve of them, so a slow handler or a flooded method does not hold up
// the others; requests that would wait past their deadline are refused at
// once with a retryable 503 or dropped unrun. Each request's context
// carries the caller's deadline (Kitnats-Timeout, an envelope's timeout, or
// WithDefaultTimeout) and trace context (extracted by the propagator from
// the message headers). A request whose reply subject is not an inbox (see
// WithReplyPrefixes) is neither run nor answered.
type Service struct {
	nc       *nats.Conn
	name     string
	instance string
	disc     discovery
	prop     propagation.TextMapPropagator
	w3cOnly  bool // prop is propagation.TraceContext: no traceparent, nothing to extract
	logger   log.Logger
	timeout  time.Duration // deadline of requests that carry none; 0 for none
	replies  []string      // the reply prefixes answered, each ending in '.'
	pool     *pool
	methods  []*method // sorted by name; read-only after NewService
	control  []*nats.Subscription

	quit    chan struct{}  // closed when readers are to finish what is buffered and exit
	readers sync.WaitGroup // readers and the watchdog
	// The watchdog sleeps while the service is idle; a reader that starts
	// a request wakes it.
	watchAsleep atomic.Bool
	watchWake   chan struct{}

	subsLeft atomic.Int32  // endpoint subscriptions not yet removed
	subsGone chan struct{} // closed when subsLeft reaches 0

	base   context.Context // handlers' root; cancelled when Shutdown gives up
	cancel context.CancelFunc

	shutdownOnce sync.Once
	done         chan struct{}
	shutdownErr  error
}

// endpointStats is the data each endpoint reports in `$SRV.STATS`: what
// became of the requests beyond micro's own counters (see data).
type endpointStats struct {
	Errors    atomic.Uint64 `json:"-"`
	Panics    atomic.Uint64 `json:"-"`
	Malformed atomic.Uint64 `json:"-"` // malformed deadline headers (ignored)
	// Rejected counts requests refused with 503 without running the
	// handler: the method's queue was full or would outlast the caller's
	// deadline, or the service was shutting down; and requests not run
	// and not answered because their reply subject is reserved to NATS
	// (see the package doc, Replies).
	Rejected atomic.Uint64 `json:"-"`
	// Expired counts requests dropped without running the handler because
	// their deadline passed before they could run. Those with the caller's
	// deadline get no reply (the caller has stopped waiting); those with the
	// service's default deadline get a 504.
	Expired atomic.Uint64 `json:"-"`

	// For micro's counters.
	requests   atomic.Uint64 // delivered
	ran        atomic.Uint64 // handled by a worker
	processing atomic.Int64  // nanoseconds requests held a worker
	lastError  atomic.Pointer[string]
	sub        *nats.Subscription // its Dropped are the buffer overflows
}

// data reports the counters, and the requests nats.go dropped because the
// endpoint's delivery buffer was full ("dropped"), as JSON.
func (s *endpointStats) data() []byte {
	var dropped int
	if s.sub != nil {
		dropped, _ = s.sub.Dropped()
	}
	return fmt.Appendf(nil, `{"errors":%d,"panics":%d,"malformed_headers":%d,"rejected":%d,"expired":%d,"dropped":%d}`,
		s.Errors.Load(), s.Panics.Load(), s.Malformed.Load(), s.Rejected.Load(), s.Expired.Load(), dropped)
}

// job is one request on its way through the service. Everything a request
// needs on the server side lives in this one allocation: the reply the
// Server fills in and the lazy deadline context beside the request message
// nats.go delivered. Nothing is pooled or reused (hooks and handlers may
// keep the messages or the context), so sharing one allocation is safe.
type job struct {
	srv   *Server
	stats *endpointStats
	lane  *lane
	recv  time.Time // arrival: when a reader took it from the subscription
	start time.Time // when it took a worker's token
	// deadline is the caller's (arrival + Kitnats-Timeout; caller set) or the
	// service's default; zero for none.
	deadline time.Time
	caller   bool
	foreign  *foreignRequest // nil for the headers protocol (aegis.go)
	msg      *nats.Msg
	reply    nats.Msg
	dl       deadlineCtx
}

// expired reports whether j's deadline has passed at now.
func (j *job) expired(now time.Time) bool {
	return !j.deadline.IsZero() && !now.Before(j.deadline)
}

type serviceConfig struct {
	max           int
	pending       int
	timeout       time.Duration
	logger        log.Logger
	prop          propagation.TextMapPropagator
	version       string
	description   string
	metadata      map[string]string
	replyPrefixes []string // each ends in '.'
}

// NewService validates the names, subscribes every method on both subjects,
// waits until the NATS server has the subscriptions (so a request sent once
// it returns is routed here), and returns the running service. ctx bounds
// that wait only; stop the service with Shutdown. methods maps method names
// to their servers; it is not kept. A subscription the server refuses for
// lack of a permission fails it with an error matching
// permissions.ErrPermission that names the subject (a
// *permissions.PermissionError).
func NewService(ctx context.Context, nc *nats.Conn, service, instance string, methods map[string]*Server, opts ...ServiceOption) (*Service, error) {
	if nc == nil {
		return nil, ErrNilConn
	}
	if err := wire.ValidateService(service); err != nil {
		return nil, err
	}
	if err := wire.ValidateInstance(instance); err != nil {
		return nil, err
	}
	if len(methods) == 0 {
		return nil, errors.New("natsrpc: service " + service + " has no methods")
	}
	names := make([]string, 0, len(methods))
	for m, srv := range methods {
		if err := wire.ValidateMethod(m); err != nil {
			return nil, err
		}
		if srv == nil {
			return nil, errors.New("natsrpc: nil server for method " + m)
		}
		names = append(names, m)
	}
	slices.Sort(names)

	cfg := serviceConfig{max: defaultMaxConcurrent, pending: defaultMaxPending, timeout: defaultTimeout,
		version: "0.0.0", prop: propagation.TraceContext{}, replyPrefixes: defaultReplyPrefixes}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyService(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.metadata == nil {
		cfg.metadata = make(map[string]string, 1)
	}
	cfg.metadata[wire.MetadataInstance] = instance
	disc := newDiscovery(cfg)

	s := &Service{
		nc:        nc,
		name:      service,
		instance:  instance,
		disc:      disc,
		prop:      cfg.prop,
		w3cOnly:   isTraceContext(cfg.prop),
		logger:    cfg.logger,
		timeout:   cfg.timeout,
		replies:   cfg.replyPrefixes,
		quit:      make(chan struct{}),
		watchWake: make(chan struct{}, 1),
		subsGone:  make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.pool = newPool(cfg.max, cfg.pending, len(names), s.reject, s.expire)
	buf := deliveryBuffer(nc.MaxPayload())
	for i, name := range names {
		s.methods = append(s.methods, &method{
			srv:  methods[name],
			lane: s.pool.lanes[i],
			in:   make(chan *nats.Msg, buf),
			eps: [2]route{
				{method: name, subject: serviceSubject(service, name), queue: queueGroup(service), stats: &endpointStats{}},
				{method: name, subject: instanceSubject(service, name, instance), stats: &endpointStats{}},
			},
		})
	}

	// The server refuses a subscription by telling the connection so
	// before it answers the flush's ping; the connection keeps the last
	// refusal only, so the endpoints are checked before discovery.
	probe := natserr.NewProbe(nc)
	flushed := func() error {
		if ferr := flush(ctx, nc); ferr != nil {
			return fmt.Errorf("natsrpc: subscribe %s: %w", service, ferr)
		}
		if pe := probe.Check("rpc."+service+".>", "$SRV.>"); pe != nil {
			return fmt.Errorf("natsrpc: serve %s: %w", service, pe)
		}
		return nil
	}
	err := s.subscribe()
	if err == nil {
		err = flushed()
	}
	if err == nil {
		err = s.subscribeDiscovery()
	}
	if err == nil {
		err = flushed()
	}
	if err != nil {
		s.unsubscribe()
		return nil, err
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.start()
	return s, nil
}

// subscribe subscribes every endpoint, service-wide ones first, each into
// its method's delivery buffer.
func (s *Service) subscribe() error {
	for i := range 2 {
		for _, m := range s.methods {
			e := &m.eps[i]
			var sub *nats.Subscription
			var err error
			if e.queue != "" {
				sub, err = s.nc.ChanQueueSubscribe(e.subject, e.queue, m.in)
			} else {
				sub, err = s.nc.ChanSubscribe(e.subject, m.in)
			}
			if err != nil {
				return fmt.Errorf("natsrpc: subscribe %s: %w", e.subject, err)
			}
			e.sub, e.stats.sub = sub, sub
			s.subsLeft.Add(1)
			sub.SetClosedHandler(func(string) {
				if s.subsLeft.Add(-1) == 0 {
					close(s.subsGone)
				}
			})
		}
	}
	return nil
}

// unsubscribe drops every subscription at once (a failed NewService).
func (s *Service) unsubscribe() {
	for _, e := range s.endpoints() {
		if e.sub != nil {
			_ = e.sub.Unsubscribe()
		}
	}
	for _, sub := range s.control {
		_ = sub.Unsubscribe()
	}
}

// hasTraceHeader reports whether the propagator may find anything in h.
// The W3C propagator reads nothing without a traceparent, so a request
// without one skips extraction; any other propagator always runs.
func (s *Service) hasTraceHeader(h nats.Header) bool {
	if len(h) == 0 {
		return false
	}
	if !s.w3cOnly {
		return true
	}
	_, ok := h[rpcheader.Traceparent]
	return ok
}

func isTraceContext(p propagation.TextMapPropagator) bool {
	_, ok := p.(propagation.TraceContext)
	return ok
}

func (s *Service) respond(j *job, reply *nats.Msg) {
	if j.msg.Reply == "" {
		return
	}
	reply.Subject = j.msg.Reply
	// nats.go refuses an oversize message before writing any of it, so the
	// common case pays for no size check of its own; a refused reply becomes
	// an error reply the caller can read.
	err := s.nc.PublishMsg(reply)
	if errors.Is(err, nats.ErrMaxPayload) {
		j.stats.Errors.Add(1)
		perr := &PayloadError{Subject: j.msg.Subject, Size: msgSize(reply), Max: s.nc.MaxPayload()}
		err = s.nc.PublishMsg(j.errorReply(CodeInternal, perr.Error()))
	}
	if err != nil {
		s.log("msg", "reply failed", "subject", j.msg.Subject, "err", err)
	}
}

// reject refuses a request without running the handler.
func (s *Service) reject(j *job, code int, msg string) {
	j.stats.Rejected.Add(1)
	s.replyError(j, code, msg)
}

// expire drops a request whose deadline passed before it ran. A caller that
// sent its deadline has stopped waiting: it gets no reply. One that sent
// none gets a 504 for the service's default deadline.
func (s *Service) expire(j *job) {
	j.stats.Expired.Add(1)
	if !j.caller {
		s.replyError(j, CodeTimeout, msgExpired)
	}
}

// replyError replies an error status, if the request wants a reply.
func (s *Service) replyError(j *job, code int, msg string) {
	if j.msg.Reply == "" {
		return
	}
	if err := s.nc.PublishMsg(j.errorReply(code, msg)); err != nil {
		s.log("msg", "reply failed", "subject", j.msg.Subject, "err", err)
	}
}

func (s *Service) log(keyvals ...any) {
	if s.logger != nil {
		_ = s.logger.Log(append([]any{"service", s.name, "instance", s.instance}, keyvals...)...)
	}
}

// Shutdown stops the service gracefully: it unsubscribes every endpoint
// (queue group first, so the server routes new requests to other instances
// at once; requests already delivered to this instance are still served),
// waits until every request delivered before the unsubscribe has been
// handled and replied, and returns nil. If ctx ends first, the handlers'
// contexts are cancelled, requests still waiting are refused with
// CodeUnavailable (retryable), and Shutdown returns ctx.Err() without
// waiting for handlers that ignore their context.
//
// Shutdown does not close the connection. Calling it again waits for the
// first call's outcome (or its own ctx) and returns it.
func (s *Service) Shutdown(ctx context.Context) error {
	first := false
	s.shutdownOnce.Do(func() { first = true })
	if first {
		s.shutdown(ctx)
		return s.shutdownErr
	}
	select {
	case <-s.done:
		return s.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) shutdown(ctx context.Context) {
	err := s.drain(ctx)
	// Everything the server routed here is in the delivery buffers (or the
	// wait gave up): readers finish what is buffered and exit.
	close(s.quit)
	if err == nil {
		err = s.waitReaders(ctx)
	}
	if err != nil {
		// Give up on stragglers: cancel their contexts and refuse whatever is
		// still waiting.
		s.cancel()
	}
	s.pool.stop()
	for _, sub := range s.control {
		_ = sub.Unsubscribe()
	}
	s.cancel()
	s.shutdownErr = err
	close(s.done)
}

// drain unsubscribes the endpoints, queue group first, and waits until the
// server has acknowledged it and nats.go has delivered every request that
// came before: then nothing more will arrive.
func (s *Service) drain(ctx context.Context) error {
	for _, e := range s.endpoints() {
		_ = e.sub.Drain() // a closed or draining connection drops them by itself
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.subsGone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if s.nc.IsClosed() {
				// Whatever was delivered is all there will be.
				return nil
			}
		}
	}
}

func (s *Service) waitReaders(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush is nc.FlushWithContext, which refuses a context without a deadline;
// such a context gets defaultTimeout for the flush.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}

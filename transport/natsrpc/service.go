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
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/propagation"
)

// DefaultMaxConcurrent is how many requests a Service handles at once unless
// ServiceMaxConcurrent says otherwise.
const DefaultMaxConcurrent = 64

// DefaultMaxPending is how many requests of one method may wait for a
// worker unless ServiceMaxPending says otherwise.
const DefaultMaxPending = 256

// Pending limits of each endpoint's subscription. The handler never waits
// for a worker, so the buffer holds only what arrived while it was being
// scheduled; messages over a limit are dropped by nats.go (slow consumer)
// and their callers time out.
const (
	subPendingMsgs  = 8192
	subPendingBytes = 64 << 20
)

// Messages of the 503 and 504 replies of requests a Service does not run.
const (
	msgShuttingDown = "service shutting down"
	msgOverloaded   = "service overloaded: the queue would outlast the deadline"
	msgExpired      = "deadline exceeded before the handler ran"
)

// MetadataInstance is the micro metadata key holding the kitnats instance ID,
// so `nats micro info` ties a micro service ID to a registry instance.
const MetadataInstance = "kitnats.instance"

// Service serves a set of methods for one instance of a service. Each method
// is subscribed twice, as a NATS micro endpoint:
//
//   - rpc.{service}.{method} in queue group rpc.{service}: any instance
//     answers (the AegisSDK convention; callers without discovery use it);
//   - rpc.{service}.{method}.{instance}, no queue group: only this instance
//     answers (client-side balancing through Factory uses it).
//
// Because it is a micro service, `nats micro ls|info|stats` see it ($SRV
// discovery); the instance ID is in its metadata under MetadataInstance, and
// each endpoint's stats data is an EndpointStats.
//
// Requests run on a pool of at most ServiceMaxConcurrent workers, so a slow
// handler does not hold up the others. Each request's context carries the
// caller's deadline (HeaderTimeout) and trace context (extracted by the
// propagator from the message headers).
type Service struct {
	nc       *nats.Conn
	name     string
	instance string
	micro    micro.Service
	prop     propagation.TextMapPropagator
	w3cOnly  bool // prop is propagation.TraceContext: no traceparent, nothing to extract
	logger   log.Logger
	timeout  time.Duration // deadline of requests that carry none; 0 for none
	pool     *pool

	work    chan *job     // unbuffered: a send succeeds only into an idle worker
	quit    chan struct{} // closed when idle workers must exit
	workers sync.WaitGroup

	base   context.Context // handlers' root; cancelled when Shutdown gives up
	cancel context.CancelFunc

	shutdownOnce sync.Once
	done         chan struct{}
	shutdownErr  error

	stats map[string]*EndpointStats // by subject; read-only after NewService
}

// EndpointStats is the data each endpoint reports in `$SRV.STATS`: micro's
// own counters see only the hand-off to a worker, so the outcome of requests
// is counted here.
type EndpointStats struct {
	Errors    atomic.Uint64 `json:"-"`
	Panics    atomic.Uint64 `json:"-"`
	Malformed atomic.Uint64 `json:"-"` // malformed deadline headers (ignored)
	// Rejected counts requests refused with 503 without running the
	// handler: the method's queue was full or would outlast the caller's
	// deadline, or the service was shutting down.
	Rejected atomic.Uint64 `json:"-"`
	// Expired counts requests dropped without running the handler because
	// their deadline passed while they waited for a worker. Those with the
	// caller's deadline get no reply (the caller has stopped waiting); those
	// with the service's default deadline get a 504.
	Expired atomic.Uint64 `json:"-"`
}

// MarshalJSON reports the counters.
func (s *EndpointStats) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"errors":%d,"panics":%d,"malformed_headers":%d,"rejected":%d,"expired":%d}`,
		s.Errors.Load(), s.Panics.Load(), s.Malformed.Load(), s.Rejected.Load(), s.Expired.Load()), nil
}

// job is one request on its way through the service. Everything a request
// needs on the server side lives in this one allocation: the request
// message handed to the Server, the reply it fills in, and the lazy
// deadline context. Nothing is pooled or reused (hooks and handlers may keep
// the messages or the context), so sharing one allocation is safe.
type job struct {
	srv   *Server
	stats *EndpointStats
	lane  *lane
	recv  time.Time // arrival: the earliest the service sees the request
	start time.Time // when it took a worker's token
	// deadline is the caller's (receive time + HeaderTimeout; caller set)
	// or the service's default; zero for none.
	deadline time.Time
	caller   bool
	msg      nats.Msg
	reply    nats.Msg
	dl       deadlineCtx
}

// expired reports whether j's deadline has passed at now.
func (j *job) expired(now time.Time) bool {
	return !j.deadline.IsZero() && !now.Before(j.deadline)
}

// ServiceOption sets an optional parameter of a Service.
type ServiceOption func(*serviceConfig)

type serviceConfig struct {
	max         int
	pending     int
	timeout     time.Duration
	logger      log.Logger
	prop        propagation.TextMapPropagator
	version     string
	description string
	metadata    map[string]string
}

// ServiceMaxConcurrent bounds the requests handled at once, over all
// methods (default DefaultMaxConcurrent). Each method keeps a reserve of
// these workers that the others cannot take (see the package doc); when a
// method may not start another request, the request waits in the method's
// queue (ServiceMaxPending) or is refused with 503.
func ServiceMaxConcurrent(n int) ServiceOption {
	return func(c *serviceConfig) { c.max = n }
}

// ServiceMaxPending bounds the requests of one method waiting for a worker
// (default DefaultMaxPending). Requests beyond it are refused with 503
// (CodeUnavailable, retryable elsewhere) at once, as are requests whose
// wait, at the method's measured service time, would outlast their
// deadline.
func ServiceMaxPending(n int) ServiceOption {
	return func(c *serviceConfig) { c.pending = n }
}

// ServiceDefaultTimeout is the deadline of a request that carries none
// (no HeaderTimeout, as go-kit's transport/nats and the AegisSDK send):
// its handler's context ends that long after the request arrived, and a
// request still waiting for a worker then is dropped with a 504. The
// default is DefaultTimeout, the budget this package's own client sends
// when its caller sets none; d <= 0 leaves such requests without a
// deadline.
func ServiceDefaultTimeout(d time.Duration) ServiceOption {
	return func(c *serviceConfig) { c.timeout = d }
}

// ServiceLogger logs panics, malformed headers and failed replies. nil (the
// default) logs nothing.
func ServiceLogger(l log.Logger) ServiceOption {
	return func(c *serviceConfig) { c.logger = l }
}

// ServicePropagator sets how trace context is extracted from request headers.
// The default is propagation.TraceContext{} (W3C traceparent/tracestate);
// pass otel.GetTextMapPropagator() to follow the global setting.
func ServicePropagator(p propagation.TextMapPropagator) ServiceOption {
	return func(c *serviceConfig) { c.prop = p }
}

// ServiceVersion is the semantic version reported to micro discovery
// (default "0.0.0").
func ServiceVersion(v string) ServiceOption {
	return func(c *serviceConfig) { c.version = v }
}

// ServiceDescription is the description reported to micro discovery.
func ServiceDescription(d string) ServiceOption {
	return func(c *serviceConfig) { c.description = d }
}

// ServiceMetadata adds metadata reported to micro discovery. The map is
// copied.
func ServiceMetadata(m map[string]string) ServiceOption {
	return func(c *serviceConfig) {
		if c.metadata == nil {
			c.metadata = make(map[string]string, len(m)+1)
		}
		for k, v := range m {
			c.metadata[k] = v
		}
	}
}

// NewService validates the names, subscribes every method on both subjects,
// waits until the NATS server has the subscriptions (so a request sent once
// it returns is routed here), and returns the running service. ctx bounds
// that wait only; stop the service with Shutdown. methods maps method names
// to their servers; it is not kept.
func NewService(ctx context.Context, nc *nats.Conn, service, instance string, methods map[string]*Server, opts ...ServiceOption) (*Service, error) {
	if nc == nil {
		return nil, ErrNilConn
	}
	if err := ValidateService(service); err != nil {
		return nil, err
	}
	if err := ValidateInstance(instance); err != nil {
		return nil, err
	}
	if len(methods) == 0 {
		return nil, errors.New("natsrpc: service " + service + " has no methods")
	}
	names := make([]string, 0, len(methods))
	for m, srv := range methods {
		if err := ValidateMethod(m); err != nil {
			return nil, err
		}
		if srv == nil {
			return nil, errors.New("natsrpc: nil server for method " + m)
		}
		names = append(names, m)
	}
	slices.Sort(names)

	cfg := serviceConfig{max: DefaultMaxConcurrent, pending: DefaultMaxPending, timeout: DefaultTimeout,
		version: "0.0.0", prop: propagation.TraceContext{}}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.max = min(max(cfg.max, 1), 1<<20)
	cfg.pending = min(max(cfg.pending, 0), 1<<20)
	if cfg.prop == nil {
		cfg.prop = propagation.TraceContext{}
	}
	if cfg.metadata == nil {
		cfg.metadata = make(map[string]string, 1)
	}
	cfg.metadata[MetadataInstance] = instance

	s := &Service{
		nc:       nc,
		name:     service,
		instance: instance,
		prop:     cfg.prop,
		w3cOnly:  isTraceContext(cfg.prop),
		logger:   cfg.logger,
		timeout:  max(cfg.timeout, 0),
		work:     make(chan *job),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		stats:    make(map[string]*EndpointStats, 2*len(names)),
	}
	s.pool = newPool(cfg.max, cfg.pending, len(names), s.reject, s.expire)
	lanes := make(map[string]*lane, len(names))
	for i, m := range names {
		lanes[m] = s.pool.lanes[i]
	}
	s.base, s.cancel = context.WithCancel(context.Background())

	routes := s.routes(names)
	// Every endpoint's stats exist before the first subscription: micro may
	// answer a $SRV.STATS request while the endpoints are still being added.
	for _, r := range routes {
		s.stats[r.subject] = &EndpointStats{}
	}
	handler := func(method, subject string) micro.HandlerFunc {
		st := s.stats[subject]
		srv := methods[method]
		ln := lanes[method]
		return func(r micro.Request) {
			s.dispatch(&job{srv: srv, stats: st, lane: ln,
				msg: nats.Msg{Subject: r.Subject(), Reply: r.Reply(), Header: nats.Header(r.Headers()), Data: r.Data()}})
		}
	}
	err := s.subscribeMicro(routes, cfg, handler)
	if err == nil {
		if ferr := flush(ctx, nc); ferr != nil {
			err = fmt.Errorf("natsrpc: subscribe %s: %w", service, ferr)
			_ = s.micro.Stop()
		}
	}
	if err != nil {
		s.cancel()
		s.pool.stop()
		close(s.quit)
		s.workers.Wait()
		return nil, err
	}
	return s, nil
}

// route is one micro endpoint of a Service: a method on one subject.
type route struct {
	method  string
	subject string
	queue   micro.EndpointOpt // the service's queue group, or none
}

// routes lists each method's two endpoints. Service-wide endpoints come
// first, so Shutdown unsubscribes the queue group before the instance
// subjects and new requests move to other instances at once.
func (s *Service) routes(methods []string) []route {
	routes := make([]route, 0, 2*len(methods))
	group := micro.WithEndpointQueueGroup(queueGroup(s.name))
	for _, m := range methods {
		routes = append(routes, route{method: m, subject: serviceSubject(s.name, m), queue: group})
	}
	none := micro.WithEndpointQueueGroupDisabled()
	for _, m := range methods {
		routes = append(routes, route{method: m, subject: instanceSubject(s.name, m, s.instance), queue: none})
	}
	return routes
}

// subscribeMicro adds every route as a micro endpoint, in order.
func (s *Service) subscribeMicro(routes []route, cfg serviceConfig, handler func(method, subject string) micro.HandlerFunc) error {
	ms, err := micro.AddService(s.nc, micro.Config{
		Name:        s.name,
		Version:     cfg.version,
		Description: cfg.description,
		Metadata:    cfg.metadata,
		QueueGroup:  queueGroup(s.name),
		StatsHandler: func(e *micro.Endpoint) any {
			if st, ok := s.stats[e.Subject]; ok {
				return st
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("natsrpc: add micro service %s: %w", s.name, err)
	}
	limits := micro.WithEndpointPendingLimits(subPendingMsgs, subPendingBytes)
	for _, r := range routes {
		if err = ms.AddEndpoint(r.method, handler(r.method, r.subject), micro.WithEndpointSubject(r.subject), r.queue, limits); err != nil {
			break
		}
	}
	if err != nil {
		_ = ms.Stop()
		return fmt.Errorf("natsrpc: subscribe %s: %w", s.name, err)
	}
	s.micro = ms
	return nil
}

// Name is the service name.
func (s *Service) Name() string { return s.name }

// Instance is the instance ID the service answers for.
func (s *Service) Instance() string { return s.instance }

// Info is the micro discovery info (the same `nats micro info` shows).
func (s *Service) Info() micro.Info { return s.micro.Info() }

// Stats is the micro discovery stats; each endpoint's Data is its
// EndpointStats.
func (s *Service) Stats() micro.Stats { return s.micro.Stats() }

// dispatch runs on micro's delivery goroutine and never blocks on a busy
// service: it stamps the request's arrival and deadline, and the pool runs
// it now (on an idle worker, or a new one under the bound), queues it, or
// turns it away. So the arrival time is when the request left the
// subscription's buffer, which the handler keeps near empty.
func (s *Service) dispatch(j *job) {
	if !s.arrive(j) || !s.pool.admit(j) {
		return
	}
	select {
	case s.work <- j:
	default:
		s.workers.Add(1)
		go s.worker(j)
	}
}

// arrive stamps j with its arrival time and deadline: the caller's
// (HeaderTimeout counted from arrival) or the service's default. It drops j
// and returns false if that deadline has already passed.
func (s *Service) arrive(j *job) bool {
	j.recv = time.Now()
	j.start = j.recv
	if v := j.msg.Header[HeaderTimeout]; len(v) > 0 {
		d, err := ParseTimeout(v[0])
		if err != nil {
			j.stats.Malformed.Add(1)
			s.log("msg", "ignoring malformed deadline header", "subject", j.msg.Subject, "err", err)
		} else {
			j.deadline = j.recv.Add(d)
			j.caller = true
			if d <= 0 {
				s.expire(j)
				return false
			}
		}
	}
	if !j.caller && s.timeout > 0 {
		j.deadline = j.recv.Add(s.timeout)
	}
	return true
}

// worker serves requests while the pool has any for its token, then waits
// for the next hand-off; workers are reused, keeping their grown stacks.
func (s *Service) worker(j *job) {
	defer s.workers.Done()
	for {
		for j != nil {
			s.run(j)
			j = s.pool.done(j, time.Now())
		}
		select {
		case j = <-s.work:
		case <-s.quit:
			return
		}
	}
}

// run serves one request on a pool worker.
func (s *Service) run(j *job) {
	defer func() {
		// The Server recovers its own panics; this catches a panicking
		// error encoder or finalizer.
		if r := recover(); r != nil {
			j.stats.Panics.Add(1)
			s.log("msg", "panic outside the endpoint", "subject", j.msg.Subject, "panic", fmt.Sprint(r))
			s.replyError(j, CodeInternal, "internal error")
		}
	}()
	if s.base.Err() != nil {
		// Shutdown gave up: refuse, so the caller may go elsewhere.
		s.reject(j, CodeUnavailable, msgShuttingDown)
		return
	}
	ctx := s.base
	if !j.deadline.IsZero() {
		j.dl.init(ctx, j.deadline)
		defer j.dl.release()
		ctx = &j.dl
	}
	if s.hasTraceHeader(j.msg.Header) {
		ctx = s.prop.Extract(ctx, HeaderCarrier(j.msg.Header))
	}
	reply, err := j.srv.serve(ctx, &j.msg, &j.reply)
	if err != nil {
		j.stats.Errors.Add(1)
		if errors.Is(err, errPanic) {
			j.stats.Panics.Add(1)
			s.log("msg", "handler panicked", "subject", j.msg.Subject, "err", err)
		}
	}
	s.respond(j, reply)
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
	_, ok := h[HeaderTraceparent]
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
		err = s.nc.PublishMsg(errorReply(j.msg.Reply, CodeInternal, perr.Error()))
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
	if err := s.nc.PublishMsg(errorReply(j.msg.Reply, code, msg)); err != nil {
		s.log("msg", "reply failed", "subject", j.msg.Subject, "err", err)
	}
}

// errorReply is a reply to subject carrying only an error status.
func errorReply(subject string, code int, msg string) *nats.Msg {
	reply := &nats.Msg{Subject: subject, Header: make(nats.Header, 2)}
	EncodeError(reply.Header, &Error{Code: code, Message: msg})
	return reply
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
// contexts are cancelled, requests still queued are refused with
// CodeUnavailable (retryable), and Shutdown returns ctx.Err() without
// waiting for handlers that ignore their context.
//
// Shutdown does not close the connection. Waiting for queued requests uses
// nats.Conn.Barrier, which also waits for the connection's other async
// subscriptions to catch up. Calling Shutdown again waits for the first
// call's outcome (or its own ctx) and returns it.
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
	if err != nil {
		// Give up on stragglers: cancel their contexts and refuse whatever is
		// still queued.
		s.cancel()
	}
	s.pool.stop()
	close(s.quit)
	if err == nil {
		s.workers.Wait()
	}
	s.cancel()
	s.shutdownErr = err
	close(s.done)
}

func (s *Service) drain(ctx context.Context) error {
	if err := s.micro.Stop(); err != nil {
		return fmt.Errorf("natsrpc: stop %s: %w", s.name, err)
	}
	if s.nc.IsClosed() {
		return nil
	}
	// Once the server has acknowledged the unsubscribes, every request it
	// routed here is in a subscription's pending list; the barrier runs after
	// all of them were dispatched.
	if err := flush(ctx, s.nc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Disconnected: whatever is pending is all there will be.
	}
	barrier := make(chan struct{})
	if err := s.nc.Barrier(func() { close(barrier) }); err != nil {
		close(barrier)
	}
	select {
	case <-barrier:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.pool.wait(ctx)
}

// flush is nc.FlushWithContext, which refuses a context without a deadline;
// such a context gets DefaultTimeout for the flush.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}

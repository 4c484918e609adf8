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

// msgShuttingDown is the message of the 503 a stopping Service replies to
// requests it will not run.
const msgShuttingDown = "service shutting down"

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
	pool     *pool

	base   context.Context // handlers' root; cancelled when Shutdown gives up
	cancel context.CancelFunc

	stopped atomic.Bool // set once Shutdown has finished or given up

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
	Rejected  atomic.Uint64 `json:"-"` // replied 503/504 without running the handler
}

// MarshalJSON reports the counters.
func (s *EndpointStats) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"errors":%d,"panics":%d,"malformed_headers":%d,"rejected":%d}`,
		s.Errors.Load(), s.Panics.Load(), s.Malformed.Load(), s.Rejected.Load()), nil
}

// job is one request on its way through the service. Everything a request
// needs on the server side lives in this one allocation: the request
// message handed to the Server, the reply it fills in, and the lazy
// deadline context. Nothing is pooled or reused (hooks and handlers may keep
// the messages or the context), so sharing one allocation is safe.
type job struct {
	srv   *Server
	stats *EndpointStats
	recv  time.Time
	msg   nats.Msg
	reply nats.Msg
	dl    deadlineCtx
}

// ServiceOption sets an optional parameter of a Service.
type ServiceOption func(*serviceConfig)

type serviceConfig struct {
	max         int
	logger      log.Logger
	prop        propagation.TextMapPropagator
	version     string
	description string
	metadata    map[string]string
}

// ServiceMaxConcurrent bounds the requests handled at once (default
// DefaultMaxConcurrent). When every worker is busy, further requests wait in
// the subscription's pending buffer.
func ServiceMaxConcurrent(n int) ServiceOption {
	return func(c *serviceConfig) { c.max = n }
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

	cfg := serviceConfig{max: DefaultMaxConcurrent, version: "0.0.0", prop: propagation.TraceContext{}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.max < 1 {
		cfg.max = 1
	}
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
		done:     make(chan struct{}),
		stats:    make(map[string]*EndpointStats, 2*len(names)),
	}
	s.pool = newPool(cfg.max, s.run, s.reject)
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
		return func(r micro.Request) {
			s.dispatch(&job{srv: srv, stats: st, recv: time.Now(),
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
		s.stopped.Store(true)
		s.cancel()
		s.pool.stop()
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
	for _, r := range routes {
		if err = ms.AddEndpoint(r.method, handler(r.method, r.subject), micro.WithEndpointSubject(r.subject), r.queue); err != nil {
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

// dispatch runs on the subscription's goroutine and hands the request to
// the pool, unless the service has stopped.
func (s *Service) dispatch(j *job) {
	if s.stopped.Load() {
		s.reject(j, CodeUnavailable, msgShuttingDown)
		return
	}
	s.pool.submit(j)
}

// run serves one request on a pool worker.
func (s *Service) run(j *job) {
	defer func() {
		// The Server recovers its own panics; this catches a panicking
		// error encoder or finalizer.
		if r := recover(); r != nil {
			j.stats.Panics.Add(1)
			s.log("msg", "panic outside the endpoint", "subject", j.msg.Subject, "panic", fmt.Sprint(r))
			s.reject(j, CodeInternal, "internal error")
		}
	}()
	if s.stopped.Load() {
		s.reject(j, CodeUnavailable, msgShuttingDown)
		return
	}
	ctx := s.base
	if v := j.msg.Header[HeaderTimeout]; len(v) > 0 {
		d, err := ParseTimeout(v[0])
		if err != nil {
			j.stats.Malformed.Add(1)
			s.log("msg", "ignoring malformed deadline header", "subject", j.msg.Subject, "err", err)
		} else {
			j.dl.init(ctx, j.recv.Add(d))
			defer j.dl.release()
			ctx = &j.dl
		}
	}
	if s.hasTraceHeader(j.msg.Header) {
		ctx = s.prop.Extract(ctx, HeaderCarrier(j.msg.Header))
	}
	if ctx.Err() != nil {
		if s.base.Err() != nil {
			// Shutdown gave up: refuse, so the caller may go elsewhere.
			s.reject(j, CodeUnavailable, msgShuttingDown)
			return
		}
		// The caller's deadline passed while the request waited for a
		// worker: nobody is listening for the reply any more.
		s.reject(j, CodeTimeout, "deadline exceeded before the handler ran")
		return
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

// reject replies an error without running the handler.
func (s *Service) reject(j *job, code int, msg string) {
	j.stats.Rejected.Add(1)
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
	s.stopped.Store(true)
	if err != nil {
		// Give up on stragglers: cancel their contexts and refuse whatever is
		// still queued.
		s.cancel()
	}
	s.pool.stop()
	if err == nil {
		s.pool.join()
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

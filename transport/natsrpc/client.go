package natsrpc

import (
	"context"
	"errors"
	"io"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/wire"
)

// defaultTimeout bounds a call whose context has no deadline, and is the
// deadline a Service gives a request that carries none.
const defaultTimeout = 10 * time.Second

// EncodeRequestFunc writes a user-domain request into the request message
// (Data and, if it likes, Header; Header is never nil).
type EncodeRequestFunc func(ctx context.Context, msg *nats.Msg, request any) error

// DecodeResponseFunc extracts a user-domain response from a successful reply.
// Replies with an error status never reach it: the call returns a *Error.
type DecodeResponseFunc func(ctx context.Context, reply *nats.Msg) (response any, err error)

// Client calls one method on one subject. Its Endpoint sends the request
// with headers (RequestMsgWithContext), carrying the caller's remaining time
// (Kitnats-Timeout, whole milliseconds) and trace context, and returns typed
// errors:
//
//   - *CallError wrapping ErrNoResponders, ErrConnClosed or ErrClientClosed
//     when the request provably reached no handler (Retryable() == true;
//     errors.Is(err, nats.ErrNoResponders) holds for no responders);
//   - *CallError wrapping the context's error on timeout or cancellation
//     (errors.Is(err, context.DeadlineExceeded / context.Canceled));
//   - *Error for a reply with an error status (Business for
//     endpoint.Failer errors; Retryable only for CodeUnavailable);
//   - *PayloadError before sending a message over the connection's max
//     payload;
//   - *CallError wrapping a *permissions.PermissionError (matching
//     permissions.ErrPermission) when the server refused the request's
//     subject or the reply's inbox for lack of a permission: not
//     retryable. A client watches for a refusal until a call of it has had
//     a reply; a permission revoked after that (by a configuration reload)
//     shows as timeouts.
type Client struct {
	nc      *nats.Conn
	subject string
	enc     EncodeRequestFunc
	dec     DecodeResponseFunc
	before  []RequestFunc
	after   []ResponseFunc
	timeout time.Duration
	prop    propagation.TextMapPropagator
	closed  atomic.Bool
	aegis   aegisConfig // AegisSDK envelopes, Factory's addressing (aegis.go)
	// proven: a call has had a reply, so the user may publish to the
	// subject and receive on its inbox; calls stop watching for refusals.
	// Until then one call at a time watches (probing); the others check
	// the connection's last error when they fail.
	proven  atomic.Bool
	probing atomic.Bool
	// reuse: nothing outside this package sees the request message (the
	// encoder is EncodeJSONRequest, no WithBefore, the W3C propagator),
	// so its message and header map are recycled once sent.
	reuse bool
}

var _ io.Closer = (*Client)(nil)

// NewClient constructs a client for an explicit subject. Most callers want
// NewServiceClient, NewInstanceClient or Factory, which build the subject
// from validated names. It panics with an error matching ErrInvalidOption
// on an option it cannot use.
func NewClient(nc *nats.Conn, subject string, enc EncodeRequestFunc, dec DecodeResponseFunc, opts ...ClientOption) *Client {
	c, err := newClient(nc, subject, enc, dec, opts)
	if err != nil {
		panic(err)
	}
	return c
}

func newClient(nc *nats.Conn, subject string, enc EncodeRequestFunc, dec DecodeResponseFunc, opts []ClientOption) (*Client, error) {
	c := &Client{nc: nc, subject: subject, enc: enc, dec: dec, timeout: defaultTimeout, prop: propagation.TraceContext{}}
	if err := applyClient(c, opts); err != nil {
		return nil, err
	}
	c.initEnvelope()
	c.reuse = len(c.before) == 0 && isTraceContext(c.prop) && enc != nil &&
		reflect.ValueOf(enc).Pointer() == reflect.ValueOf(EncodeJSONRequest).Pointer()
	return c, nil
}

// applyClient applies opts in order; nil ones are skipped.
func applyClient(c *Client, opts []ClientOption) error {
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyClient(c); err != nil {
			return err
		}
	}
	return nil
}

// NewServiceClient calls method on the service-wide subject
// rpc.{service}.{method}: any instance answers (queue group). Use it without
// discovery, or as a last-resort fallback when no instance is known.
func NewServiceClient(nc *nats.Conn, service, method string, enc EncodeRequestFunc, dec DecodeResponseFunc, opts ...ClientOption) (*Client, error) {
	subject, err := wire.ServiceSubject(service, method)
	return newNamedClient(nc, subject, err, enc, dec, opts)
}

// NewInstanceClient calls method on one instance's subject
// rpc.{service}.{method}.{instance}.
func NewInstanceClient(nc *nats.Conn, service, method, instance string, enc EncodeRequestFunc, dec DecodeResponseFunc, opts ...ClientOption) (*Client, error) {
	subject, err := wire.InstanceSubject(service, method, instance)
	return newNamedClient(nc, subject, err, enc, dec, opts)
}

// newNamedClient is the common end of the constructors that build the
// subject from names: a nil connection first, then the names' error.
func newNamedClient(nc *nats.Conn, subject string, nameErr error, enc EncodeRequestFunc, dec DecodeResponseFunc, opts []ClientOption) (*Client, error) {
	if nc == nil {
		return nil, ErrNilConn
	}
	if nameErr != nil {
		return nil, nameErr
	}
	return newClient(nc, subject, enc, dec, opts)
}

// Factory returns a go-kit sd.Factory for method of service: each instance
// ID the Instancer publishes becomes a client endpoint on that instance's
// subject, and its io.Closer (the *Client) makes later calls fail fast with
// the retryable ErrClientClosed. An invalid service, method or instance name
// makes the factory return a *wire.NameError for that instance. It panics
// with an error matching ErrInvalidOption on an option it cannot use.
//
// With WithRegistryMetadata, addressing follows the instance: an instance
// whose registry metadata has wire.MetadataRPC = wire.RPCInstance is called
// on its instance subject with the headers protocol; any other (an
// AegisSDK instance, which serves only the service-wide subject) on
// rpc.{service}.{method} in AegisSDK envelopes (WithEnvelope's format, JSON
// by default).
func Factory(nc *nats.Conn, service, method string, enc EncodeRequestFunc, dec DecodeResponseFunc, opts ...ClientOption) sd.Factory {
	var probe Client
	if err := applyClient(&probe, opts); err != nil {
		panic(err)
	}
	if lookup := probe.aegis.meta; lookup != nil {
		return addressingFactory(nc, service, method, enc, dec, lookup, opts)
	}
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		c, err := NewInstanceClient(nc, service, method, instance, enc, dec, opts...)
		if err != nil {
			return nil, nil, err
		}
		return c.Endpoint(), c, nil
	}
}

// Close makes every later call fail with ErrClientClosed. It does not touch
// the connection, which the caller owns. Idempotent.
func (c *Client) Close() error {
	c.closed.Store(true)
	return nil
}

// Endpoint returns the client as a go-kit endpoint.
func (c *Client) Endpoint() endpoint.Endpoint { return c.call }

func (c *Client) call(ctx context.Context, request any) (any, error) {
	if c.closed.Load() {
		return nil, &CallError{Subject: c.subject, Err: ErrClientClosed}
	}
	if err := ctx.Err(); err != nil {
		return nil, &CallError{Subject: c.subject, Err: err}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}

	var out *outgoing
	if c.reuse {
		out = outgoingPool.Get().(*outgoing)
		defer out.recycle()
	} else {
		out = newOutgoing()
	}
	msg := &out.msg
	msg.Subject = c.subject
	if err := c.enc(ctx, msg, request); err != nil {
		return nil, &CallError{Subject: c.subject, Err: errEncode, Cause: err}
	}
	for _, f := range c.before {
		ctx = f(ctx, msg)
	}
	c.prop.Inject(ctx, rpcheader.Carrier(msg.Header))
	v, ok := rpcheader.FormatTimeout(time.Until(deadline))
	if !ok {
		// Under a millisecond left: no reply can be counted on.
		return nil, &CallError{Subject: c.subject, Err: context.DeadlineExceeded}
	}
	if c.aegis.format == 0 { // an envelope carries its own timeout
		out.timeout[0] = v
		msg.Header[rpcheader.Timeout] = out.timeout[:]
	}
	switch c.nc.Status() {
	case nats.CLOSED, nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		return nil, &CallError{Subject: c.subject, Err: ErrConnClosed}
	}
	if max := c.nc.MaxPayload(); max > 0 {
		if size := msgSize(msg); size > max {
			return nil, &PayloadError{Subject: c.subject, Size: size, Max: max}
		}
	}

	var reply *nats.Msg
	var err error
	switch {
	case c.proven.Load():
		reply, err = c.nc.RequestMsgWithContext(ctx, msg)
	case c.probing.CompareAndSwap(false, true):
		reply, err = c.guardedRequest(ctx, msg)
		c.probing.Store(false)
	default:
		reply, err = c.nc.RequestMsgWithContext(ctx, msg)
		if err != nil && !c.proven.Load() {
			if pe := natserr.Refused(c.nc, msg.Subject, natserr.InboxPattern(c.nc)); pe != nil {
				err = pe
			}
		}
	}
	if err != nil {
		return nil, c.mapErr(ctx, err, msgSize(msg))
	}
	if !c.proven.Load() {
		c.proven.Store(true)
	}
	if e := replyError(reply); e != nil {
		return nil, e
	}
	for _, f := range c.after {
		ctx = f(ctx, reply)
	}
	response, err := c.dec(ctx, reply)
	if err != nil {
		if isRemote(err) { // the decoder found the remote side's error in the body
			return nil, err
		}
		return nil, &CallError{Subject: c.subject, Err: errDecode, Cause: err}
	}
	return response, nil
}

// outgoing is a request message and the backing array of its deadline
// header's value, in one allocation.
type outgoing struct {
	msg     nats.Msg
	timeout [1]string
}

func newOutgoing() *outgoing {
	return &outgoing{msg: nats.Msg{Header: make(nats.Header, 2)}}
}

// outgoingPool holds the request messages of clients that recycle them.
// nats.go has copied a message into its write buffer when the request call
// returns, and nothing else of this package keeps it.
var outgoingPool = sync.Pool{New: func() any { return newOutgoing() }}

func (o *outgoing) recycle() {
	clear(o.msg.Header)
	o.msg.Data = nil
	o.timeout[0] = ""
	outgoingPool.Put(o)
}

var (
	errEncode = errors.New("encode request")
	errDecode = errors.New("decode response")
)

// guardedRequest is the request, ended as soon as the server reports
// refusing its subject or the connection's inbox (a *natserr.PermissionError)
// rather than at its deadline.
func (c *Client) guardedRequest(ctx context.Context, msg *nats.Msg) (reply *nats.Msg, err error) {
	err = natserr.Do(ctx, c.nc, []string{msg.Subject, natserr.InboxPattern(c.nc)}, func(ctx context.Context) (err error) {
		reply, err = c.nc.RequestMsgWithContext(ctx, msg)
		return err
	})
	return reply, err
}

func (c *Client) mapErr(ctx context.Context, err error, size int64) error {
	var pe *natserr.PermissionError
	switch {
	case errors.As(err, &pe):
		return &CallError{Subject: c.subject, Err: pe}
	case errors.Is(err, nats.ErrNoResponders):
		return &CallError{Subject: c.subject, Err: ErrNoResponders}
	case errors.Is(err, nats.ErrConnectionDraining):
		// Only the send reports draining: the request never left. (A closed
		// connection is checked before the send; ErrConnectionClosed here
		// may come after it, so it is not retryable.)
		return &CallError{Subject: c.subject, Err: ErrConnClosed, Cause: err}
	case errors.Is(err, nats.ErrMaxPayload):
		return &PayloadError{Subject: c.subject, Size: size, Max: c.nc.MaxPayload()}
	}
	if cerr := ctx.Err(); cerr != nil {
		return &CallError{Subject: c.subject, Err: cerr, Cause: err}
	}
	if errors.Is(err, nats.ErrTimeout) {
		return &CallError{Subject: c.subject, Err: context.DeadlineExceeded, Cause: err}
	}
	return &CallError{Subject: c.subject, Err: err}
}

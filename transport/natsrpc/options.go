package natsrpc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/go-kit/kit/transport"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// ErrInvalidOption is matched (errors.Is) by the error NewService,
// NewServiceClient or NewInstanceClient returns for an option value it
// cannot use; NewClient, Factory and NewServer, which keep go-kit's shape
// without an error, panic with it. Values are refused, never clamped.
var ErrInvalidOption = errors.New("natsrpc: invalid option")

func invalid(option, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidOption, option, fmt.Sprintf(format, args...))
}

// ClientOption configures a Client (NewClient, NewServiceClient,
// NewInstanceClient, Factory).
type ClientOption interface {
	applyClient(*Client) error
}

// ServerOption configures a method's Server (NewServer, NewJSONServer).
type ServerOption interface {
	applyServer(*Server) error
}

// ServiceOption configures a Service (NewService).
type ServiceOption interface {
	applyService(*serviceConfig) error
}

// Option configures a Client and a Service alike: the settings that mean
// the same on both sides of a call (WithDefaultTimeout, WithPropagator).
type Option interface {
	ClientOption
	ServiceOption
}

// HookOption adds hooks to a Client or a Server: functions run on the
// messages around the endpoint (WithBefore, WithAfter).
type HookOption interface {
	ClientOption
	ServerOption
}

type clientOption func(*Client) error

func (f clientOption) applyClient(c *Client) error { return f(c) }

type serverOption func(*Server) error

func (f serverOption) applyServer(s *Server) error { return f(s) }

type serviceOption func(*serviceConfig) error

func (f serviceOption) applyService(c *serviceConfig) error { return f(c) }

type sharedOption struct {
	client  func(*Client) error
	service func(*serviceConfig) error
}

func (o sharedOption) applyClient(c *Client) error         { return o.client(c) }
func (o sharedOption) applyService(c *serviceConfig) error { return o.service(c) }

type hookOption struct {
	client func(*Client) error
	server func(*Server) error
}

func (o hookOption) applyClient(c *Client) error { return o.client(c) }
func (o hookOption) applyServer(s *Server) error { return o.server(s) }

// ---- hooks: Client and Server ----

// WithBefore adds functions run on the request message: on a Client after
// it is encoded, before the deadline and trace headers are set and it is
// sent; on a Server before it is decoded, for example to take metadata out
// of headers.
func WithBefore(before ...RequestFunc) HookOption {
	err := noNil("WithBefore", before)
	return hookOption{
		client: func(c *Client) error { c.before = append(c.before, before...); return err },
		server: func(s *Server) error { s.before = append(s.before, before...); return err },
	}
}

// WithAfter adds functions run on the reply message: on a Client on a
// successful reply before it is decoded; on a Server after the endpoint
// succeeded, before the response is encoded.
func WithAfter(after ...ResponseFunc) HookOption {
	err := noNil("WithAfter", after)
	return hookOption{
		client: func(c *Client) error { c.after = append(c.after, after...); return err },
		server: func(s *Server) error { s.after = append(s.after, after...); return err },
	}
}

func noNil[F any](option string, fs []F) error {
	for _, f := range fs {
		if any(f) == nil {
			return invalid(option, "nil function")
		}
	}
	return nil
}

// ---- Client and Service ----

// WithDefaultTimeout is the deadline of a call whose caller sets none
// (default 10 s). A Client bounds a call whose context has no
// deadline with it; d must be positive. A Service gives it to requests
// that arrive without one (go-kit's transport/nats and the AegisSDK send
// none): the handler's context ends that long after the request arrived,
// and a request still waiting for a worker then is dropped with a 504; d
// <= 0 leaves such requests without a deadline. A caller's deadline always
// wins.
func WithDefaultTimeout(d time.Duration) Option {
	return sharedOption{
		client: func(c *Client) error {
			if d <= 0 {
				return invalid("WithDefaultTimeout", "%v is not positive", d)
			}
			c.timeout = d
			return nil
		},
		service: func(c *serviceConfig) error { c.timeout = max(d, 0); return nil },
	}
}

// WithPropagator sets how trace context is injected into request headers
// (Client) and extracted from them (Service). The default is
// propagation.TraceContext{} (W3C traceparent and tracestate); pass
// otel.GetTextMapPropagator() to follow the global setting.
func WithPropagator(p propagation.TextMapPropagator) Option {
	var err error
	if p == nil {
		err = invalid("WithPropagator", "nil propagator")
	}
	return sharedOption{
		client:  func(c *Client) error { c.prop = p; return err },
		service: func(c *serviceConfig) error { c.prop = p; return err },
	}
}

// ---- Client ----

// WithEnvelope makes a Client speak AegisSDK envelopes in format f
// (EnvelopeJSON or EnvelopeMsgpack; replies are read in either) instead of
// the headers protocol. The request encoder's output must be a JSON object:
// it becomes the envelope's params, converted to msgpack for
// EnvelopeMsgpack. The envelope's method and target are the method and
// service of the client's subject (rpc.{service}.{method}[.{instance}]);
// its timeout is the caller's remaining time in seconds; its trace_id is
// the W3C trace ID of the caller's span in UUID form, if there is one. The
// Kitnats-Timeout header is not sent (the timeout is in the envelope), so a
// kitnats Service answers in envelopes too; trace headers still are.
//
// On success the response decoder gets a message whose Data is the result
// as JSON. success:false becomes an *EnvelopeError with the remote message,
// not retryable; a NOT_ACTIVE answer in either of AegisSDK's shapes an
// *EnvelopeError that matches ErrNotActive and is Retryable. A reply that
// is not a valid envelope is a decode error, never a success.
//
// With WithRegistryMetadata, Factory uses envelopes only for instances that
// do not serve instance subjects (see Factory).
func WithEnvelope(f EnvelopeFormat) ClientOption {
	return clientOption(func(c *Client) error {
		if !f.valid() {
			return invalid("WithEnvelope", "format %d is neither EnvelopeJSON nor EnvelopeMsgpack", f)
		}
		c.aegis.format = f
		return nil
	})
}

// WithEnvelopeSource sets the envelope's source, the caller's instance ID
// (null by default). It does not turn envelopes on.
func WithEnvelopeSource(instance string) ClientOption {
	return clientOption(func(c *Client) error { c.aegis.source = instance; return nil })
}

// WithRegistryMetadata lets Factory address each instance as its registry
// metadata says (see Factory): lookup returns an instance's metadata, ok
// false when it is not known. For a natskv.Instancer:
//
//	func(id string) (map[string]string, bool) {
//		a, ok := instancer.Describe(id)
//		return a.Metadata, ok
//	}
//
// Only Factory reads it.
func WithRegistryMetadata(lookup func(instance string) (metadata map[string]string, ok bool)) ClientOption {
	return clientOption(func(c *Client) error {
		if lookup == nil {
			return invalid("WithRegistryMetadata", "nil lookup")
		}
		c.aegis.meta = lookup
		return nil
	})
}

// ---- Server ----

// WithFinalizer adds functions a Server runs at the end of every request,
// whatever happened: err is the failure that was replied, or nil.
func WithFinalizer(f ...func(ctx context.Context, msg, reply *nats.Msg, err error)) ServerOption {
	err := noNil("WithFinalizer", f)
	return serverOption(func(s *Server) error { s.finalizer = append(s.finalizer, f...); return err })
}

// WithErrorEncoder replaces DefaultErrorEncoder. An encoder that does not
// write the status headers makes failures look like successes to the
// client.
func WithErrorEncoder(ee ErrorEncoder) ServerOption {
	return serverOption(func(s *Server) error {
		if ee == nil {
			return invalid("WithErrorEncoder", "nil encoder")
		}
		s.errorEncoder = ee
		return nil
	})
}

// WithErrorHandler receives every error a Server replies, for logging or
// metrics; replies are sent whatever it does.
func WithErrorHandler(h transport.ErrorHandler) ServerOption {
	return serverOption(func(s *Server) error { s.errorHandler = h; return nil })
}

// ---- Service ----

// maxWorkers bounds WithMaxConcurrent and WithMaxPending.
const maxWorkers = 1 << 20

// WithMaxConcurrent bounds the requests a Service handles at once, over
// all methods (default 64, at most 1<<20). Each method keeps a reserve of
// these workers that the others cannot take; when a method may not start
// another request, the request waits in the method's queue
// (WithMaxPending) or is refused with 503.
func WithMaxConcurrent(n int) ServiceOption {
	return serviceOption(func(c *serviceConfig) error {
		if n < 1 || n > maxWorkers {
			return invalid("WithMaxConcurrent", "%d is not in [1, %d]", n, maxWorkers)
		}
		c.max = n
		return nil
	})
}

// WithMaxPending bounds the requests of one method waiting for a worker
// (default 256, at most 1<<20; 0 for none). Requests beyond it are refused
// with 503 (CodeUnavailable, retryable elsewhere) at once, as are requests
// whose wait, at the method's measured service time, would outlast their
// deadline.
func WithMaxPending(n int) ServiceOption {
	return serviceOption(func(c *serviceConfig) error {
		if n < 0 || n > maxWorkers {
			return invalid("WithMaxPending", "%d is not in [0, %d]", n, maxWorkers)
		}
		c.pending = n
		return nil
	})
}

// WithLogger logs a Service's panics, malformed headers, refused requests
// and failed replies. nil (the default) logs nothing.
func WithLogger(l log.Logger) ServiceOption {
	return serviceOption(func(c *serviceConfig) error { c.logger = l; return nil })
}

// WithVersion is the semantic version a Service reports to micro discovery
// (default "0.0.0").
func WithVersion(v string) ServiceOption {
	return serviceOption(func(c *serviceConfig) error {
		if !semVer.MatchString(v) {
			return invalid("WithVersion", "%s is not a semantic version", quote(v))
		}
		c.version = v
		return nil
	})
}

// WithDescription is the description a Service reports to micro discovery.
func WithDescription(d string) ServiceOption {
	return serviceOption(func(c *serviceConfig) error { c.description = d; return nil })
}

// WithMetadata adds metadata a Service reports to micro discovery. The map
// is copied.
func WithMetadata(m map[string]string) ServiceOption {
	return serviceOption(func(c *serviceConfig) error {
		if c.metadata == nil {
			c.metadata = make(map[string]string, len(m)+1)
		}
		maps.Copy(c.metadata, m)
		return nil
	})
}

// WithReplyPrefixes sets the reply subjects a Service answers: a request
// or a discovery request is answered only when its reply subject is one of
// prefixes followed by a dot and more ("_INBOX" by default, nats.go's
// inbox prefix), the reply prefixes of the permission templates
// (permissions.Template.ReplyPrefix). Give the prefixes of callers that
// connect with nats.CustomInboxPrefix outside "_INBOX.". A request whose
// reply subject is elsewhere is neither run nor answered, and counted as
// rejected: a reply there would be a write the caller chose and could not
// make itself, made with the Service's permissions — onto another
// service's RPC subject, or over the instance's registry record. Each
// prefix is subject tokens without wildcards, not starting with '$' (NATS's
// own APIs); a trailing dot is dropped.
func WithReplyPrefixes(prefixes ...string) ServiceOption {
	clean := make([]string, 0, len(prefixes))
	var err error
	for _, p := range prefixes {
		p = strings.TrimSuffix(p, ".")
		if e := validReplyPrefix(p); e != nil {
			err = invalid("WithReplyPrefixes", "%s: %v", quote(p), e)
			break
		}
		clean = append(clean, p+".")
	}
	if err == nil && len(clean) == 0 {
		err = invalid("WithReplyPrefixes", "no prefix")
	}
	return serviceOption(func(c *serviceConfig) error {
		c.replyPrefixes = clean
		return err
	})
}

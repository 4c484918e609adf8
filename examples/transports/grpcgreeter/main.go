// Command grpcgreeter is a go-kit gRPC service (transport/grpc over
// grpc-go) discovered through the NATS registry and called through the
// kitnats chain.
//
// Three instances serve kitnats.example.Greeter/Hello on 127.0.0.1 and
// register their address with natskv.WithAddress("grpc", addr). The client
// discovers them with natskv.WithAddresses("grpc") — host:port strings, a
// grpc.NewClient target each — and keeps one grpc.ClientConn per instance,
// closed when the instance leaves. Under load, one instance crashes,
// another drains, and both come back on the same ports; the report shows
// every call answered:
//
//	go run ./grpcgreeter
//
// The messages are protobuf's well-known Struct, so the example needs no
// generated code; a real service uses its generated stubs the same way.
// kitnats' retry and breaker read grpc-go's status codes (UNAVAILABLE,
// RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED...) without the library importing
// grpc-go: see the package documentation of middleware/retry.
package main

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	grpctransport "github.com/go-kit/kit/transport/grpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aegis-sdk/kitnats/examples/transports"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

const (
	service = "greeter"
	method  = "hello"

	grpcService = "kitnats.example.Greeter"
	grpcMethod  = "Hello"
)

// HelloRequest and HelloResponse are the endpoint's types; on the wire
// they are Structs {"name"} and {"greeting", "instance"}.
type HelloRequest struct{ Name string }

type HelloResponse struct {
	Greeting string
	Instance string // who answered, so the demo can count
}

// traceContext carries W3C trace context in gRPC metadata.
var traceContext = propagation.TraceContext{}

// mdCarrier is gRPC metadata as an otel TextMapCarrier (lower-case keys,
// as gRPC requires).
type mdCarrier metadata.MD

func (c mdCarrier) Get(k string) string {
	if v := metadata.MD(c).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c mdCarrier) Set(k, v string) { metadata.MD(c).Set(k, v) }
func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// ---- server ----

// Greeter is one instance's service. Fail, when set to a gRPC code, makes
// every call fail with it (tests use it to break an instance).
type Greeter struct {
	ID   string
	Fail atomic.Uint32
	kit  *grpctransport.Server
}

// greeterServer is the service's handler type, as generated code declares.
type greeterServer interface {
	Hello(context.Context, *structpb.Struct) (*structpb.Struct, error)
}

// serviceDesc is what protoc-gen-go-grpc would generate for
//
//	service Greeter { rpc Hello(google.protobuf.Struct) returns (google.protobuf.Struct); }
var serviceDesc = grpc.ServiceDesc{
	ServiceName: grpcService,
	HandlerType: (*greeterServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: grpcMethod,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(structpb.Struct)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(greeterServer).Hello(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + grpcService + "/" + grpcMethod}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(greeterServer).Hello(ctx, req.(*structpb.Struct))
			})
		},
	}},
	Metadata: "greeter.proto",
}

// NewGreeter is instance id's service: go-kit's gRPC server over the
// endpoint, traced as a child of the caller's attempt.
func NewGreeter(id string, tp trace.TracerProvider) *Greeter {
	g := &Greeter{ID: id}
	var opts []tracing.Option
	if tp != nil {
		opts = append(opts, tracing.WithTracerProvider(tp))
	}
	e := tracing.Server(service, method, opts...)(g.hello)
	g.kit = grpctransport.NewServer(e,
		func(_ context.Context, r any) (any, error) {
			return HelloRequest{Name: r.(*structpb.Struct).GetFields()["name"].GetStringValue()}, nil
		},
		func(_ context.Context, r any) (any, error) {
			resp := r.(HelloResponse)
			return structpb.NewStruct(map[string]any{"greeting": resp.Greeting, "instance": resp.Instance})
		},
		grpctransport.ServerBefore(func(ctx context.Context, md metadata.MD) context.Context {
			return traceContext.Extract(ctx, mdCarrier(md))
		}),
	)
	return g
}

func (g *Greeter) hello(_ context.Context, request any) (any, error) {
	if code := g.Fail.Load(); code != 0 {
		return nil, status.Error(codes.Code(code), "failing on purpose")
	}
	return HelloResponse{Greeting: "Hello, " + request.(HelloRequest).Name, Instance: g.ID}, nil
}

// Hello implements greeterServer through go-kit's server.
func (g *Greeter) Hello(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	_, resp, err := g.kit.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*structpb.Struct), nil
}

// GRPCServer is a grpc.Server on 127.0.0.1 (transports.Server).
type GRPCServer struct {
	srv  *grpc.Server
	addr string
	done chan struct{}
}

// Listen serves g on addr ("127.0.0.1:0" for a free port; a crashed
// instance comes back on its old address).
func Listen(addr string, g *Greeter) (*GRPCServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &GRPCServer{srv: grpc.NewServer(), addr: ln.Addr().String(), done: make(chan struct{})}
	s.srv.RegisterService(&serviceDesc, g)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *GRPCServer) Addr() string { return s.addr }

func (s *GRPCServer) Kill() {
	s.srv.Stop()
	<-s.done
}

func (s *GRPCServer) Shutdown(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.srv.Stop() // ends GracefulStop too
		<-stopped
	}
	<-s.done
	return ctx.Err()
}

// ---- client ----

// lingerConn closes an instance's ClientConn once the calls in flight on
// it are done. An endpoint set (kitnats' lb.EndpointSet as go-kit's own)
// closes an instance's io.Closer as soon as the instance leaves the set —
// for a draining instance, while calls it would finish are still running —
// and closing a ClientConn cancels its calls (CANCELED, "the client
// connection is closing"). The last call to finish closes it instead; a
// call that finds it closed was never sent and says so (Retryable), so
// retry moves it to another instance.
type lingerConn struct {
	cc       *grpc.ClientConn
	mu       sync.Mutex
	inflight int
	closing  bool
	closed   bool
}

// errConnClosed: the instance left the set and its connection is closed;
// the call was not sent.
type errConnClosed struct{}

func (errConnClosed) Error() string {
	return "grpcgreeter: instance's connection closed, call not sent"
}
func (errConnClosed) Retryable() bool { return true }

func (l *lingerConn) wrap(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, errConnClosed{}
		}
		l.inflight++
		l.mu.Unlock()
		defer l.done()
		return next(ctx, request)
	}
}

func (l *lingerConn) done() {
	l.mu.Lock()
	l.inflight--
	last := l.closing && l.inflight == 0 && !l.closed
	l.closed = l.closed || last
	l.mu.Unlock()
	if last {
		_ = l.cc.Close()
	}
}

func (l *lingerConn) Close() error {
	l.mu.Lock()
	l.closing = true
	now := l.inflight == 0 && !l.closed
	l.closed = l.closed || now
	l.mu.Unlock()
	if now {
		return l.cc.Close()
	}
	return nil
}

// Factory is the go-kit sd.Factory of the method, written as for sd/consul:
// instance is host:port; each instance gets its own ClientConn, closed when
// the instance leaves the set and its calls are done.
func Factory(opts ...grpc.DialOption) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
		cc, err := grpc.NewClient(instance, opts...)
		if err != nil {
			return nil, nil, err
		}
		e := grpctransport.NewClient(cc, grpcService, grpcMethod,
			func(_ context.Context, r any) (any, error) {
				return structpb.NewStruct(map[string]any{"name": r.(HelloRequest).Name})
			},
			func(_ context.Context, r any) (any, error) {
				f := r.(*structpb.Struct).GetFields()
				return HelloResponse{Greeting: f["greeting"].GetStringValue(), Instance: f["instance"].GetStringValue()}, nil
			},
			&structpb.Struct{},
			grpctransport.ClientBefore(func(ctx context.Context, md *metadata.MD) context.Context {
				traceContext.Inject(ctx, mdCarrier(*md))
				return ctx
			}),
		).Endpoint()
		l := &lingerConn{cc: cc}
		return l.wrap(e), l, nil
	}
}

// Hello calls the method through c: an idempotent call, so one cut off
// mid-flight by a crash is sent to another instance too.
func Hello(ctx context.Context, c *transports.Client, name string) (HelloResponse, error) {
	resp, err := c.Call(retry.Idempotent(ctx), HelloRequest{Name: name})
	if err != nil {
		return HelloResponse{}, err
	}
	return resp.(HelloResponse), nil
}

// ---- the demo ----

func main() { transports.Main("grpcgreeter", run) }

// run is the demo: three instances, a client under load, a crash, a drain,
// both back.
func run(ctx context.Context, d time.Duration, workers int) (transports.Report, error) {
	return transports.Demo{
		Service:   service,
		Transport: "grpc",
		Listen: func(id, addr string) (transports.Server, error) {
			return Listen(addr, NewGreeter(id, nil))
		},
		Call: func(instancer sd.Instancer) (func(context.Context) (string, error), func(), error) {
			client, err := transports.NewClient(instancer, Factory(), transports.Config{Service: service, Method: method})
			if err != nil {
				return nil, nil, err
			}
			call := func(ctx context.Context) (string, error) {
				resp, err := Hello(ctx, client, "kitnats")
				return resp.Instance, err
			}
			return call, client.Close, nil
		},
	}.Run(ctx, d, workers)
}

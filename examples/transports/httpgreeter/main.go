// Command httpgreeter is a go-kit HTTP service (transport/http) discovered
// through the NATS registry and called through the kitnats chain.
//
// Three instances serve POST /hello on 127.0.0.1 and register their
// address with natskv.WithAddress("http", addr). The client discovers them
// with natskv.WithAddresses("http") — its instance strings are host:port,
// as sd/consul's are — and builds its endpoints with a factory written as
// for any go-kit registry. Under load, one instance crashes, another
// drains, and both come back on the same ports; the report shows every
// call answered:
//
//	go run ./httpgreeter
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	httptransport "github.com/go-kit/kit/transport/http"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/examples/transports"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

const (
	service = "greeter"
	method  = "hello"
)

// HelloRequest and HelloResponse are the method's wire types (JSON).
type HelloRequest struct {
	Name string `json:"name"`
}

type HelloResponse struct {
	Greeting string `json:"greeting"`
	Instance string `json:"instance"` // who answered, so the demo can count
}

// StatusError is an HTTP status as an error, both ways: the server's
// endpoint returns one to choose the status go-kit's DefaultErrorEncoder
// writes (go-kit's StatusCoder), and the client's decoder returns one for
// a non-2xx answer, which is how kitnats' retry and breaker tell a 503
// (not processed: try another instance) from a 404 (an answer).
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string   { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Msg) }
func (e *StatusError) StatusCode() int { return e.Code }

// traceContext carries W3C trace context in HTTP headers.
var traceContext = propagation.TraceContext{}

// ---- server ----

// Greeter is one instance's service. Fail, when set to a status, makes
// every call fail with it (tests use it to break an instance).
type Greeter struct {
	ID   string
	Fail atomic.Int64
}

func (g *Greeter) hello(_ context.Context, request any) (any, error) {
	if code := g.Fail.Load(); code != 0 {
		return nil, &StatusError{Code: int(code), Msg: "failing on purpose"}
	}
	req := request.(HelloRequest)
	return HelloResponse{Greeting: "Hello, " + req.Name, Instance: g.ID}, nil
}

// Handler is the instance's go-kit HTTP server: POST /hello, traced as a
// child of the caller's attempt (trace context from the headers).
func (g *Greeter) Handler(tp trace.TracerProvider) http.Handler {
	var opts []tracing.Option
	if tp != nil {
		opts = append(opts, tracing.WithTracerProvider(tp))
	}
	e := tracing.Server(service, method, opts...)(g.hello)
	mux := http.NewServeMux()
	mux.Handle("POST /hello", httptransport.NewServer(e,
		func(_ context.Context, r *http.Request) (any, error) {
			var req HelloRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
				return nil, &StatusError{Code: http.StatusBadRequest, Msg: "bad request body"}
			}
			return req, nil
		},
		httptransport.EncodeJSONResponse,
		httptransport.ServerBefore(func(ctx context.Context, r *http.Request) context.Context {
			return traceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}),
	))
	return mux
}

// HTTPServer is an http.Server on 127.0.0.1 (transports.Server).
type HTTPServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// Listen serves h on addr ("127.0.0.1:0" for a free port; a crashed
// instance comes back on its old address).
func Listen(addr string, h http.Handler) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &HTTPServer{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *HTTPServer) Addr() string { return s.addr }

func (s *HTTPServer) Kill() {
	_ = s.srv.Close()
	<-s.done
}

func (s *HTTPServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// ---- client ----

// Factory is the go-kit sd.Factory of the method, written as for sd/consul:
// instance is host:port (or a URL), the endpoint posts JSON to
// {instance}/hello. A non-2xx answer is a *StatusError; the attempt's
// trace context goes in the headers.
func Factory(client *http.Client) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		if !strings.HasPrefix(instance, "http") {
			instance = "http://" + instance
		}
		u, err := url.Parse(instance)
		if err != nil {
			return nil, nil, err
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/hello"
		return httptransport.NewClient(http.MethodPost, u, httptransport.EncodeJSONRequest, decodeHello,
			httptransport.SetClient(client),
			httptransport.ClientBefore(func(ctx context.Context, r *http.Request) context.Context {
				traceContext.Inject(ctx, propagation.HeaderCarrier(r.Header))
				return ctx
			}),
		).Endpoint(), nil, nil
	}
}

func decodeHello(_ context.Context, r *http.Response) (any, error) {
	if r.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(r.Body, 256))
		return nil, &StatusError{Code: r.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	var resp HelloResponse
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("decode hello response: %w", err)
	}
	return resp, nil
}

// NewHTTPClient is an http.Client for many calls to few hosts: enough idle
// connections per host that a busy client does not open one per call.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
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

func main() { transports.Main("httpgreeter", run) }

// run is the demo: three instances, a client under load, a crash, a drain,
// both back.
func run(ctx context.Context, d time.Duration, workers int) (transports.Report, error) {
	return transports.Demo{
		Service:   service,
		Transport: "http",
		Listen: func(id, addr string) (transports.Server, error) {
			g := &Greeter{ID: id}
			return Listen(addr, g.Handler(nil))
		},
		Call: func(instancer sd.Instancer) (func(context.Context) (string, error), func(), error) {
			hc := NewHTTPClient()
			client, err := transports.NewClient(instancer, Factory(hc), transports.Config{Service: service, Method: method})
			if err != nil {
				return nil, nil, err
			}
			call := func(ctx context.Context) (string, error) {
				resp, err := Hello(ctx, client, "kitnats")
				return resp.Instance, err
			}
			return call, func() { client.Close(); hc.CloseIdleConnections() }, nil
		},
	}.Run(ctx, d, workers)
}

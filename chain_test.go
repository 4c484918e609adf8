package kitnats_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	service = "echo"
	method  = "echo"
)

type echoRequest struct {
	Payload string `json:"payload"`
}

type echoResponse struct {
	Payload  string `json:"payload"`
	Instance string `json:"instance"`
}

// fastLiveness keeps leases short so a crash leaves the registry quickly.
var fastLiveness = natskv.Options(natskv.WithHeartbeat(200*time.Millisecond), natskv.WithTTL(time.Second))

func newBucket(tb testing.TB, nc *nats.Conn) *natskv.Bucket {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "registry", LimitMarkerTTL: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// echoInstance is one server process: its own connection, a natsrpc service
// and a registrar. It is stopped at cleanup unless the test crashed or
// drained it first.
type echoInstance struct {
	id  string
	nc  *nats.Conn
	svc *natsrpc.Service
	reg *natskv.Registrar
}

func startEcho(tb testing.TB, url string, b *natskv.Bucket, id string) *echoInstance {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc := natstest.Connect(tb, url)
	srv := natsrpc.NewJSONServer(func(_ context.Context, req echoRequest) (echoResponse, error) {
		return echoResponse{Payload: req.Payload, Instance: id}, nil
	})
	svc, err := natsrpc.NewService(ctx, nc, service, id, map[string]*natsrpc.Server{method: srv})
	if err != nil {
		tb.Fatal(err)
	}
	reg, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, nil, fastLiveness)
	if err != nil {
		tb.Fatal(err)
	}
	if err := reg.RegisterContext(ctx); err != nil {
		tb.Fatal(err)
	}
	in := &echoInstance{id: id, nc: nc, svc: svc, reg: reg}
	tb.Cleanup(func() {
		reg.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = svc.Shutdown(sctx)
	})
	return in
}

// crash: the process dies — no deregistration, connection gone.
func (in *echoInstance) crash() {
	in.reg.Close()
	in.nc.Close()
}

// drain: leave the registry, then finish in-flight requests.
func (in *echoInstance) drain(ctx context.Context) error {
	if err := in.reg.DeregisterContext(ctx); err != nil {
		return err
	}
	return in.svc.Shutdown(ctx)
}

// chain is the whole client side: Instancer → endpoint set → least-loaded
// balancer → retry → per-instance breaker and attempt spans → natsrpc, under
// a client span.
type chain struct {
	endpoint  endpoint.Endpoint
	set       *lb.EndpointSet
	instancer *natskv.Instancer
}

func newChain(tb testing.TB, nc *nats.Conn, b *natskv.Bucket, retryOpts ...retry.Option) *chain {
	tb.Helper()
	otel := tracing.WithTracerProvider(noop.NewTracerProvider())
	instancer, err := natskv.NewInstancer(b, service, nil, fastLiveness)
	if err != nil {
		tb.Fatal(err)
	}
	factory := natsrpc.JSONFactory[echoResponse](nc, service, method)
	factory = breaker.Factory(factory, breaker.WithSettings(gobreaker.Settings{Timeout: time.Second}))
	factory = tracing.Factory(factory, service, method, otel)
	set := lb.NewEndpointSet(instancer, factory, nil)
	tb.Cleanup(func() {
		set.Close()
		instancer.Stop()
	})
	opts := append([]retry.Option{retry.WithObserver(tracing.RetryObserver(service, method, otel))}, retryOpts...)
	e, err := retry.New(lb.New(set, lb.LeastLoaded()), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return &chain{endpoint: tracing.Client(service, method, otel)(e), set: set, instancer: instancer}
}

func (c *chain) waitInstances(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(c.set.Instances()) != n {
		if time.Now().After(deadline) {
			tb.Fatalf("want %d instances, have %v", n, c.set.Instances())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkChain measures the whole client chain against a plain nats.go
// request to a plain echo responder, in the same run, over the same
// server: raw echoes the bytes, raw-json does the chain's JSON work too.
func BenchmarkChain(b *testing.B) {
	s := natstest.Start(b)
	payload := echoRequest{Payload: strings.Repeat("x", 100)} // 128 bytes of JSON

	b.Run("raw", func(b *testing.B) {
		nc := natstest.Connect(b, s.URL())
		srvConn := natstest.Connect(b, s.URL())
		sub, err := srvConn.Subscribe("raw.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := srvConn.Flush(); err != nil {
			b.Fatal(err)
		}
		body := []byte(`{"payload":"` + payload.Payload + `"}`)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := nc.RequestWithContext(ctx, "raw.echo", body); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})

	// raw-json: raw plus the JSON work the chain does on both sides (decode
	// the request, encode the response, and the same on the client): the
	// baseline the chain's own cost is measured against.
	b.Run("raw-json", func(b *testing.B) {
		nc := natstest.Connect(b, s.URL())
		srvConn := natstest.Connect(b, s.URL())
		sub, err := srvConn.Subscribe("raw.json", func(m *nats.Msg) {
			var req echoRequest
			if err := json.Unmarshal(m.Data, &req); err != nil {
				return
			}
			resp, _ := json.Marshal(echoResponse{Payload: req.Payload, Instance: "echo-1"})
			_ = m.Respond(resp)
		})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := srvConn.Flush(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			body, err := json.Marshal(payload)
			if err != nil {
				b.Fatal(err)
			}
			reply, err := nc.RequestWithContext(ctx, "raw.json", body)
			if err != nil {
				b.Fatal(err)
			}
			var resp echoResponse
			if err := json.Unmarshal(reply.Data, &resp); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})

	b.Run("full", func(b *testing.B) {
		nc := natstest.Connect(b, s.URL())
		bucket := newBucket(b, nc)
		startEcho(b, s.URL(), bucket, "echo-1")
		c := newChain(b, nc, bucket)
		c.waitInstances(b, 1)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := natsrpc.Call[echoResponse](ctx, c.endpoint, payload); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})
}

package natsrpc_test

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitnats "github.com/go-kit/kit/transport/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

type benchMsg struct {
	ID   int    `json:"id"`
	Body string `json:"body"`
}

// benchPayload is a benchMsg whose JSON encoding is exactly 128 bytes.
func benchPayload(tb testing.TB) benchMsg {
	m := benchMsg{ID: 1}
	b, _ := json.Marshal(m)
	m.Body = strings.Repeat("x", 128-len(b))
	if b, _ = json.Marshal(m); len(b) != 128 {
		tb.Fatalf("payload is %d bytes, want 128", len(b))
	}
	return m
}

func echo(_ context.Context, m benchMsg) (benchMsg, error) { return m, nil }

// BenchmarkRequestReply compares one request-reply round trip with a
// 128-byte JSON payload across:
//
//	raw             nats.Conn.Request to a plain responder, with the same JSON
//	                decoding and encoding on both sides as the others do
//	gokit           go-kit transport/nats Publisher and Subscriber, JSON codecs
//	natsrpc         this package: Service and Client, JSON codecs
//	raw-hdr         raw, plus the one deadline header natsrpc sends: what NATS
//	                headers cost by themselves (nats.go and the server)
//	raw-bytes       nats.Conn.Request to a responder echoing the bytes, no codec
//	micro           a bare micro endpoint that echoes the bytes (micro's own cost)
func BenchmarkRequestReply(b *testing.B) {
	srv := natstest.Start(b)
	snc := natstest.Connect(b, srv.URL())
	cnc := natstest.Connect(b, srv.URL())
	payload := benchPayload(b)
	raw, _ := json.Marshal(payload)

	// raw: the same JSON work as the others, on plain nats.go calls.
	rawSub, err := snc.Subscribe("bench.raw", func(m *nats.Msg) {
		var v benchMsg
		if err := json.Unmarshal(m.Data, &v); err != nil {
			return
		}
		b, _ := json.Marshal(v)
		_ = m.Respond(b)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rawSub.Unsubscribe()
	// raw-bytes: no codec at all, the floor.
	bytesSub, err := snc.Subscribe("bench.bytes", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer bytesSub.Unsubscribe()

	// micro, bare
	msvc, err := micro.AddService(snc, micro.Config{Name: "benchmicro", Version: "0.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "bench.micro", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })}})
	if err != nil {
		b.Fatal(err)
	}
	defer msvc.Stop()

	// gokit
	gkSub := kitnats.NewSubscriber(
		endpoint.Endpoint(func(_ context.Context, req any) (any, error) { return req, nil }),
		func(_ context.Context, m *nats.Msg) (any, error) {
			var v benchMsg
			err := json.Unmarshal(m.Data, &v)
			return v, err
		},
		kitnats.EncodeJSONResponse,
	)
	gs, err := snc.QueueSubscribe("bench.gokit", "bench", gkSub.ServeMsg(snc))
	if err != nil {
		b.Fatal(err)
	}
	defer gs.Unsubscribe()
	gkPub := kitnats.NewPublisher(cnc, "bench.gokit", kitnats.EncodeJSONRequest,
		func(_ context.Context, m *nats.Msg) (any, error) {
			var v benchMsg
			err := json.Unmarshal(m.Data, &v)
			return v, err
		}).Endpoint()

	// natsrpc
	methods := map[string]*natsrpc.Server{"echo": natsrpc.NewJSONServer(echo)}
	svc, err := natsrpc.NewService(context.Background(), snc, "bench", "i1", methods)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	client, err := natsrpc.NewJSONServiceClient[benchMsg](cnc, "bench", "echo")
	if err != nil {
		b.Fatal(err)
	}

	callers := []benchCaller{
		{"raw", func(context.Context) error {
			data, err := json.Marshal(payload)
			if err != nil {
				return err
			}
			m, err := cnc.Request("bench.raw", data, 5*time.Second)
			if err != nil {
				return err
			}
			var v benchMsg
			return json.Unmarshal(m.Data, &v)
		}},
		{"gokit", func(ctx context.Context) error {
			_, err := gkPub(ctx, payload)
			return err
		}},
		{"natsrpc", func(ctx context.Context) error {
			_, err := natsrpc.Call[benchMsg](ctx, client.Endpoint(), payload)
			return err
		}},
		{"raw-hdr", func(context.Context) error {
			data, err := json.Marshal(payload)
			if err != nil {
				return err
			}
			m, err := cnc.RequestMsg(&nats.Msg{Subject: "bench.raw", Data: data, Header: nats.Header{natsrpc.HeaderTimeout: {"59999"}}}, 5*time.Second)
			if err != nil {
				return err
			}
			var v benchMsg
			return json.Unmarshal(m.Data, &v)
		}},
		{"raw-bytes", func(context.Context) error {
			_, err := cnc.Request("bench.bytes", raw, 5*time.Second)
			return err
		}},
		{"micro", func(context.Context) error {
			_, err := cnc.Request("bench.micro", raw, 5*time.Second)
			return err
		}},
	}
	b.Run("serial", func(b *testing.B) {
		runCallers(b, callers, func(b *testing.B, ctx context.Context, call func(context.Context) error) {
			for b.Loop() {
				if err := call(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("parallel", func(b *testing.B) {
		runCallers(b, callers, func(b *testing.B, ctx context.Context, call func(context.Context) error) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	})
}

type benchCaller struct {
	name string
	call func(ctx context.Context) error
}

// runCallers runs each caller as a sub-benchmark, reporting allocations and
// CPU per op; loop makes the calls, serially or in parallel.
func runCallers(b *testing.B, callers []benchCaller, loop func(b *testing.B, ctx context.Context, call func(context.Context) error)) {
	for _, c := range callers {
		b.Run(c.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ReportAllocs()
			cpu := cpuTime()
			loop(b, ctx, c.call)
			reportCPU(b, cpu)
		})
	}
}

// cpuTime is the process's user+system CPU time. The embedded NATS server
// runs in the process, so CPU per op covers client, server and broker: a
// figure that the shared machine's noise disturbs far less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/op")
}

package natsrpc_test

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitnats "github.com/go-kit/kit/transport/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
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
//
// On a shared machine, compare ratios from BenchmarkRequestReplyPaired.
func BenchmarkRequestReply(b *testing.B) {
	callers := requestReplyCallers(b)
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

// requestReplyCallers starts the responders of BenchmarkRequestReply and
// returns a caller of each.
func requestReplyCallers(b *testing.B) []benchCaller {
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
	b.Cleanup(func() { rawSub.Unsubscribe() })
	// raw-bytes: no codec at all, the floor.
	bytesSub, err := snc.Subscribe("bench.bytes", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bytesSub.Unsubscribe() })

	// micro, bare
	msvc, err := micro.AddService(snc, micro.Config{Name: "benchmicro", Version: "0.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "bench.micro", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { msvc.Stop() })

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
	b.Cleanup(func() { gs.Unsubscribe() })
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
	b.Cleanup(func() { svc.Shutdown(context.Background()) })
	client, err := natsrpc.NewServiceClient(cnc, "bench", "echo", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[benchMsg])
	if err != nil {
		b.Fatal(err)
	}

	return []benchCaller{
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
			m, err := cnc.RequestMsg(&nats.Msg{Subject: "bench.raw", Data: data, Header: nats.Header{rpcheader.Timeout: {"59999"}}}, 5*time.Second)
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
}

// BenchmarkRequestReplyPaired compares the callers of BenchmarkRequestReply
// on a shared, noisy machine, where load drifting over the seconds each
// sub-benchmark of BenchmarkRequestReply runs swamps differences of a few
// percent. Each op is one round in which every caller makes a batch of
// calls in turn, the order rotating from round to round, so drifting load
// falls on all of them alike; the metrics are medians over rounds of each
// caller's time relative to raw's in the same round ("natsrpc/raw"), and of
// natsrpc's relative to gokit's, by wall time and by the process's CPU time
// ("-cpu"). Serially, and with GOMAXPROCS callers at once. Run it for ten
// seconds or more (-benchtime 10s): an op is some milliseconds.
func BenchmarkRequestReplyPaired(b *testing.B) {
	callers := requestReplyCallers(b)
	index := map[string]int{}
	for i, c := range callers {
		index[c.name] = i
	}
	const batch = 20
	for _, par := range []int{1, runtime.GOMAXPROCS(0)} {
		name := "serial"
		if par > 1 {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			wall := make([][]float64, len(callers)) // per caller, per round: its time / raw's
			cpu := make([][]float64, len(callers))
			var gkWall, gkCPU []float64
			took := make([]time.Duration, len(callers))
			used := make([]time.Duration, len(callers))
			round := 0
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				for k := range callers {
					i := (k + round) % len(callers)
					c0, t0 := cpuTime(), time.Now()
					var wg sync.WaitGroup
					for range par {
						wg.Go(func() {
							for range batch {
								if err := callers[i].call(ctx); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					took[i], used[i] = time.Since(t0), cpuTime()-c0
				}
				cancel()
				for i := range callers {
					wall[i] = append(wall[i], float64(took[i])/float64(took[0]))
					cpu[i] = append(cpu[i], float64(used[i])/float64(max(used[0], 1)))
				}
				n, g := index["natsrpc"], index["gokit"]
				gkWall = append(gkWall, float64(took[n])/float64(took[g]))
				gkCPU = append(gkCPU, float64(used[n])/float64(max(used[g], 1)))
				round++
			}
			for i, c := range callers[1:] {
				b.ReportMetric(median(wall[i+1]), c.name+"/raw")
				b.ReportMetric(median(cpu[i+1]), c.name+"/raw-cpu")
			}
			b.ReportMetric(median(gkWall), "natsrpc/gokit")
			b.ReportMetric(median(gkCPU), "natsrpc/gokit-cpu")
		})
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
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

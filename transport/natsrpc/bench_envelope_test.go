package natsrpc_test

import (
	"context"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// BenchmarkEnvelope compares one round trip to a natsrpc Service with the
// 128-byte JSON payload of BenchmarkRequestReply, by protocol:
//
//	headers           this package's own: the body as is, deadline and errors in headers
//	envelope-json     AegisSDK envelopes in JSON (ClientEnvelope(EnvelopeJSON)); the
//	                  Service answers in kind
//	envelope-msgpack  the same in msgpack, params and result converted from and to JSON
//	                  on both sides
func BenchmarkEnvelope(b *testing.B) {
	srv := natstest.Start(b)
	snc := natstest.Connect(b, srv.URL())
	cnc := natstest.Connect(b, srv.URL())
	payload := benchPayload(b)

	methods := map[string]*natsrpc.Server{"echo": natsrpc.NewJSONServer(echo)}
	svc, err := natsrpc.NewService(context.Background(), snc, "bench", "i1", methods)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Shutdown(context.Background())

	var callers []benchCaller
	for _, c := range []struct {
		name string
		opts []natsrpc.ClientOption
	}{
		{"headers", nil},
		{"envelope-json", []natsrpc.ClientOption{natsrpc.ClientEnvelope(natsrpc.EnvelopeJSON)}},
		{"envelope-msgpack", []natsrpc.ClientOption{natsrpc.ClientEnvelope(natsrpc.EnvelopeMsgpack)}},
	} {
		client, err := natsrpc.NewJSONServiceClient[benchMsg](cnc, "bench", "echo", c.opts...)
		if err != nil {
			b.Fatal(err)
		}
		callers = append(callers, benchCaller{c.name, func(ctx context.Context) error {
			m, err := natsrpc.Call[benchMsg](ctx, client.Endpoint(), payload)
			if err == nil && m != payload {
				b.Errorf("echo %+v", m)
			}
			return err
		}})
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

package retry_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// TestOverNATS retries requests to instances on a real NATS server: one
// has no subscriber (no responders, retried at once), one swallows
// requests (an attempt timeout, retried only when idempotent), one answers.
func TestOverNATS(t *testing.T) {
	srv := natstest.Start(t)
	server := natstest.Connect(t, srv.URL())
	client := natstest.Connect(t, srv.URL())
	if _, err := server.Subscribe("svc.silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Subscribe("svc.ok", func(m *nats.Msg) { _ = m.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	if err := server.Flush(); err != nil {
		t.Fatal(err)
	}
	request := func(instance string) endpoint.Endpoint {
		return func(ctx context.Context, req any) (any, error) {
			msg, err := client.RequestWithContext(ctx, "svc."+instance, req.([]byte))
			if err != nil {
				return nil, err
			}
			return string(msg.Data), nil
		}
	}

	t.Run("no responders", func(t *testing.T) {
		var rec recorder
		e := mustNew(t, newFake("gone", request("gone"), "ok", request("ok")), retry.WithObserver(rec.observe))
		resp, err := e(context.Background(), []byte("ping"))
		if err != nil || resp != "pong" {
			t.Fatalf("want pong, have %v, %v", resp, err)
		}
		if !errors.Is(rec.attempts[0].Err, nats.ErrNoResponders) {
			t.Errorf("first attempt: want no responders, have %v", rec.attempts[0].Err)
		}
		if want, have := []string{"gone", "ok"}, rec.instances(); !slices.Equal(want, have) {
			t.Errorf("instances: want %v, have %v", want, have)
		}
	})

	for _, idempotent := range []bool{false, true} {
		name := map[bool]string{false: "lost request, not idempotent", true: "lost request, idempotent"}[idempotent]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if idempotent {
				ctx = retry.Idempotent(ctx)
			}
			e := mustNew(t, newFake("silent", request("silent"), "ok", request("ok")),
				retry.WithAttemptTimeout(100*time.Millisecond))
			resp, err := e(ctx, []byte("ping"))
			if !idempotent {
				if !errors.Is(err, retry.ErrAttemptTimeout) {
					t.Fatalf("want an attempt timeout, have %v, %v", resp, err)
				}
				return
			}
			if err != nil || resp != "pong" {
				t.Fatalf("want pong, have %v, %v", resp, err)
			}
		})
	}
}

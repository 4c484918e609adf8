package natstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natstest"
)

func TestStartConfig(t *testing.T) {
	s := natstest.StartConfig(t, `accounts: { APP: { jetstream: enabled, users: [ { user: a, password: secret } ] } }`)
	if _, err := natstest.Dial(s.URL(), nats.UserInfo("a", "wrong"), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v", err)
	}
	nc := natstest.Connect(t, s.URL(), nats.UserInfo("a", "secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := natstest.WaitJetStream(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if _, err := natstest.RunConfig("accounts: {", false); err == nil {
		t.Fatal("a broken configuration started")
	}
}

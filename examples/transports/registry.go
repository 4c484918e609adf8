package transports

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Liveness is what registrars and instancers of the examples agree on: a
// heartbeat every 200 ms and records that expire a second after the last
// one, so that a crashed instance leaves every client's set within about a
// second. Production fleets keep natskv's defaults (10 s, 30 s); retries
// and breakers cover the gap either way.
var Liveness = natskv.Options(natskv.WithHeartbeat(200*time.Millisecond), natskv.WithTTL(time.Second))

// Registry is an embedded NATS server with JetStream and a registry bucket
// on it, for the examples and their tests. A deployment connects to its
// NATS servers and binds the bucket instead (natskv.BindBucket).
type Registry struct {
	Server *natstest.Server
	Conn   *nats.Conn
	Bucket *natskv.Bucket
}

// StartRegistry starts the server on a random loopback port, with a
// temporary store, and creates the bucket.
func StartRegistry(ctx context.Context) (*Registry, error) {
	s, err := natstest.Run(natstest.Config{})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(s.URL(), natskv.ReconnectOptions()...)
	if err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("transports: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var b *natskv.Bucket
		b, err = natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "registry", LimitMarkerTTL: 5 * time.Second})
		if err == nil {
			return &Registry{Server: s, Conn: nc, Bucket: b}, nil
		}
	}
	nc.Close()
	s.Shutdown()
	return nil, fmt.Errorf("transports: registry bucket: %w", err)
}

// Close closes the connection and stops the server.
func (r *Registry) Close() {
	r.Conn.Close()
	r.Server.Shutdown()
}

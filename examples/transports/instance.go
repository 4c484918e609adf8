package transports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Server is one instance's server as the examples run it: listening on
// 127.0.0.1, and able to die at once or to stop gracefully.
type Server interface {
	// Addr is where it listens, host:port.
	Addr() string
	// Kill stops it as a crash would: listeners and connections closed at
	// once, calls in flight cut.
	Kill()
	// Shutdown stops taking connections and waits for the calls in flight,
	// as long as ctx allows.
	Shutdown(ctx context.Context) error
}

// DrainGrace is how long a draining instance keeps serving after it marked
// itself UNHEALTHY: clients learn it within milliseconds (the watch), and
// calls they had already sent still find it listening.
var DrainGrace = 250 * time.Millisecond

// DrainTimeout bounds how long a draining server waits for its
// connections before it closes them. net/http's Shutdown waits up to 5 s
// for a connection that never carried a request (a client's spare
// keep-alive connection); after DrainGrace no client sends it anything.
var DrainTimeout = time.Second

// Instance is a server registered in the registry under its address.
type Instance struct {
	ID  string
	srv Server
	reg *natskv.Registrar
}

// StartInstance registers srv as instance id of service, serving transport
// ("http", "grpc") at srv.Addr().
func StartInstance(ctx context.Context, b *natskv.Bucket, service, id, transport string, srv Server, logger log.Logger) (*Instance, error) {
	reg, err := natskv.NewRegistrar(b, natskv.Instance{ServiceName: service, InstanceID: id, Version: "1.0.0"}, logger,
		Liveness, natskv.WithAddress(transport, srv.Addr()))
	if err != nil {
		srv.Kill()
		return nil, err
	}
	if err := reg.RegisterContext(ctx); err != nil {
		srv.Kill()
		reg.Close()
		return nil, fmt.Errorf("transports: register %s: %w", id, err)
	}
	return &Instance{ID: id, srv: srv, reg: reg}, nil
}

// Addr is where the instance serves.
func (in *Instance) Addr() string { return in.srv.Addr() }

// Crash kills the server and stops the heartbeat without deregistering:
// the record stays until it expires, as when the process dies.
func (in *Instance) Crash() {
	in.srv.Kill()
	in.reg.Close()
}

// Drain leaves gracefully: UNHEALTHY first, so clients stop picking it;
// DrainGrace later the server stops taking connections and finishes the
// calls in flight (closing what is left after DrainTimeout); then the
// record is deleted.
func (in *Instance) Drain(ctx context.Context) error {
	err := in.reg.SetStatus(ctx, natskv.StatusUnhealthy)
	select {
	case <-time.After(DrainGrace):
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(ctx, DrainTimeout)
	if in.srv.Shutdown(sctx) != nil {
		in.srv.Kill() // what is left carries no call
	}
	cancel()
	err = errors.Join(err, in.reg.DeregisterContext(ctx))
	in.reg.Close()
	return err
}

// Stop drains the instance within a few seconds, for cleanups: a no-op
// once it crashed or drained.
func (in *Instance) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = in.reg.DeregisterContext(ctx)
	in.reg.Close()
	if err := in.srv.Shutdown(ctx); err != nil {
		in.srv.Kill()
	}
}

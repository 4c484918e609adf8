// Command registry shows the kitnats service registry on an embedded NATS
// server: three instances of a service register, a client's Instancer prints
// every event, then one instance stops cleanly (Deregister) and another
// crashes (stops heartbeating without deregistering) and expires on the
// server.
//
//	go run ./examples/registry
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "registry demo:", err)
		os.Exit(1)
	}
}

const service = "echo"

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	srv, err := natstest.Run(natstest.Config{})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	nc, err := natstest.Dial(srv.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	bucket, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{LimitMarkerTTL: time.Second})
	if err != nil {
		return err
	}
	say("NATS at %s; %s", srv.URL(), bucket.Capabilities())

	// A short heartbeat and TTL keep the demo quick (defaults: 10 s and 30 s).
	heartbeat := natskv.WithHeartbeat(500 * time.Millisecond)
	ttl := natskv.WithTTL(time.Second)

	// The client side: an Instancer and one subscriber printing events.
	changes := make(chan natskv.Change, 64)
	instancer, err := natskv.NewInstancer(bucket, service, nil, heartbeat,
		natskv.WithChangeFunc(func(c natskv.Change) {
			if c.Kind != natskv.ChangeUpdated { // heartbeats are not news
				changes <- c
			}
		}))
	if err != nil {
		return err
	}
	defer instancer.Stop()
	events := make(chan sd.Event)
	instancer.Register(events)
	defer instancer.Deregister(events)

	// The server side: three instances register.
	regs := map[string]*natskv.Registrar{}
	for _, id := range []string{"echo-a", "echo-b", "echo-c"} {
		r, err := natskv.NewRegistrar(bucket, natskv.Instance{
			ServiceName: service, InstanceID: id, Version: "1.0.0",
			Metadata: map[string]string{"addr": "127.0.0.1:" + id[len(id)-1:]},
		}, nil, heartbeat, ttl)
		if err != nil {
			return err
		}
		defer r.Close()
		if err := r.RegisterContext(ctx); err != nil {
			return err
		}
		regs[id] = r
		say("registered %s under key %s (TTL %s)", id, r.Key(), r.TTL())
	}

	printChanges := func() {
		for {
			select {
			case c := <-changes:
				say("  change: %-7s %s (%s)", c.Kind, c.Instance.InstanceID, why(c.Kind))
			default:
				return
			}
		}
	}
	// waitFor prints events and changes until the instance set is want.
	waitFor := func(want ...string) error {
		for {
			select {
			case ev := <-events:
				printChanges() // the changes behind this event
				if ev.Err != nil {
					say("event: error %v", ev.Err)
					continue
				}
				say("event: instances %v", ev.Instances)
				if slices.Equal(ev.Instances, want) {
					return nil
				}
			case c := <-changes:
				say("  change: %-7s %s (%s)", c.Kind, c.Instance.InstanceID, why(c.Kind))
			case <-ctx.Done():
				return errors.New("timed out waiting for instances " + fmt.Sprint(want))
			}
		}
	}
	if err := waitFor("echo-a", "echo-b", "echo-c"); err != nil {
		return err
	}
	for _, in := range instancer.Instances() {
		say("  %s %s v%s addr=%s", in.InstanceID, in.Status, in.Version, in.Metadata["addr"])
	}

	say("stopping echo-b cleanly (Deregister)")
	if err := regs["echo-b"].DeregisterContext(ctx); err != nil {
		return err
	}
	if err := waitFor("echo-a", "echo-c"); err != nil {
		return err
	}

	say("crashing echo-c (no more heartbeats, no Deregister)")
	crashed := time.Now()
	regs["echo-c"].Close()
	if err := waitFor("echo-a"); err != nil {
		return err
	}
	say("echo-c gone %.1fs after it crashed", time.Since(crashed).Seconds())

	if err := regs["echo-a"].DeregisterContext(ctx); err != nil {
		return err
	}
	if err := waitFor(); err != nil {
		return err
	}
	say("done")
	return nil
}

func why(k natskv.ChangeKind) string {
	switch k {
	case natskv.ChangeAdded:
		return "registered"
	case natskv.ChangeDeleted:
		return "clean deregistration"
	case natskv.ChangeExpired:
		return "crash: its TTL ran out on the server"
	case natskv.ChangeStale:
		return "crash: heartbeat too old"
	case natskv.ChangePurged:
		return "purged by an operator"
	}
	return k.String()
}

package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// fastReconnect makes a connection follow a server restart within tens of
// milliseconds, as a production client tuned for a local server would.
var fastReconnect = []nats.Option{
	nats.MaxReconnects(-1),
	nats.ReconnectWait(50 * time.Millisecond),
	nats.ReconnectJitter(0, 0),
}

// outcome is one call made by a worker of the outage test.
type outcome struct {
	start, end time.Time
	err        error
}

// TestNATSOutage is the evidence that a transport fault is not blamed on
// the instances: three instances on a real nats-server over TCP, a client of
// eight workers calling through retry, a balancer and breaker.Factory with
// its default settings, and the server killed for two seconds under load.
// Calls fail while the server is down; once it is back, no call that starts
// a second after the restart is refused by a breaker, and none fails but
// for at most one per worker should this shared machine stall the process
// past a call's timeout; and no breaker is left open. Before this package
// excused transport faults, every call after the restart failed "circuit
// breaker is open".
func TestNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a nats-server")
	}
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var changes transitionLog
	instances := []string{"i1", "i2", "i3"}
	for _, inst := range instances {
		nc := natstest.Connect(t, srv.URL(), append(fastReconnect,
			nats.ReconnectHandler(func(*nats.Conn) { changes.note(inst + " reconnected") }),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { changes.note(fmt.Sprintf("%s disconnected: %v", inst, err)) }))...)
		echo := natsrpc.NewJSONServer(func(_ context.Context, s string) (string, error) { return s, nil })
		svc, err := natsrpc.NewService(ctx, nc, "echo", inst, map[string]*natsrpc.Server{"Echo": echo})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = svc.Shutdown(sctx)
		})
	}

	client := natstest.Connect(t, srv.URL(), fastReconnect...)
	var opened atomic.Int32
	var mu sync.Mutex
	closers := map[string]*breaker.Closer{}
	transport := natsrpc.JSONFactory[string](client, "echo", "Echo")
	factory := breaker.Factory(transport,
		breaker.WithConn(client),
		breaker.WithStateChange(func(name, from, to string) {
			changes.add(name, from, to)
			if to == "open" {
				opened.Add(1)
			}
		}))
	recording := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, c, err := factory(instance)
		if err == nil {
			mu.Lock()
			closers[instance] = c.(*breaker.Closer)
			mu.Unlock()
		}
		return e, c, err
	}
	set := lb.NewEndpointSet(sd.FixedInstancer(instances), recording, log.NewNopLogger())
	defer set.Close()
	call, err := retry.New(lb.New(set, lb.RoundRobin()))
	if err != nil {
		t.Fatal(err)
	}

	// A call's timeout: short enough that the outage fails several calls
	// per instance — enough to open every breaker without this package's
	// rules — and long enough for a loaded machine.
	const workers, callTimeout = 8, time.Second
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		outcomes [workers][]outcome
		ok       atomic.Int64
	)
	for w := range workers {
		wg.Go(func() {
			for !stop.Load() {
				start := time.Now()
				cctx, ccancel := context.WithTimeout(context.Background(), callTimeout)
				resp, err := call(cctx, "ping")
				ccancel()
				if err == nil && resp != "ping" {
					err = fmt.Errorf("wrong answer %v", resp)
				}
				if err == nil {
					ok.Add(1)
				}
				outcomes[w] = append(outcomes[w], outcome{start, time.Now(), err})
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	waitFor(t, "calls before the outage", func() bool { return ok.Load() >= 500 })
	killed := time.Now()
	changes.since(killed)
	srv.Stop()
	time.Sleep(2 * time.Second)
	if err := srv.StartAgain(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	changes.note("restarted")
	// Past the reconnect grace, so that failures count again before the end.
	time.Sleep(breaker.DefaultReconnectGrace + 2*time.Second)
	stop.Store(true)
	wg.Wait()

	// Count the calls by when they started: before the kill, during the
	// outage, in the second after the restart (connections coming back),
	// and later, when every call must succeed.
	const (
		beforeKill = iota
		outage
		settling
		later
	)
	var calls, failed, rejected [4]int
	var firstLater error
	for _, ws := range outcomes {
		for _, o := range ws {
			phase := later
			switch {
			case o.start.Before(killed):
				phase = beforeKill
			case o.start.Before(restarted):
				phase = outage
			case o.start.Before(restarted.Add(time.Second)):
				phase = settling
			}
			calls[phase]++
			if o.err == nil {
				continue
			}
			failed[phase]++
			var rej *breaker.RejectedError
			if errors.As(o.err, &rej) {
				rejected[phase]++
			}
			if phase == settling && failed[phase] < 20 {
				t.Logf("failed in settling: started %v after the restart, took %v: %v",
					o.start.Sub(restarted).Round(time.Millisecond), o.end.Sub(o.start).Round(time.Millisecond), o.err)
			}
			if phase == later {
				t.Logf("failed: started %v after the restart, took %v: %v",
					o.start.Sub(restarted).Round(time.Millisecond), o.end.Sub(o.start).Round(time.Millisecond), o.err)
				if firstLater == nil {
					firstLater = o.err
				}
			}
		}
	}
	for phase, name := range []string{"before the kill", "during the outage", "in the second after the restart", "later"} {
		t.Logf("calls started %s: %d, failed %d (%d refused by a breaker)", name, calls[phase], failed[phase], rejected[phase])
	}
	t.Logf("breakers opened %d times", opened.Load())
	for _, l := range changes.lines() {
		t.Log(l)
	}
	if calls[later] < 100 {
		t.Errorf("only %d calls started a second after the restart: the load stalled", calls[later])
	}
	if rejected[later] > 0 {
		t.Errorf("%d of %d calls started a second after the restart were refused by a breaker", rejected[later], calls[later])
	}
	// A call may still time out on this shared machine if the process
	// stalls; at most one per worker is tolerated.
	if failed[later] > workers {
		t.Errorf("%d of %d calls started a second after the restart failed; first: %v", failed[later], calls[later], firstLater)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, c := range closers {
		if st := c.Breaker().State(); st == gobreaker.StateOpen {
			t.Errorf("breaker of %s left %v", name, st)
		}
	}
}

// transitionLog keeps the breakers' state changes for the test's log.
type transitionLog struct {
	mu    sync.Mutex
	start time.Time
	ls    []string
}

func (l *transitionLog) since(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.start = t
}

func (l *transitionLog) add(name, from, to string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ls = append(l.ls, fmt.Sprintf("%v after the kill: %s %v -> %v", time.Since(l.start).Round(time.Millisecond), name, from, to))
}

func (l *transitionLog) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ls = append(l.ls, fmt.Sprintf("%v after the kill: %s", time.Since(l.start).Round(time.Millisecond), s))
}

func (l *transitionLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ls...)
}

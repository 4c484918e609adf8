package tracing_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
)

// errDraining is what natsrpc returns for a server that is draining: the
// request was refused, not processed.
var errDraining = drainingError{}

type drainingError struct{}

func (drainingError) Error() string   { return "instance draining" }
func (drainingError) Retryable() bool { return true }

// rrBalancer is a stand-in for lb's round robin: it skips tried instances
// and instances whose closer is not lb.Available.
type rrBalancer struct {
	names   []string
	eps     map[string]endpoint.Endpoint
	closers map[string]io.Closer
	next    atomic.Uint64
}

func (b *rrBalancer) Endpoint() (endpoint.Endpoint, error) {
	p, err := b.Pick(context.Background(), nil)
	return p.Endpoint, err
}

func (b *rrBalancer) Pick(_ context.Context, tried []string) (lb.Pick, error) {
	start := b.next.Add(1)
	n := uint64(len(b.names))
	for _, skipTried := range []bool{true, false} {
		for i := range n {
			name := b.names[(start+i)%n]
			if a, ok := b.closers[name].(lb.Available); ok && !a.Available() {
				continue
			}
			if skipTried && slices.Contains(tried, name) {
				continue
			}
			return lb.Pick{Instance: name, Endpoint: b.eps[name]}, nil
		}
	}
	return lb.Pick{}, lb.ErrNoInstances
}

// TestFailoverOverNATS runs the client chain against instances answering on
// a real NATS server: under concurrent load one instance crashes (its
// subscription vanishes: no responders) and another drains (refuses new
// work with a 503, then leaves). The caller sees
// no error; both instances' breakers open and the retries show as attempt
// spans.
func TestFailoverOverNATS(t *testing.T) {
	srv := natstest.Start(t)
	server := natstest.Connect(t, srv.URL())
	client := natstest.Connect(t, srv.URL())
	tel := newTelemetry(t)

	names := []string{"i1", "i2", "i3"}
	subs := map[string]*nats.Subscription{}
	var served sync.Map // instance → *atomic.Int64
	var draining atomic.Bool
	for _, name := range names {
		var n atomic.Int64
		served.Store(name, &n)
		sub, err := server.Subscribe("rpc.echo.Echo."+name, func(m *nats.Msg) {
			if name == "i3" && draining.Load() {
				// A draining server refuses new work, as natsrpc does.
				reply := nats.NewMsg(m.Reply)
				reply.Header.Set("Nats-Service-Error-Code", "503")
				_ = m.RespondMsg(reply)
				return
			}
			n.Add(1)
			_ = m.Respond(m.Data)
		})
		if err != nil {
			t.Fatal(err)
		}
		subs[name] = sub
	}
	if err := server.Flush(); err != nil {
		t.Fatal(err)
	}

	transport := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(ctx context.Context, req any) (any, error) {
			msg, err := client.RequestWithContext(ctx, "rpc.echo.Echo."+instance, req.([]byte))
			if err != nil {
				return nil, err
			}
			if msg.Header.Get("Nats-Service-Error-Code") == "503" {
				return nil, errDraining
			}
			return msg.Data, nil
		}, nil, nil
	}
	var opened sync.Map
	factory := tracing.Factory(breaker.Factory(transport,
		breaker.WithStateChange(func(name, _, to string) {
			if to == gobreaker.StateOpen.String() {
				opened.Store(name, true)
			}
		})), "echo", "Echo", tel.opts...)
	bal := &rrBalancer{names: names, eps: map[string]endpoint.Endpoint{}, closers: map[string]io.Closer{}}
	for _, name := range names {
		e, c, err := factory(name)
		if err != nil {
			t.Fatal(err)
		}
		bal.eps[name], bal.closers[name] = e, c
	}
	// A request in flight when its instance vanishes is lost: only its
	// attempt timeout ends it. Echo is idempotent, so it is retried.
	call, err := retry.New(bal,
		retry.WithAttemptTimeout(time.Second),
		retry.WithIdempotent(),
		retry.WithObserver(tracing.RetryObserver("echo", "Echo", tel.opts...)))
	if err != nil {
		t.Fatal(err)
	}
	call = tracing.Client("echo", "Echo", tel.opts...)(call)

	const workers, perWorker = 4, 150
	var calls atomic.Int64
	crashed, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		waitCalls := func(n int64) {
			for calls.Load() < n {
				time.Sleep(time.Millisecond)
			}
		}
		waitCalls(workers * perWorker / 4)
		_ = subs["i2"].Unsubscribe() // crash: gone without a word
		close(crashed)
		waitCalls(workers * perWorker / 2)
		draining.Store(true) // graceful: refuse new work, then leave
		waitCalls(workers * perWorker * 3 / 4)
		_ = subs["i3"].Drain()
	}()
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	for range workers {
		wg.Go(func() {
			for range perWorker {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := call(ctx, []byte("ping"))
				cancel()
				calls.Add(1)
				if err != nil || string(resp.([]byte)) != "ping" {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, errors.Join(err, errors.New("or a wrong answer")))
				}
			}
		})
	}
	wg.Wait()
	<-drained
	<-crashed

	if have := failures.Load(); have != 0 {
		t.Errorf("client-visible failures: want 0, have %d (first: %v)", have, firstErr.Load())
	}
	for _, name := range []string{"i2", "i3"} {
		if _, ok := opened.Load(name); !ok {
			t.Errorf("breaker of %s never opened", name)
		}
		if bal.closers[name].(lb.Available).Available() {
			t.Errorf("%s still available", name)
		}
	}
	if !bal.closers["i1"].(lb.Available).Available() {
		t.Error("the surviving instance was ejected")
	}
	var retried int
	for _, s := range tel.spans.Ended() {
		if attrs(s)["error.type"] == "no_responders" && attrs(s)[instanceKey] != "" {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no failed attempt span: retries are not visible")
	}
	n1, _ := served.Load("i1")
	if n1.(*atomic.Int64).Load() == 0 {
		t.Error("i1 served nothing")
	}
}

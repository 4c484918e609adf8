// Command quickstart shows the whole kitnats job in one run: three instances
// of a service serve a method over NATS request-reply and register in a NATS
// KV registry; a client discovers them and calls through
//
//	tracing ─► retry ─► hedge ─► least-loaded balancer ─► breaker (per instance) ─► natsrpc
//
// While the client is under load, one instance crashes (its connection dies,
// it never deregisters) and another drains gracefully. The client sees no
// error: retries move every failed attempt to another instance, hedging
// sends the calls the crashed instance will never answer to another one
// after a few milliseconds, the breaker ejects the dead one at once, and the
// registry drops it when its lease expires.
//
// By default everything runs on an embedded NATS server; -nats points it at
// an existing server or cluster instead, with -creds, -nkey, -user and
// -password, -token, -tls-cert/-tls-key/-tls-ca for an authenticated one:
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -nats nats://127.0.0.1:4222
//	go run ./examples/quickstart -nats tls://nats.example.com:4222 -creds demo.creds
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/middleware/tracing"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

const (
	service = "greeter"
	method  = "hello"
)

// HelloRequest and HelloResponse are the method's wire types (JSON).
type HelloRequest struct {
	Name string `json:"name"`
}

type HelloResponse struct {
	Greeting string `json:"greeting"`
	Instance string `json:"instance"` // who answered, so the demo can count
}

type config struct {
	natsURL  string
	bucket   string
	duration time.Duration
	workers  int
}

func main() {
	var cfg config
	flag.StringVar(&cfg.natsURL, "nats", "", "NATS server or cluster URL(s), comma-separated; empty starts an embedded server")
	flag.StringVar(&cfg.bucket, "bucket", "kitnats_quickstart", "registry KV bucket")
	flag.DurationVar(&cfg.duration, "duration", 6*time.Second, "how long the client calls")
	flag.IntVar(&cfg.workers, "workers", 8, "concurrent callers")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+30*time.Second)
	defer cancel()
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// natstest is this module's embedded-server helper (internal): in your
	// own program, connect to your NATS servers instead.
	url := cfg.natsURL
	if url == "" {
		srv, err := natstest.Run(natstest.Config{})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		url = srv.URL()
		say("embedded NATS server with JetStream at %s", url)
	}

	// The client process's connection, and the registry bucket. Short
	// heartbeats and leases keep the demo brisk (defaults: 10 s and 30 s).
	nc, err := connect(url, "quickstart-client")
	if err != nil {
		return err
	}
	defer nc.Close()
	bucket, err := openBucket(ctx, nc, cfg.bucket)
	if err != nil {
		return err
	}
	say("registry bucket %q: %s", bucket.Name(), bucket.Capabilities())
	liveness := natskv.Options(natskv.WithHeartbeat(250*time.Millisecond), natskv.WithTTL(time.Second))

	// Tracing: the library speaks the OpenTelemetry API; the demo records
	// one trace in memory to print at the end.
	spans := newTraceKeeper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	otel := tracing.WithTracerProvider(tp)

	// Three instances, each a "process" with its own NATS connection.
	instances := map[string]*instance{}
	for _, id := range []string{"greeter-1", "greeter-2", "greeter-3"} {
		in, err := startInstance(ctx, url, bucket, id, liveness, otel)
		if err != nil {
			return err
		}
		defer in.stop()
		instances[id] = in
		say("instance %s registered; serves rpc.%s.%s (queue group) and rpc.%s.%s.%s", id, service, method, service, method, id)
	}

	// The client: discovery → endpoint set → balancer → retry → tracing.
	instancer, err := natskv.NewInstancer(bucket, service, nil, liveness,
		natskv.WithChangeFunc(func(c natskv.Change) {
			if c.Kind != natskv.ChangeUpdated { // heartbeats are not news
				say("registry: %s %s", c.Instance.InstanceID, c.Kind)
			}
		}))
	if err != nil {
		return err
	}
	defer instancer.Stop()

	factory := natsrpc.JSONFactory[HelloResponse](nc, service, method)
	factory = breaker.Factory(factory,
		breaker.WithSettings(gobreaker.Settings{Timeout: time.Second}),
		breaker.WithStateChange(func(name, from, to string) {
			say("breaker %s: %s → %s", name, from, to)
		}))
	factory = tracing.Factory(factory, service, method, otel)
	set := lb.NewEndpointSet(instancer, factory, nil) // STANDBY instances only when no ACTIVE one can serve
	defer set.Close()
	// Hedging: when an instance has not answered a call within the p95 of
	// recent calls, the call goes to a second instance too and the first
	// answer wins. The calls in flight to an instance that crashes get no
	// answer and no error: without hedging each one waits out its attempt
	// timeout before retry moves it.
	hedged, err := hedge.New(lb.New(set, lb.LeastLoaded()), hedge.WithMethod(service, method))
	if err != nil {
		return err
	}
	hello, err := retry.New(hedged,
		retry.WithMaxAttempts(4),
		retry.WithAttemptTimeout(500*time.Millisecond),
		retry.WithIdempotent(), // saying hello twice is harmless: time-outs may be retried, calls hedged
		retry.WithObserver(tracing.RetryObserver(service, method, otel)))
	if err != nil {
		return err
	}
	hello = tracing.Client(service, method, otel)(hello)

	if err := waitForInstances(ctx, set, 3); err != nil {
		return err
	}
	say("client discovered %v", set.Instances())

	// Load, and the two failures, on a timeline.
	tally := newTally()
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Go(func() {
			for n := 0; loadCtx.Err() == nil; n++ {
				callCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				began := time.Now()
				resp, err := natsrpc.Call[HelloResponse](callCtx, hello, HelloRequest{Name: fmt.Sprintf("worker-%d/%d", w, n)})
				tally.record(resp.Instance, time.Since(began), err)
				cancel()
			}
		})
	}
	say("%d workers calling %s/%s for %s", cfg.workers, service, method, cfg.duration)

	time.Sleep(cfg.duration / 3)
	say("CRASH greeter-2: its connection dies, it never deregisters")
	instances["greeter-2"].crash()

	time.Sleep(cfg.duration / 3)
	say("DRAIN greeter-3: deregister, finish in-flight requests, stop")
	if err := instances["greeter-3"].drain(ctx); err != nil {
		return err
	}
	say("greeter-3 drained")

	wg.Wait()
	say("load finished")
	fmt.Println()
	tally.print(os.Stdout)
	hs := hedged.Stats()
	fmt.Printf("hedging: %d backup requests sent (%.2f%% of calls), %d won, %d refused by the budget; delay now %v\n",
		hs.Sent, 100*float64(hs.Sent)/float64(max(hs.Calls, 1)), hs.Won, hs.BudgetExhausted, hs.Delay.Round(time.Microsecond))
	fmt.Println()
	spans.print(os.Stdout)
	fmt.Println()
	calls, errs := tally.summary()
	fmt.Printf("summary: calls: %d errors: %d instances left: %v\n", calls, errs, set.Instances())
	if errs > 0 {
		return fmt.Errorf("%d client-visible errors", errs)
	}
	return nil
}

// openBucket creates the registry bucket, or binds to it when it already
// exists with another configuration (a shared server, say).
func openBucket(ctx context.Context, nc *nats.Conn, name string) (*natskv.Bucket, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	b, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: name, LimitMarkerTTL: 5 * time.Second})
	if errors.Is(err, natskv.ErrBucketConfig) {
		return natskv.BindBucket(ctx, js, name)
	}
	return b, err
}

func waitForInstances(ctx context.Context, set *lb.EndpointSet, n int) error {
	for len(set.Instances()) < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("discovered %v, want %d instances: %w", set.Instances(), n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/middleware/retry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

type callOptions struct {
	instance    string
	queue       bool
	timeout     time.Duration
	count       int
	concurrency int
	attempts    int
	balancer    string
	asJSON      bool
	quiet       bool
	maxReply    int
}

// callResult is one call.
type callResult struct {
	N        int             `json:"n"`
	Instance string          `json:"instance,omitempty"` // the instance that answered (or was last tried)
	Attempts int             `json:"attempts"`
	Latency  float64         `json:"latencyMs"`
	TraceID  string          `json:"traceId"`
	OK       bool            `json:"ok"`
	Reply    json.RawMessage `json:"reply,omitempty"`          // a JSON reply
	Text     string          `json:"replyText,omitempty"`      // a reply that is not JSON, or cut
	Size     int             `json:"replyBytes,omitempty"`     // the reply's size
	Cut      bool            `json:"replyTruncated,omitempty"` // only the first --max-reply bytes are kept (or none, past maxReplies)
	Error    string          `json:"error,omitempty"`

	took time.Duration
}

type callSummary struct {
	Calls       int            `json:"calls"`
	OK          int            `json:"ok"`
	Errors      int            `json:"errors"`
	Concurrency int            `json:"concurrency"`
	Seconds     float64        `json:"seconds"`
	PerSecond   float64        `json:"callsPerSecond"`
	P50         float64        `json:"p50Ms"`
	P90         float64        `json:"p90Ms"`
	P99         float64        `json:"p99Ms"`
	Max         float64        `json:"maxMs"`
	ByInstance  map[string]int `json:"byInstance"`
}

type callOutput struct {
	Target  string       `json:"target"`
	Mode    string       `json:"mode"` // discovery, instance or queue
	Subject string       `json:"subject,omitempty"`
	Calls   []callResult `json:"calls"`
	Summary callSummary  `json:"summary"`
}

func (a *app) callCommand() *cobra.Command {
	o := callOptions{}
	cmd := &cobra.Command{
		Use:   "call SERVICE.METHOD [JSON]",
		Short: "Call a method through discovery and the balancer, as a client does",
		Long: `Call SERVICE.METHOD with a JSON request (default null; @FILE reads it from a
file) and print the reply. By default the call goes the way a kitnats client
sends it: the registry (natskv.Instancer) → an endpoint per instance
(lb.EndpointSet) → a balancer → retry across instances, to the instance
subject rpc.SERVICE.METHOD.INSTANCE. --instance calls one instance's subject
without discovery; --queue calls the service-wide subject rpc.SERVICE.METHOD,
which any instance answers (the AegisSDK convention, no registry needed).

Each call runs in its own OpenTelemetry span, whose W3C trace context goes
with the request: its trace ID is printed, to find the call in your tracing
backend. With --count and --concurrency it prints one line per call and a
latency summary (p50, p90, p99), and which instances answered.

The reply is printed on standard output, the rest on standard error; control
characters in it are escaped, and it is cut at --max-reply bytes (--json keeps
at most 64 MiB of replies in all). The exit status is 1 when any call failed.`,
		Example: `  kitnats call greeter.hello '"gopher"'
  kitnats call greeter.hello '{"name":"gopher"}' --instance greeter-2
  kitnats call greeter.hello '"gopher"' --queue
  kitnats call greeter.hello '"gopher"' --count 1000 --concurrency 8 --quiet
  kitnats call billing.charge @request.json --json`,
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := "null"
			if len(args) == 2 {
				body = args[1]
			}
			return a.call(cmd, args[0], body, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.instance, "instance", "", "call this instance's subject, without discovery")
	f.BoolVar(&o.queue, "queue", false, "call the service-wide subject (queue group): any instance answers, without discovery")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "time allowed for each call, retries included")
	f.IntVar(&o.count, "count", 1, "how many calls")
	f.IntVar(&o.concurrency, "concurrency", 1, "calls in flight at once")
	f.IntVar(&o.attempts, "attempts", 3, "attempts per call, on different instances (discovery only)") // retry's default
	f.StringVar(&o.balancer, "balancer", "round-robin", "round-robin, random or least-loaded (discovery only)")
	f.BoolVar(&o.asJSON, "json", false, "write the calls and the summary as JSON")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "with --count: print only the summary")
	f.IntVar(&o.maxReply, "max-reply", 1<<20, "bytes of each reply printed or kept; the rest is counted")
	return cmd
}

// parseTarget splits SERVICE.METHOD and checks both names.
func parseTarget(s string) (service, method string, err error) {
	service, method, ok := strings.Cut(s, ".")
	if !ok {
		return "", "", usagef("%q: want SERVICE.METHOD, as in greeter.hello", s)
	}
	if err := wire.ValidateService(service); err != nil {
		return "", "", &usageError{err}
	}
	if err := wire.ValidateMethod(method); err != nil {
		return "", "", &usageError{err}
	}
	return service, method, nil
}

func (o callOptions) validate() error {
	switch {
	case o.queue && o.instance != "":
		return usagef("--queue and --instance exclude each other")
	case o.count < 1:
		return usagef("--count must be at least 1")
	case o.concurrency < 1:
		return usagef("--concurrency must be at least 1")
	case o.attempts < 1:
		return usagef("--attempts must be at least 1")
	case o.timeout <= 0:
		return usagef("--timeout must be positive")
	case o.maxReply < 0:
		return usagef("--max-reply must not be negative")
	}
	switch o.balancer {
	case "round-robin", "random", "least-loaded":
	default:
		return usagef("--balancer %q: want round-robin, random or least-loaded", o.balancer)
	}
	if o.instance != "" {
		if err := wire.ValidateInstance(o.instance); err != nil {
			return &usageError{err}
		}
	}
	return nil
}

// Raw codecs: the request is sent as given, the reply kept as received.
func encodeRaw(_ context.Context, m *nats.Msg, request any) error {
	m.Data = request.([]byte)
	return nil
}

func decodeRaw(_ context.Context, m *nats.Msg) (any, error) { return slices.Clone(m.Data), nil }

// attemptsKey holds, in a call's context, where its attempts are recorded.
type attemptsKey struct{}

type attemptLog struct {
	mu sync.Mutex
	a  []retry.Attempt
}

func (a *app) call(cmd *cobra.Command, target, body string, o callOptions) error {
	ctx := cmd.Context()
	service, method, err := parseTarget(target)
	if err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	if path, ok := strings.CutPrefix(body, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return usagef("request: %v", err)
		}
		body = string(b)
	}
	request := []byte(strings.TrimSpace(body))
	if !json.Valid(request) {
		return usagef("the request is not valid JSON: %s (a string needs quotes: '\"gopher\"')", safetext.Quote(body))
	}

	out := callOutput{Target: service + "." + method}
	var call endpoint.Endpoint
	var s *session
	copts := []natsrpc.ClientOption{natsrpc.WithDefaultTimeout(o.timeout)}
	switch {
	case o.instance != "" || o.queue:
		if s, err = a.dial(cmd); err != nil {
			return err
		}
		defer s.close()
		var c *natsrpc.Client
		if o.queue {
			out.Mode = "queue"
			out.Subject, _ = wire.ServiceSubject(service, method)
			c, err = natsrpc.NewServiceClient(s.nc, service, method, encodeRaw, decodeRaw, copts...)
		} else {
			out.Mode = "instance"
			out.Subject, _ = wire.InstanceSubject(service, method, o.instance)
			c, err = natsrpc.NewInstanceClient(s.nc, service, method, o.instance, encodeRaw, decodeRaw, copts...)
		}
		if err != nil {
			return err
		}
		call = c.Endpoint()
	default:
		out.Mode = "discovery"
		if s, err = a.open(ctx, cmd); err != nil {
			return err
		}
		defer s.close()
		var stop func()
		call, stop, err = a.discover(ctx, s, service, method, o, copts)
		if err != nil {
			return err
		}
		defer stop()
		out.Subject = "rpc." + service + "." + method + ".{instance}"
	}

	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	tracer := tp.Tracer("github.com/aegis-sdk/kitnats/cmd/kitnats")

	// What is kept of the replies: the one printed, or every one --json
	// writes, within maxReplies in all.
	var budget atomic.Int64
	switch {
	case o.asJSON:
		budget.Store(maxReplies)
	case o.count == 1:
		budget.Store(int64(o.maxReply))
	}
	one := func(n int) callResult {
		log := &attemptLog{}
		cctx, cancel := context.WithTimeout(context.WithValue(ctx, attemptsKey{}, log), o.timeout)
		defer cancel()
		cctx, span := tracer.Start(cctx, "kitnats call "+out.Target, trace.WithSpanKind(trace.SpanKindClient))
		r := callResult{N: n, TraceID: span.SpanContext().TraceID().String(), Attempts: 1}
		began := time.Now()
		reply, err := call(cctx, request)
		r.took = time.Since(began)
		span.End()
		r.Latency = float64(r.took) / float64(time.Millisecond)
		switch out.Mode {
		case "instance":
			r.Instance = o.instance
		case "discovery":
			log.mu.Lock()
			if len(log.a) > 0 {
				r.Attempts = len(log.a)
				r.Instance = log.a[len(log.a)-1].Instance
			}
			log.mu.Unlock()
		}
		if err != nil {
			r.Error = safetext.Truncate(err.Error(), maxError)
			return r
		}
		r.OK = true
		r.keep(reply.([]byte), o.maxReply, &budget)
		return r
	}

	began := time.Now()
	results := make([]callResult, o.count)
	next := make(chan int)
	var wg sync.WaitGroup
	var printMu sync.Mutex
	for range min(o.concurrency, o.count) {
		wg.Go(func() {
			for n := range next {
				r := one(n + 1)
				results[n] = r
				if o.count > 1 && !o.quiet && !o.asJSON {
					printMu.Lock()
					a.callLine(r)
					printMu.Unlock()
				}
			}
		})
	}
feed:
	for n := range o.count {
		select {
		case next <- n:
		case <-ctx.Done():
			results = results[:n]
			break feed
		}
	}
	close(next)
	wg.Wait()
	out.Calls = results
	out.Summary = summarise(results, min(o.concurrency, o.count), time.Since(began))

	if o.asJSON {
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	} else if o.count == 1 && len(results) == 1 {
		r := results[0]
		who := ""
		if r.Instance != "" {
			who = " → " + r.Instance
		} else if out.Mode == "queue" {
			who = " → queue " + out.Subject
		}
		if r.OK {
			if r.Reply != nil {
				fmt.Fprintf(a.stdout, "%s\n", safeJSON(r.Reply))
			} else {
				fmt.Fprintf(a.stdout, "%s\n", textLines(r.Text))
			}
			if r.Cut {
				say(a.stderr, "the reply is cut at %d of its %d bytes (--max-reply)", len(r.Text), r.Size)
			}
			say(a.stderr, "%s%s in %s (%s), trace %s", out.Target, who, latency(r.took), plural(r.Attempts, "attempt"), r.TraceID)
		} else {
			say(a.stderr, "kitnats: %s%s failed in %s (%s), trace %s: %s", out.Target, who, latency(r.took), plural(r.Attempts, "attempt"), r.TraceID, r.Error)
		}
	} else {
		a.callSummary(out.Summary)
	}
	if out.Summary.Errors > 0 || ctx.Err() != nil {
		return failedError{}
	}
	return nil
}

// maxReplies bounds the replies --json keeps in all; maxError an error's
// text.
const (
	maxReplies = 64 << 20
	maxError   = 4 << 10
)

// keep records what is kept of a reply: its first limit bytes, within
// what is left of budget, as JSON when that is all of it and it is valid
// JSON, else as text (cut on a rune boundary).
func (r *callResult) keep(reply []byte, limit int, budget *atomic.Int64) {
	r.Size = len(reply)
	n := min(len(reply), limit)
	if budget.Add(-int64(n)) < 0 {
		budget.Add(int64(n))
		n = 0
	}
	if n == len(reply) && json.Valid(reply) {
		r.Reply = reply
		return
	}
	// A copy of what is kept (the rest of reply is not held), cut on a rune
	// boundary: Cut looks at the byte after the limit.
	r.Text = safetext.Cut(string(reply[:min(len(reply), n+1)]), n)
	r.Cut = n < len(reply)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (a *app) callLine(r callResult) {
	who := r.Instance
	if who == "" {
		who = "-"
	}
	status := "ok"
	if !r.OK {
		status = "error: " + r.Error
	}
	say(a.stdout, "#%-4d %-20s %10s  trace %s  %s", r.N, who, latency(r.took), r.TraceID, status)
}

func (a *app) callSummary(s callSummary) {
	say(a.stdout, "calls %d, ok %d, errors %d, concurrency %d, in %s (%.0f calls/s)",
		s.Calls, s.OK, s.Errors, s.Concurrency, human(time.Duration(s.Seconds*float64(time.Second))), s.PerSecond)
	ms := func(v float64) string { return latency(time.Duration(v * float64(time.Millisecond))) }
	say(a.stdout, "latency p50 %s, p90 %s, p99 %s, max %s", ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
	if len(s.ByInstance) > 0 {
		var parts []string
		for _, id := range slices.Sorted(maps.Keys(s.ByInstance)) {
			parts = append(parts, fmt.Sprintf("%s %d", id, s.ByInstance[id]))
		}
		say(a.stdout, "answered by %s", strings.Join(parts, ", "))
	}
}

// summarise computes the latency percentiles (nearest rank, over every
// call, failed ones included) and who answered.
func summarise(rs []callResult, concurrency int, took time.Duration) callSummary {
	s := callSummary{Calls: len(rs), Concurrency: concurrency, Seconds: seconds(took), ByInstance: map[string]int{}}
	if took > 0 {
		s.PerSecond = float64(len(rs)) / took.Seconds()
	}
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, r.took)
		if r.OK {
			s.OK++
			if r.Instance != "" {
				s.ByInstance[r.Instance]++
			}
		} else {
			s.Errors++
		}
	}
	if len(ds) == 0 {
		return s
	}
	slices.Sort(ds)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return float64(ds[max(i, 0)]) / float64(time.Millisecond)
	}
	s.P50, s.P90, s.P99, s.Max = rank(0.50), rank(0.90), rank(0.99), rank(1)
	return s
}

// discover builds the client chain: Instancer → EndpointSet → balancer →
// retry, and waits until the set has an endpoint.
func (a *app) discover(ctx context.Context, s *session, service, method string, o callOptions, copts []natsrpc.ClientOption) (endpoint.Endpoint, func(), error) {
	inst, err := natskv.NewInstancer(s.b, service, nil, a.instancerOptions(s.layout)...)
	if err != nil {
		return nil, nil, err
	}
	first := make(chan sd.Event, 1)
	inst.Register(first)
	wait := time.NewTimer(max(a.conn.timeout, time.Second))
	defer wait.Stop()
	var ev sd.Event
	select {
	case ev = <-first:
	case <-wait.C:
		ev.Err = fmt.Errorf("no answer from the registry in %s", max(a.conn.timeout, time.Second))
	case <-ctx.Done():
		ev.Err = ctx.Err()
	}
	inst.Deregister(first)
	if ev.Err != nil {
		inst.Stop()
		return nil, nil, fmt.Errorf("discover %s: %w", service, ev.Err)
	}
	if len(ev.Instances) == 0 {
		inst.Stop()
		return nil, nil, fmt.Errorf("no instance of %s is offered to clients in bucket %s (layout %s): `kitnats ls %s` says why; --queue calls any instance that serves it",
			service, s.b.Name(), s.layout, service)
	}
	factory := natsrpc.Factory(s.nc, service, method, encodeRaw, decodeRaw, copts...)
	set := lb.NewEndpointSet(inst, factory, nil)
	ready := make(chan struct{}, 1)
	cancel := set.Subscribe(func(v *lb.View) {
		if v.Len() > 0 {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
	})
	stop := func() {
		cancel()
		set.Close()
		inst.Stop()
	}
	select {
	case <-ready:
	case <-ctx.Done():
		stop()
		return nil, nil, ctx.Err()
	case <-time.After(max(a.conn.timeout, time.Second)):
		stop()
		return nil, nil, fmt.Errorf("discover %s: no endpoint was built for %v", service, ev.Instances)
	}
	var bal lb.Balancer
	switch o.balancer {
	case "random":
		bal = lb.New(set, lb.Random())
	case "least-loaded":
		bal = lb.New(set, lb.LeastLoaded())
	default:
		bal = lb.New(set, lb.RoundRobin())
	}
	call, err := retry.New(bal, retry.WithMaxAttempts(o.attempts), retry.WithObserver(func(ctx context.Context, attempt int, instance string, delay time.Duration, err error) {
		if l, ok := ctx.Value(attemptsKey{}).(*attemptLog); ok {
			l.mu.Lock()
			l.a = append(l.a, retry.Attempt{Number: attempt, Instance: instance, Delay: delay, Err: err})
			l.mu.Unlock()
		}
	}))
	if err != nil {
		stop()
		return nil, nil, err
	}
	return call, stop, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tally counts calls per instance and keeps every latency, so the summary can
// give exact percentiles: a quickstart makes tens of thousands of calls,
// a few hundred kilobytes of durations.
type tally struct {
	mu        sync.Mutex
	perServer map[string]int
	latencies []time.Duration
	errors    []error
}

func newTally() *tally { return &tally{perServer: map[string]int{}} }

func (t *tally) record(servedBy string, d time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.latencies = append(t.latencies, d)
	if err != nil {
		t.errors = append(t.errors, err)
		return
	}
	t.perServer[servedBy]++
}

func (t *tally) print(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintln(w, "calls per instance:")
	names := make([]string, 0, len(t.perServer))
	for name := range t.perServer {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-24s %6d\n", name, t.perServer[name])
	}
	lat := slices.Clone(t.latencies)
	slices.Sort(lat)
	fmt.Fprintf(w, "latency: p50 %v  p99 %v  max %v\n",
		percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1))
	for i, err := range t.errors {
		if i == 5 {
			fmt.Fprintf(w, "  … %d more errors\n", len(t.errors)-i)
			break
		}
		fmt.Fprintf(w, "  error: %v\n", err)
	}
}

func (t *tally) summary() (calls, errs int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.latencies), len(t.errors)
}

// percentile of sorted durations, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Round(time.Microsecond)
}

// traceKeeper is a span processor that keeps one trace: the one with the
// most spans so far, which is a call that needed a retry once anything has
// failed. Holding every span of a load test would cost hundreds of
// megabytes; this holds the traces in flight and the best one.
type traceKeeper struct {
	mu   sync.Mutex
	open map[trace.TraceID][]sdktrace.ReadOnlySpan
	best []sdktrace.ReadOnlySpan
}

var _ sdktrace.SpanProcessor = (*traceKeeper)(nil)

func newTraceKeeper() *traceKeeper {
	return &traceKeeper{open: map[trace.TraceID][]sdktrace.ReadOnlySpan{}}
}

func (k *traceKeeper) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (k *traceKeeper) OnEnd(s sdktrace.ReadOnlySpan) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := s.SpanContext().TraceID()
	spans := append(k.open[id], s)
	if s.Parent().IsValid() { // not the root: the trace is still open
		k.open[id] = spans
		return
	}
	delete(k.open, id)
	if len(spans) > len(k.best) {
		k.best = spans
	}
}

func (k *traceKeeper) Shutdown(context.Context) error   { return nil }
func (k *traceKeeper) ForceFlush(context.Context) error { return nil }

// print draws the kept trace as an indented tree, children in start order,
// with each span's duration and the attributes worth reading.
func (k *traceKeeper) print(w io.Writer) {
	k.mu.Lock()
	trc := k.best
	k.mu.Unlock()
	if len(trc) == 0 {
		fmt.Fprintln(w, "(no trace recorded)")
		return
	}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	inTrace := map[trace.SpanID]bool{}
	for _, s := range trc {
		inTrace[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range trc {
		parent := s.Parent().SpanID()
		if s.Parent().IsValid() && inTrace[parent] {
			children[parent] = append(children[parent], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) }
	slices.SortFunc(roots, byStart)
	for _, c := range children {
		slices.SortFunc(c, byStart)
	}
	fmt.Fprintf(w, "one call's trace (%s):\n", trc[0].SpanContext().TraceID())
	var walk func(s sdktrace.ReadOnlySpan, prefix string, last, root bool)
	walk = func(s sdktrace.ReadOnlySpan, prefix string, last, root bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if root {
			branch, next = "", ""
		}
		status := ""
		if s.Status().Code == codes.Error {
			status = "  ERROR " + s.Status().Description
		}
		fmt.Fprintf(w, "  %s%s%s [%s] %v%s%s\n", prefix, branch, s.Name(),
			strings.ToLower(s.SpanKind().String()), s.EndTime().Sub(s.StartTime()).Round(time.Microsecond),
			interesting(s.Attributes()), status)
		kids := children[s.SpanContext().SpanID()]
		for i, kid := range kids {
			walk(kid, prefix+next, i == len(kids)-1, false)
		}
	}
	for _, r := range roots {
		walk(r, "", true, true)
	}
}

// interesting renders the attributes a reader of the tree cares about.
func interesting(attrs []attribute.KeyValue) string {
	var b strings.Builder
	for _, kv := range attrs {
		switch k := string(kv.Key); {
		case strings.Contains(k, "instance"), strings.Contains(k, "attempt"), k == "error.type", k == "rpc.method":
			fmt.Fprintf(&b, " %s=%s", k, kv.Value.String())
		}
	}
	return b.String()
}

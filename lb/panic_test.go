package lb_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aegis-sdk/kitnats/lb"
)

// logRecorder is a go-kit logger that keeps its lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Log(keyvals ...any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(fmt.Sprintln(keyvals...)))
	return nil
}

func (l *logRecorder) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// metricValues collects the int64 sums and gauges a reader holds, by name.
func metricValues(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if v, ok := p.Attributes.Value("service"); !ok || v.AsString() != "echo" {
						t.Errorf("%s: want the set's attributes, have %v", m.Name, p.Attributes)
					}
					out[m.Name] += p.Value
				}
			}
		}
	}
	return out
}

// pickUntil picks until cond holds, with a generous deadline: the set
// counts its unavailable instances soon after a pick meets one, and on a
// timer while any is. It asserts no duration.
func pickUntil(t *testing.T, what string, b lb.Balancer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		b.Pick(context.Background(), nil)
		time.Sleep(time.Millisecond)
	}
}

// TestPanicMode: more than half the instances unavailable → every balancer
// spreads its picks over all of them, evenly; back to 40 % → only the
// available ones again. Exactly half is not more than half.
func TestPanicMode(t *testing.T) {
	insts := names(10)
	const picks = 10000
	ctxs := make([]context.Context, picks) // sticky: a key of its own per pick
	for i := range ctxs {
		ctxs[i] = lb.WithStickyKey(context.Background(), fmt.Sprintf("user-%d", i))
	}
	for _, bc := range balancers {
		t.Run(bc.name, func(t *testing.T) {
			f := newFakeFactory()
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer mp.Shutdown(context.Background())
			logs := &logRecorder{}
			set := lb.NewEndpointSet(sd.FixedInstancer(insts), f.Factory, logs,
				lb.WithMeterProvider(mp), lb.WithMetricAttributes(attribute.String("service", "echo")))
			defer set.Close()
			b := bc.make(set)
			setDown := func(down ...string) {
				for _, name := range insts {
					f.Closer(name).down.Store(slices.Contains(down, name))
				}
			}

			setDown(insts[:6]...)
			pickUntil(t, "panic mode", b, func() bool { return set.View().PanicMode() })
			if want, have := 6, set.View().Unavailable(); want != have {
				t.Errorf("unavailable: want %d, have %d", want, have)
			}
			counts := map[string]int{}
			for i := range picks {
				p, err := b.Pick(ctxs[i], nil)
				if err != nil {
					t.Fatal(err)
				}
				counts[p.Instance]++
			}
			t.Logf("panic mode, 6 of 10 down: %v", counts)
			for _, name := range insts {
				if c, fair := counts[name], picks/len(insts); c < fair/2 || c > fair*3/2 {
					t.Errorf("panic mode: %s picked %d times, want %d ± 50%%", name, c, fair)
				}
			}
			// Tried still counts: the one untried instance, down or not.
			for _, i := range []int{0, 9} {
				tried := slices.Delete(slices.Clone(insts), i, i+1)
				if p, _ := b.Pick(ctxs[i], tried); p.Instance != insts[i] {
					t.Errorf("panic mode, all but %s tried: have %s", insts[i], p.Instance)
				}
			}

			setDown(insts[:4]...)
			pickUntil(t, "panic mode off", b, func() bool { return !set.View().PanicMode() })
			counts = pickN(t, b, ctxs[1], nil, 1000)
			for _, name := range insts[:4] {
				if counts[name] != 0 {
					t.Errorf("4 of 10 down: unavailable %s picked %d times", name, counts[name])
				}
			}

			setDown(insts[:5]...)
			pickUntil(t, "the census of 5", b, func() bool { return set.View().Unavailable() == 5 })
			if set.View().PanicMode() {
				t.Error("5 of 10 down: panic mode, want it only above half")
			}

			if on, off := logs.matching("panic_mode engaged"), logs.matching("panic_mode disengaged"); len(on) != 1 || len(off) != 1 {
				t.Errorf("log lines: want one engaged and one disengaged, have %q and %q", on, off)
			} else {
				t.Log(on[0])
				t.Log(off[0])
			}
			m := metricValues(t, reader)
			for name, want := range map[string]int64{"kitnats.lb.panic_mode.engaged": 1, "kitnats.lb.panic_mode": 0, "kitnats.lb.instances.unavailable": 5} {
				if have, ok := m[name]; !ok || have != want {
					t.Errorf("metric %s: want %d, have %d (recorded: %v)", name, want, have, ok)
				}
			}
			setDown()
		})
	}
}

// TestPanicModeGauge: the gauge says 1 while panic mode is on.
func TestPanicModeGauge(t *testing.T) {
	f := newFakeFactory()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	set := newSet(t, f, []string{"a", "b", "c"}, lb.WithMeterProvider(mp), lb.WithMetricAttributes(attribute.String("service", "echo")))
	b := lb.New(set, lb.Random())
	f.Closer("a").down.Store(true)
	f.Closer("b").down.Store(true)
	pickUntil(t, "panic mode", b, func() bool { return set.View().PanicMode() })
	m := metricValues(t, reader)
	if m["kitnats.lb.panic_mode"] != 1 || m["kitnats.lb.instances.unavailable"] != 2 {
		t.Errorf("metrics in panic mode: want %s 1 and %s 2, have %v", "kitnats.lb.panic_mode", "kitnats.lb.instances.unavailable", m)
	}
	f.Closer("a").down.Store(false)
	f.Closer("b").down.Store(false)
	pickUntil(t, "panic mode off", b, func() bool { return !set.View().PanicMode() })
}

// TestPanicModeDisabled: threshold 0 never engages it.
func TestPanicModeDisabled(t *testing.T) {
	f := newFakeFactory()
	insts := names(10)
	set := newSet(t, f, insts, lb.WithPanicThreshold(0))
	b := lb.New(set, lb.Random())
	for _, name := range insts[1:] {
		f.Closer(name).down.Store(true)
	}
	pickUntil(t, "the census of 9", b, func() bool { return set.View().Unavailable() == 9 })
	counts := pickN(t, b, context.Background(), nil, 1000)
	if counts[insts[0]] != 1000 || set.View().PanicMode() {
		t.Errorf("threshold 0, 9 of 10 down: want all 1000 on %s and no panic mode, have %v, %v", insts[0], counts, set.View().PanicMode())
	}
}

// TestPanicModeKeepsStandby: panic mode waives availability, not the tiers.
func TestPanicModeKeepsStandby(t *testing.T) {
	f := newFakeFactory()
	set := newSet(t, f, []string{"a", "b", "c", "spare"},
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s == "spare"} }))
	for _, bc := range balancers {
		b := bc.make(set)
		for _, name := range []string{"a", "b", "c"} {
			f.Closer(name).down.Store(true)
		}
		pickUntil(t, "panic mode", b, func() bool { return set.View().PanicMode() })
		if c := pickN(t, b, context.Background(), nil, 300); c["spare"] != 0 || len(c) != 3 {
			t.Errorf("%s: panic mode: want the three ACTIVE instances, have %v", bc.name, c)
		}
		for _, name := range []string{"a", "b", "c"} {
			f.Closer(name).down.Store(false)
		}
		pickUntil(t, "panic mode off", b, func() bool { return !set.View().PanicMode() })
	}
}

// TestFilter: a filtered view keeps the instances, tiers and order of the
// kept ones, and the set counts its unavailable instances.
func TestFilter(t *testing.T) {
	f := newFakeFactory()
	set := newSet(t, f, []string{"a1", "a2", "a3", "b1", "b2"}, lb.WithPanicThreshold(0),
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s == "a3"} }))
	v := set.View()
	a := v.Filter(func(in *lb.Instance) bool { return in.Name()[0] == 'a' })
	a12 := a.Filter(func(in *lb.Instance) bool { return !in.Attributes().Standby })
	if want, have := []string{"a1", "a2", "a3"}, instanceNames(a.Instances()); !slices.Equal(want, have) {
		t.Errorf("filtered: want %v, have %v", want, have)
	}
	if want, have := []string{"a1", "a2"}, instanceNames(a.Active()); !slices.Equal(want, have) {
		t.Errorf("filtered ACTIVE: want %v, have %v", want, have)
	}
	if want, have := []string{"a3"}, instanceNames(a.Standby()); !slices.Equal(want, have) {
		t.Errorf("filtered STANDBY: want %v, have %v", want, have)
	}
	if a.Lookup("a1") != v.Lookup("a1") || a.Lookup("b1") != nil {
		t.Error("Lookup: want the same instances, and only the kept ones")
	}
	if lb.ViewErr(a) != lb.ViewErr(v) {
		t.Errorf("Err: want the view's, have %v", lb.ViewErr(a))
	}

	f.Closer("a2").down.Store(true)
	f.Closer("b1").down.Store(true)
	b := lb.New(set, lb.RoundRobin())
	pickUntil(t, "the census", b, func() bool { return v.Unavailable() == 2 })
	if a.Unavailable() != 1 || a12.Unavailable() != 1 {
		t.Errorf("unavailable: want 1 in a and in a1–a2, have %d and %d", a.Unavailable(), a12.Unavailable())
	}
	f.Closer("a2").down.Store(false)
	f.Closer("b1").down.Store(false)
	pickUntil(t, "the census", b, func() bool { return v.Unavailable() == 0 })
	if a.Unavailable() != 0 || a12.Unavailable() != 0 {
		t.Errorf("unavailable: want 0 in a and in a1–a2, have %d and %d", a.Unavailable(), a12.Unavailable())
	}
	// A new view starts with a count of its own.
	f.Closer("b2").down.Store(true)
	set.Refresh()
	if want, have := 1, set.View().Unavailable(); want != have {
		t.Errorf("a new view: want %d unavailable, have %d", want, have)
	}
	f.Closer("b2").down.Store(false)
}

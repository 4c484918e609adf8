package natskv_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// guardLog keeps an Instancer's stale_guard log lines, in order.
type guardLog struct {
	mu    sync.Mutex
	lines []string
}

func (g *guardLog) Log(kv ...any) error {
	for n := 0; n+1 < len(kv); n += 2 {
		if kv[n] == "stale_guard" {
			g.mu.Lock()
			g.lines = append(g.lines, fmt.Sprint(kv[n+1]))
			g.mu.Unlock()
		}
	}
	return nil
}

func (g *guardLog) get() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.lines)
}

// Every heartbeat of a service stops at once (as when the registry cannot
// be written): on a bucket without markers, the guard holds the set rather
// than letting staleness empty it, logs and counts it, and after at most
// the staleness threshold lets staleness judge again (the fleet really
// stopped here), so the set empties in the end and the guard disengages.
func TestStaleGuardHoldsAFleetThatStopsAtOnce(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{NoTTL: true})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	hb := 100 * time.Millisecond
	var rs []*natskv.Registrar
	for _, id := range []string{"x", "y", "z"} {
		rs = append(rs, register(t, b, inst("svc", id), natskv.WithHeartbeat(hb)))
	}
	cs := make(changes, 1024)
	glog := &guardLog{}
	// Writes spread over one heartbeat (100 ms); the guard's window is a
	// third of the threshold (500 ms): a wide margin for a loaded machine.
	i, err := natskv.NewInstancer(b, "svc", log.Logger(glog), cs.opt(), natskv.WithHeartbeat(hb),
		natskv.WithStaleAfter(1500*time.Millisecond), natskv.WithMeterProvider(mp), natskv.WithReadyWait(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	defer i.Stop()
	ch := subscribe(t, i)
	waitSet(t, ch, "x", "y", "z")
	for _, r := range rs {
		r.Close() // records stay; nothing is written any more
	}
	// The first staleness judgement finds the guard engaged: no instance
	// went stale before it.
	c := cs.wait(t, rs[0].Key(), natskv.ChangeStale)
	if lines := glog.get(); len(lines) == 0 || lines[0] != "engaged" {
		t.Fatalf("an instance went stale (%+v) before the guard engaged: log %v", c, lines)
	}
	waitSet(t, ch)
	eventually(t, "guard disengaged", func() error {
		if lines := glog.get(); !slices.Equal(lines, []string{"engaged", "disengaged"}) {
			return fmt.Errorf("log %v", lines)
		}
		return nil
	})
	if have := counter(t, reader, metricStaleGuard); have != 0 {
		t.Fatalf("%s = %d after disengaging", metricStaleGuard, have)
	}
}

// An Instancer stopped while its guard is engaged counts itself out of
// MetricStaleGuard.
func TestStaleGuardMetricAfterStop(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{NoTTL: true})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	hb := 100 * time.Millisecond
	var rs []*natskv.Registrar
	for _, id := range []string{"x", "y"} {
		rs = append(rs, register(t, b, inst("svc", id), natskv.WithHeartbeat(hb)))
	}
	glog := &guardLog{}
	// A threshold long enough that the guard is still engaged at Stop.
	i, err := natskv.NewInstancer(b, "svc", log.Logger(glog), natskv.WithHeartbeat(hb),
		natskv.WithStaleAfter(time.Second), natskv.WithMeterProvider(mp), natskv.WithReadyWait(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, i)
	waitSet(t, ch, "x", "y")
	for _, r := range rs {
		r.Close()
	}
	eventually(t, "guard engaged", func() error {
		if lines := glog.get(); len(lines) == 0 {
			return fmt.Errorf("no guard log")
		}
		return nil
	})
	i.Stop() // engaged or, on a slow machine, already released: 0 either way
	if have := counter(t, reader, metricStaleGuard); have != 0 {
		t.Fatalf("%s = %d after Stop (log %v)", metricStaleGuard, have, glog.get())
	}
}

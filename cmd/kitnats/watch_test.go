package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// watching runs `kitnats watch` until the test ends; its output grows in
// the buffers returned.
func (f *fixture) watching(t *testing.T, args ...string) (out, errOut *syncBuffer) {
	t.Helper()
	out, errOut = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	args = append(append([]string{"watch", "--server", f.srv.URL(), "--rescan", "200ms"}, livenessFlags...), args...)
	go func() { done <- runWith(ctx, args, out, errOut, f.getenv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("watch exited %d: %s", code, errOut.String())
			}
		case <-time.After(waitFor):
			t.Errorf("watch did not stop")
		}
		t.Logf("watch output:\n%s", out.String())
	})
	return out, errOut
}

func TestWatch(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{LimitMarkerTTL: time.Minute}) // expiry markers: a crash is told as one
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, "eu-1"))
	out, errOut := f.watching(t)

	waitOutput(t, out, "added", "greeter/greeter-1", "ACTIVE 1.2.3 zone=eu-1")
	waitOutput(t, out, "watching", "greeter", "1 offered to clients: greeter-1")
	waitOutput(t, errOut, "watching every service in bucket service_registry", "layout dotted, stale after 6s")

	r2 := f.register(instance("greeter", "greeter-2", natskv.StatusActive, "eu-2"))
	waitOutput(t, out, "added", "greeter/greeter-2", "ACTIVE 1.2.3 zone=eu-2")
	if err := r2.SetStatus(ctxT(t), natskv.StatusStandby); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "status", "greeter/greeter-2", "ACTIVE → STANDBY")

	// A service that appears after the watch began.
	f.register(instance("billing", "billing-1", natskv.StatusActive, ""))
	waitOutput(t, out, "added", "billing/billing-1", "ACTIVE 1.2.3")

	// A new version, written by hand.
	rec := func(version string) string {
		b, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-5", Version: version,
			Status: natskv.StatusActive, LastHeartbeat: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	f.put("service-instances.greeter.greeter-5", rec("1.0.0"))
	waitOutput(t, out, "added", "greeter/greeter-5", "ACTIVE 1.0.0")
	f.put("service-instances.greeter.greeter-5", rec("1.1.0"))
	waitOutput(t, out, "updated", "greeter/greeter-5", "version 1.0.0 → 1.1.0")
	f.put("service-instances.greeter.greeter-5", `{"serviceName":"greeter","instanceId":"greeter-5"}`)
	waitOutput(t, out, "skipped", "greeter/greeter-5", "version: missing field", "(the record held before is dropped)")

	if err := r2.DeregisterContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "deleted", "greeter/greeter-2", "deregistered cleanly")

	// A crash: the record expires on the server.
	r3 := f.register(instance("greeter", "greeter-3", natskv.StatusActive, ""), natskv.WithTTL(time.Second))
	waitOutput(t, out, "added", "greeter/greeter-3")
	r3.Close()
	waitOutput(t, out, "expired", "greeter/greeter-3", "its TTL ran out on the server")

	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, " heartbeat ") {
			t.Errorf("a heartbeat shown without --heartbeats: %q", line)
		}
	}
}

// TestWatchStale: on a bucket without expiry markers (as AegisSDK makes
// them) a crash is noticed by age; --json writes one object per line.
func TestWatchStale(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{NoTTL: true})
	rec, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "greeter", InstanceID: "g-1", Version: "1.0.0",
		Status: natskv.StatusActive, LastHeartbeat: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// Written before the watch starts. (An Instancer whose service had no
	// record when its staleness clock first ticked does not judge records
	// written later, as of sd/natskv at 2e88dfc: watcher.staleLoop sets
	// staleAt an hour ahead for an empty service and live writes do not
	// reset it.)
	f.put("service-instances.greeter.g-1", string(rec))
	out, _ := f.watching(t, "greeter", "--json", "--heartbeats", "--stale-after", "2s")
	waitOutput(t, out, `"event":"added"`, `"instance":"g-1"`)
	waitOutput(t, out, `"event":"watching"`, `"service":"greeter"`)
	f.put("service-instances.greeter.g-1", string(rec))
	// A rewrite that changes nothing: a heartbeat (or, had the watch taken
	// over 2 s to start, a record written again after going stale).
	if l := waitOutput(t, out, `"instance":"g-1"`, `"revision":2`); !strings.Contains(l, `"event":"heartbeat"`) &&
		!strings.Contains(l, "written again after going stale") && !strings.Contains(l, `"event":"stale"`) {
		t.Errorf("the rewrite: %s", l)
	}
	line := waitOutput(t, out, `"event":"stale"`)
	var e watchEvent
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatal(err)
	}
	if e.Service != "greeter" || e.Instance != "g-1" || e.Key != "service-instances.greeter.g-1" || e.Revision == 0 ||
		e.Time.IsZero() || !strings.Contains(e.Detail, "no write for over 2s") {
		t.Errorf("%+v", e)
	}
	f.put("service-instances.greeter.g-1", string(rec))
	waitOutput(t, out, `"event":"updated"`, `"revision":3`, "written again after going stale")
}

// TestWatchRestart: the watch survives a server restart and says so.
func TestWatchRestart(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{})
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, ""))
	f.put("service-instances.greeter.bad", "{")
	out, _ := f.watching(t, "greeter")
	waitOutput(t, out, "watching", "greeter", "1 offered to clients: greeter-1")
	waitOutput(t, out, "skipped", "greeter/bad")

	if err := f.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "disconnected", "connection lost")
	waitOutput(t, out, "watch lost", "greeter", "clients keep their last set")
	waitOutput(t, out, "reconnected", "to "+f.srv.URL())
	waitOutput(t, out, "watch resumed", "greeter", "1 offered to clients: greeter-1")

	// And it still sees changes.
	f.register(instance("greeter", "greeter-2", natskv.StatusActive, ""))
	waitOutput(t, out, "added", "greeter/greeter-2")
	// The rebuilt watch read the bad record again; it is told once.
	if n := strings.Count(out.String(), "greeter/bad"); n != 1 {
		t.Errorf("the bad record told %d times", n)
	}
}

// TestWatchBounded: a writer that keeps inventing service names cannot make
// `kitnats watch` grow: it follows at most --max-services at once, says
// so, and lets a service go once its keys are gone. Thousands of names in
// waves; the goroutines and services held stay bounded, and the service
// that was there first is followed throughout.
func TestWatchBounded(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{Storage: jetstream.MemoryStorage})
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, ""))
	var started atomic.Pointer[watcher]
	watchStarted = func(w *watcher) { started.Store(w) }
	t.Cleanup(func() { watchStarted = nil })
	const limit, waves, names = 20, 4, 500
	out, _ := f.watching(t, "--max-services", strconv.Itoa(limit))
	waitOutput(t, out, "watching", "greeter", "1 offered to clients: greeter-1")
	w := started.Load()
	base := runtime.NumGoroutine()

	// What one wave may cost at most: well under one goroutine per name.
	maxGoroutines := base + limit*(names/limit/2)
	peakServices, peakGoroutines := 0, 0
	sample := func() (services, keys int, full bool) {
		services, keys, full = w.followed()
		peakServices, peakGoroutines = max(peakServices, services), max(peakGoroutines, runtime.NumGoroutine())
		return services, keys, full
	}
	until := func(what string, ok func(services, keys int, full bool) bool) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for !ok(sample()) {
			if time.Now().After(deadline) {
				s, k, full := w.followed()
				t.Fatalf("%s: %d services and %d keys followed (beyond the limit: %v)", what, s, k, full)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	kv := f.b.KeyValue()
	for wave := range waves {
		var keys []string
		for i := range names {
			svc := fmt.Sprintf("w%ds%d", wave, i)
			in := instance(svc, "i-1", natskv.StatusActive, "")
			in.LastHeartbeat = time.Now()
			rec, err := natskv.EncodeInstance(in)
			if err != nil {
				t.Fatal(err)
			}
			key := "service-instances." + svc + ".i-1"
			if _, err := kv.Put(ctxT(t), key, rec); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, key)
			sample()
		}
		until("the bucket full of names", func(s, _ int, full bool) bool { return s == limit && full })
		for _, k := range keys {
			if err := kv.Delete(ctxT(t), k); err != nil {
				t.Fatal(err)
			}
			sample()
		}
		// Each service let go once its key is gone: greeter stays.
		until("the names gone", func(s, k int, full bool) bool { return s == 1 && k <= 1 && !full })
	}
	t.Logf("peak: %d services, %d goroutines (%d before the names came)", peakServices, peakGoroutines, base)
	if peakServices > limit {
		t.Errorf("followed %d services at once, --max-services %d", peakServices, limit)
	}
	if peakGoroutines > maxGoroutines {
		t.Errorf("%d goroutines at the peak, %d before the names came; bound %d", peakGoroutines, base, maxGoroutines)
	}
	if n := strings.Count(out.String(), " limit "); n != waves {
		t.Errorf("the limit told %d times, want once a wave (%d)", n, waves)
	}
	waitOutput(t, out, "limit", "following 20 services (--max-services)")
	// Still following the first service.
	f.register(instance("greeter", "greeter-2", natskv.StatusActive, ""))
	waitOutput(t, out, "added", "greeter/greeter-2")
}

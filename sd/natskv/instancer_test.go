package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestManyInstancesAcrossServices(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	const services, perService = 8, 25
	want := map[string][]string{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for s := range services {
		svc := fmt.Sprintf("svc-%d", s)
		for n := range perService {
			id := fmt.Sprintf("%s-i%02d", svc, n)
			want[svc] = append(want[svc], id)
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := natskv.NewRegistrar(b, inst(svc, id), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if err := r.RegisterContext(ctxT(t)); err != nil {
					t.Error(err)
				}
				mu.Lock()
				t.Cleanup(func() { r.Close() })
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for svc, ids := range want {
		i := newInstancer(t, b, svc)
		ch := subscribe(t, i)
		evs := waitSet(t, ch, ids...)
		if len(evs) != 1 {
			t.Errorf("%s: want the full set in the first event, have %d events", svc, len(evs))
		}
		if have := len(i.Instances()); have != perService {
			t.Errorf("%s: Instances: want %d, have %d", svc, perService, have)
		}
	}
}

func TestFirstEventWaitsForInitialValues(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	var ids []string
	for n := range 60 {
		id := fmt.Sprintf("i%02d", n)
		ids = append(ids, id)
		register(t, b, inst("svc", id))
	}
	i := newInstancer(t, b, "svc")
	ch := subscribe(t, i)
	ev := <-ch
	if ev.Err != nil || !slices.Equal(ev.Instances, ids) {
		t.Fatalf("first event: want all %d instances, have %v (err %v)", len(ids), ev.Instances, ev.Err)
	}
	// An empty service publishes an empty set, not nothing.
	empty := subscribe(t, newInstancer(t, b, "nobody"))
	waitSet(t, empty)
}

func TestStatusChangesAndStandby(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	ra := register(t, b, inst("svc", "a"))
	register(t, b, inst("svc", "b"))
	all := newInstancer(t, b, "svc")
	active := newInstancer(t, b, "svc", natskv.WithExcludeStandby())
	chAll, chActive := subscribe(t, all), subscribe(t, active)
	waitSet(t, chAll, "a", "b")
	waitSet(t, chActive, "a", "b")
	ctx := ctxT(t)

	if err := ra.SetStatus(ctx, natskv.StatusStandby); err != nil {
		t.Fatal(err)
	}
	waitSet(t, chActive, "b")
	// The set `all` offers is unchanged, yet its subscribers are told: the
	// same set again, with Lookup already saying STANDBY when it arrives,
	// so a balancer that prefers ACTIVE instances can re-read it.
	waitSet(t, chAll, "a", "b")
	if in, ok := all.Lookup("a"); !ok || in.Status != natskv.StatusStandby {
		t.Fatalf("Lookup(a) when the event arrived = %+v, %v; want STANDBY", in, ok)
	}
	if err := ra.SetStatus(ctx, natskv.StatusUnhealthy); err != nil {
		t.Fatal(err)
	}
	waitSet(t, chAll, "b")
	if _, ok := all.Lookup("a"); ok {
		t.Fatal("an UNHEALTHY instance is still offered")
	}
	if err := ra.SetStatus(ctx, natskv.StatusActive); err != nil {
		t.Fatal(err)
	}
	waitSet(t, chAll, "a", "b")
	waitSet(t, chActive, "a", "b")
	if err := ra.SetStatus(ctx, "BUSY"); !errors.Is(err, registry.ErrInvalidStatus) {
		t.Fatalf("want ErrInvalidStatus, have %v", err)
	}
}

func TestHeartbeatsEmitNothing(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	register(t, b, inst("svc", "a"), natskv.WithHeartbeat(50*time.Millisecond))
	cs := make(changes, 1024)
	i := newInstancer(t, b, "svc", cs.opt(), natskv.WithHeartbeat(50*time.Millisecond))
	ch := subscribe(t, i)
	waitSet(t, ch, "a")
	for range 5 { // five rewrites of the record reach the instancer...
		cs.wait(t, "service-instances.svc.a", natskv.ChangeUpdated)
	}
	select { // ...and none of them is an event
	case ev := <-ch:
		t.Fatalf("heartbeat produced an event: %+v", ev)
	default:
	}
}

func TestCleanDeregisterIsNotAnExpiry(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	r := register(t, b, inst("svc", "a"))
	register(t, b, inst("svc", "b"))
	cs := make(changes, 64)
	i := newInstancer(t, b, "svc", cs.opt())
	ch := subscribe(t, i)
	waitSet(t, ch, "a", "b")
	ctx := ctxT(t)
	if err := r.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.DeregisterContext(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	waitSet(t, ch, "b")
	c := cs.wait(t, r.Key(), natskv.ChangeDeleted, natskv.ChangeExpired, natskv.ChangePurged, natskv.ChangeStale)
	if c.Kind != natskv.ChangeDeleted || c.Instance.InstanceID != "a" {
		t.Fatalf("want a clean delete of a, have %v of %q", c.Kind, c.Instance.InstanceID)
	}
	if _, err := b.KeyValue().Get(ctx, r.Key()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("record still there after Deregister: %v", err)
	}
}

func TestCrashExpiresOnServerWithMarkers(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{LimitMarkerTTL: time.Second})
	if c := b.Capabilities(); !c.Markers || !c.MsgTTL {
		t.Fatalf("want markers and per-message TTL, have %v", c)
	}
	hb := 300 * time.Millisecond
	r := register(t, b, inst("svc", "crash"), natskv.WithHeartbeat(hb)) // TTL 3 heartbeats → 1 s
	register(t, b, inst("svc", "ok"), natskv.WithHeartbeat(hb))
	if have := r.TTL(); have != time.Second {
		t.Fatalf("TTL: want 1s, have %v", have)
	}
	cs := make(changes, 1024)
	// No staleness check: only the server's expiry marker can remove it.
	i := newInstancer(t, b, "svc", cs.opt(), natskv.WithStaleAfter(-1))
	ch := subscribe(t, i)
	waitSet(t, ch, "crash", "ok")
	time.Sleep(2 * hb) // let heartbeats renew the TTL at least once
	r.Close()          // stops heartbeating, does not delete: a crash
	start := time.Now()
	c := cs.wait(t, r.Key(), natskv.ChangeExpired, natskv.ChangeDeleted, natskv.ChangePurged)
	waitSet(t, ch, "ok")
	if c.Kind != natskv.ChangeExpired {
		t.Fatalf("want an expiry, have %v", c.Kind)
	}
	t.Logf("crash noticed %v after the last heartbeat stopped (TTL %v)", time.Since(start), r.TTL())
}

func TestCrashNoticedByHeartbeatAgeWithoutMarkers(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{NoTTL: true})
	if c := b.Capabilities(); c.Markers || c.MsgTTL {
		t.Fatalf("want a bucket without markers, have %v", c)
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	hb := 200 * time.Millisecond
	r := register(t, b, inst("svc", "crash"), natskv.WithHeartbeat(hb))
	register(t, b, inst("svc", "ok"), natskv.WithHeartbeat(hb))
	cs := make(changes, 1024)
	i := newInstancer(t, b, "svc", cs.opt(), natskv.WithHeartbeat(hb), natskv.WithStaleAfter(time.Second), natskv.WithMeterProvider(mp))
	ch := subscribe(t, i)
	waitSet(t, ch, "crash", "ok")
	r.Close()
	c := cs.wait(t, r.Key(), natskv.ChangeStale, natskv.ChangeDeleted, natskv.ChangeExpired)
	if c.Kind != natskv.ChangeStale {
		t.Fatalf("want stale, have %v", c.Kind)
	}
	waitSet(t, ch, "ok")
	if have := counter(t, reader, metricStaleDropped); have < 1 {
		t.Fatalf("stale dropped: want ≥ 1, have %d", have)
	}
	// Nothing told the watch: the record is still in the bucket.
	if _, err := b.KeyValue().Get(ctxT(t), r.Key()); err != nil {
		t.Fatalf("want the crashed record still stored, have %v", err)
	}
}

func TestVanishedEntryIsRecreated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    natskv.BucketConfig
		remove func(kv jetstream.KeyValue, key string) error
		kind   natskv.ChangeKind
	}{
		// Buckets CreateBucket makes refuse purges: an operator deletes.
		{"deleted", natskv.BucketConfig{}, func(kv jetstream.KeyValue, key string) error { return kv.Delete(ctxT(t), key) }, natskv.ChangeDeleted},
		{"purged", natskv.BucketConfig{LimitMarkerTTL: time.Minute}, func(kv jetstream.KeyValue, key string) error { return kv.Purge(ctxT(t), key) }, natskv.ChangePurged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, b := newBucket(t, tc.cfg)
			r := register(t, b, inst("svc", "a"), natskv.WithHeartbeat(200*time.Millisecond))
			cs := make(changes, 1024)
			i := newInstancer(t, b, "svc", cs.opt())
			ch := subscribe(t, i)
			waitSet(t, ch, "a")
			if err := tc.remove(b.KeyValue(), r.Key()); err != nil { // an operator removes it
				t.Fatal(err)
			}
			cs.wait(t, r.Key(), tc.kind)
			waitSet(t, ch)
			waitSet(t, ch, "a") // the next heartbeat brings it back
		})
	}
}

func TestServerRestart(t *testing.T) {
	s, b := newBucket(t, natskv.BucketConfig{})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	register(t, b, inst("svc", "a"), natskv.WithHeartbeat(200*time.Millisecond))
	i := newInstancer(t, b, "svc", natskv.WithMeterProvider(mp))
	ch := subscribe(t, i)
	waitSet(t, ch, "a")
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, ch); !errors.Is(err, natskv.ErrWatchLost) {
		t.Fatalf("want ErrWatchLost, have %v", err)
	}
	if have := i.Instances(); len(have) != 1 {
		t.Fatalf("the last set is kept while the watch is down: have %v", have)
	}
	waitSet(t, ch, "a") // a fresh full set after recovery
	register(t, b, inst("svc", "b"))
	waitSet(t, ch, "a", "b") // the watch resumed
	if have := counter(t, reader, metricRestarts); have < 1 {
		t.Fatalf("watch restarts: want ≥ 1, have %d", have)
	}
	// Refresh rebuilds the watch and returns once the full set is back.
	if err := i.Refresh(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if have := i.Instances(); len(have) != 2 {
		t.Fatalf("after Refresh: want 2 instances, have %+v", have)
	}
}

func TestRegistrationComesBackAfterStoreLoss(t *testing.T) {
	// A memory bucket loses everything in a restart: the registrar must
	// write its record again on reconnect.
	s, b := newBucket(t, natskv.BucketConfig{Storage: jetstream.MemoryStorage})
	register(t, b, inst("svc", "a"), natskv.WithHeartbeat(time.Hour))
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	// The bucket itself is gone too; recreate it as an operator would.
	eventually(t, "recreate bucket", func() error {
		_, err := natskv.CreateBucket(ctx, b.JetStream(), natskv.BucketConfig{Storage: jetstream.MemoryStorage})
		return err
	})
	eventually(t, "record rewritten", func() error {
		_, err := b.KeyValue().Get(ctx, "service-instances.svc.a")
		return err
	})
}

func TestBadEntriesSkippedAndCounted(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{MaxValueSize: 1 << 20})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	kv, ctx := b.KeyValue(), ctxT(t)
	valid := func(svc, id string) string {
		return fmt.Sprintf(`{"serviceName":%q,"instanceId":%q,"version":"1.0.0","status":"ACTIVE","lastHeartbeat":%q}`,
			svc, id, time.Now().UTC().Format(time.RFC3339Nano))
	}
	bad := map[string]string{ // keys of this service with unusable values: skipped and counted
		"service-instances.svc.nonjson":  `not json`,
		"service-instances.svc.types":    `{"serviceName":"svc","instanceId":"types","version":1,"status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z"}`,
		"service-instances.svc.status":   strings.Replace(valid("svc", "status"), "ACTIVE", "SLEEPY", 1),
		"service-instances.svc.missing":  `{"serviceName":"svc","instanceId":"missing","status":"ACTIVE"}`,
		"service-instances.svc.huge":     strings.Replace(valid("svc", "huge"), `}`, `,"metadata":{"x":"`+strings.Repeat("x", 100<<10)+`"}}`, 1),
		"service-instances.svc.mismatch": valid("svc", "someone-else"),
		"service-instances.svc.bad=name": valid("svc", "bad=name"),
	}
	ignored := map[string]string{ // keys outside the layout or of other services
		"svc":                          `{"name":"svc"}`,
		"service-instances.other.x":    valid("other", "x"),
		"service-instances_svc_x":      valid("svc", "x"),
		"service-instances.svc.x.deep": valid("svc", "x"),
	}
	for k, v := range bad {
		if _, err := kv.PutString(ctx, k, v); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	for k, v := range ignored {
		if _, err := kv.PutString(ctx, k, v); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	register(t, b, inst("svc", "good"))
	i := newInstancer(t, b, "svc", natskv.WithMeterProvider(mp))
	ch := subscribe(t, i)
	waitSet(t, ch, "good")
	// A bad write after the initial values is skipped too.
	if _, err := kv.PutString(ctx, "service-instances.svc.late", `{"serviceName":`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "skipped count", func() error {
		if have, want := counter(t, reader, metricSkipped), int64(len(bad)+1); have != want {
			return fmt.Errorf("want %d skipped, have %d", want, have)
		}
		return nil
	})
	if have := i.Instances(); len(have) != 1 || have[0].InstanceID != "good" {
		t.Fatalf("want only good, have %+v", have)
	}
	// A record turning bad removes the instance it replaces.
	if _, err := kv.PutString(ctx, "service-instances.svc.good", `{}`); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch)
}

func TestAegisExampleRecordDiscovered(t *testing.T) {
	// A bucket as the Python SDK makes it: no per-key TTL, keys in its layout,
	// service definitions beside the instances.
	_, b := newBucket(t, natskv.BucketConfig{NoTTL: true})
	kv, ctx := b.KeyValue(), ctxT(t)
	for k, v := range map[string]string{
		"service-instances__echo-service__echo-service-3f9a1c2b": aegisExample,
		"echo-service":                           `{"name":"echo-service","owner":"team"}`,
		"service-instances_echo-service_old":     aegisExample,
		"service-instances__echo-service-x__i1":  strings.Replace(aegisExample, `"echo-service"`, `"echo-service-x"`, 1),
		"service-instances__echo-service__a__b":  aegisExample,
		"service-instances__echo-service__bad=1": `nope`,
	} {
		if _, err := kv.PutString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	cs := make(changes, 64)
	i := newInstancer(t, b, "echo-service", natskv.WithLayout(natskv.LayoutAegis), cs.opt())
	ch := subscribe(t, i)
	waitSet(t, ch, "echo-service-3f9a1c2b")
	in, ok := i.Lookup("echo-service-3f9a1c2b")
	if !ok || in.Version != "1.0.0" || in.Metadata["start_time"] != "2025-08-08T05:02:24.101234+00:00" {
		t.Fatalf("Lookup: %+v %v", in, ok)
	}
	cs.wait(t, "service-instances__echo-service__bad=1", natskv.ChangeSkipped)

	// Our registrar in the same layout writes what the Python reader accepts.
	r := register(t, b, inst("echo-service", "go-1"), natskv.WithLayout(natskv.LayoutAegis))
	if want := "service-instances__echo-service__go-1"; r.Key() != want {
		t.Fatalf("key: want %s, have %s", want, r.Key())
	}
	waitSet(t, ch, "echo-service-3f9a1c2b", "go-1")
	e, err := kv.Get(ctx, r.Key())
	if err != nil {
		t.Fatal(err)
	}
	if err := aegisStrict(e.Value()); err != nil {
		t.Fatalf("%s: %v", e.Value(), err)
	}
}

func TestFormatterAndLookup(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	register(t, b, inst("svc", "a"))
	noAddr := inst("svc", "b")
	noAddr.Metadata = nil
	register(t, b, noAddr)
	i := newInstancer(t, b, "svc", natskv.WithFormatter(func(in natskv.Instance) string { return in.Metadata["addr"] }))
	ch := subscribe(t, i)
	waitSet(t, ch, "10.0.0.1:a") // b has no address: left out
	in, ok := i.Lookup("10.0.0.1:a")
	if !ok || in.InstanceID != "a" {
		t.Fatalf("Lookup by formatted string: %+v %v", in, ok)
	}
	if _, ok := i.Lookup("a"); ok {
		t.Fatal("Lookup by raw ID must miss when a formatter is set")
	}
}

// slow and concurrent subscribers

func TestSlowSubscriberGetsLatestNotBacklog(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	ra := register(t, b, inst("svc", "a"))
	register(t, b, inst("svc", "b"))
	i := newInstancer(t, b, "svc")
	slow := make(chan sd.Event) // unbuffered and not read for a while
	i.Register(slow)
	defer i.Deregister(slow)
	fast := subscribe(t, i)
	waitSet(t, fast, "a", "b")
	ctx := ctxT(t)
	for range 10 { // twenty changes the slow subscriber does not read
		if err := ra.SetStatus(ctx, natskv.StatusUnhealthy); err != nil {
			t.Fatal(err)
		}
		waitSet(t, fast, "b")
		if err := ra.SetStatus(ctx, natskv.StatusActive); err != nil {
			t.Fatal(err)
		}
		waitSet(t, fast, "a", "b")
	}
	// The slow one gets the newest set, once.
	ev := <-slow
	if !slices.Equal(ev.Instances, []string{"a", "b"}) {
		t.Fatalf("slow subscriber: want [a b], have %v", ev.Instances)
	}
	select {
	case ev := <-slow:
		t.Fatalf("slow subscriber got a backlog: %v", ev)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestConcurrentSubscribers(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	register(t, b, inst("svc", "a"))
	i := newInstancer(t, b, "svc")
	waitSet(t, subscribe(t, i), "a")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // churn while subscribers come and go
		defer wg.Done()
		r, err := natskv.NewRegistrar(b, inst("svc", "churn"), nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer r.Close()
		for {
			select {
			case <-stop:
				r.DeregisterContext(context.Background())
				return
			default:
			}
			r.RegisterContext(context.Background())
			r.DeregisterContext(context.Background())
		}
	}()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				ch := make(chan sd.Event, 1)
				i.Register(ch)
				select {
				case ev := <-ch: // Register delivers the current state at once
					if ev.Err != nil || !slices.Contains(ev.Instances, "a") {
						t.Errorf("registered subscriber got %+v", ev)
					}
				case <-time.After(waitFor):
					t.Error("no state on Register")
				}
				i.Deregister(ch)
				close(ch) // safe: nothing is sent after Deregister returns
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
}

func TestEndpointerWiringAndClose(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	register(t, b, inst("svc", "a"))
	i := newInstancer(t, b, "svc")
	for range 20 { // go-kit's Endpointer closes its channel right after Deregister
		e := sd.NewEndpointer(i, func(string) (endpoint.Endpoint, io.Closer, error) { return endpoint.Nop, nil, nil }, log.NewNopLogger())
		e.Close()
	}
}

func TestStopTwiceAndAfterStop(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	i, err := natskv.NewInstancer(b, "svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan sd.Event) // never read: Stop must not hang on it
	i.Register(ch)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); i.Stop() }()
	}
	wg.Wait()
	i.Stop()
	i.Register(make(chan sd.Event)) // no-op
	if err := i.Refresh(context.Background()); !errors.Is(err, natskv.ErrStopped) {
		t.Fatalf("Refresh after Stop: want ErrStopped, have %v", err)
	}
}

func TestRegistrarLifecycle(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	ctx := ctxT(t)
	r, err := natskv.NewRegistrar(b, inst("svc", "a"), nil, natskv.WithHeartbeat(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for n := range 8 { // Register/Deregister/SetStatus races
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				switch n % 3 {
				case 0:
					r.Register()
				case 1:
					r.Deregister()
				default:
					r.SetStatus(ctx, natskv.StatusStandby)
				}
			}
		}()
	}
	wg.Wait()
	r.Register()
	r.Register()
	if _, err := b.KeyValue().Get(ctx, r.Key()); err != nil {
		t.Fatalf("registered twice, record missing: %v", err)
	}
	r.Deregister()
	r.Deregister()
	time.Sleep(100 * time.Millisecond) // a heartbeat would resurrect it here
	if _, err := b.KeyValue().Get(ctx, r.Key()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after Deregister: want ErrKeyNotFound, have %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := r.RegisterContext(ctx); !errors.Is(err, natskv.ErrClosed) {
		t.Fatalf("after Close: want ErrClosed, have %v", err)
	}
}

func TestInvalidNamesRefused(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	for _, svc := range []string{"", "a.b", "a*", ">", "a b", strings.Repeat("x", 65)} {
		if _, err := natskv.NewInstancer(b, svc, nil); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("NewInstancer(%q): want wire.ErrInvalidName, have %v", svc, err)
		}
		if _, err := natskv.NewRegistrar(b, inst(svc, "i"), nil); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("NewRegistrar(service %q): want wire.ErrInvalidName, have %v", svc, err)
		}
	}
	if _, err := natskv.NewRegistrar(b, inst("svc", "i.*"), nil); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("want wire.ErrInvalidName, have %v", err)
	}
	bad := inst("svc", "i")
	bad.Version = "v1"
	if _, err := natskv.NewRegistrar(b, bad, nil); !errors.Is(err, registry.ErrInvalidVersion) {
		t.Errorf("want ErrInvalidVersion, have %v", err)
	}
	if _, err := natskv.NewInstancer(b, "a__b", nil, natskv.WithLayout(natskv.LayoutAegis)); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("aegis layout: want wire.ErrInvalidName, have %v", err)
	}
	if _, err := natskv.CreateBucket(ctxT(t), b.JetStream(), natskv.BucketConfig{Name: "a.b"}); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("bucket: want wire.ErrInvalidName, have %v", err)
	}
}

func TestBucketProvisioning(t *testing.T) {
	s := natstest.Start(t)
	js := natstest.JetStream(t, natstest.Connect(t, s.URL()))
	ctx := ctxT(t)
	b, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "reg", History: 3})
	if err != nil {
		t.Fatal(err)
	}
	// The default: per-key TTL, no markers, no roll-ups or purges.
	if c := b.Capabilities(); c.History != 3 || c.Markers || !c.MsgTTL || c.Rollups || c.Purges ||
		!strings.Contains(c.String(), "roll-ups and purges refused") {
		t.Fatalf("capabilities: %+v", c)
	}
	// With markers the server allows roll-ups, and the bucket says so.
	mb, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "markers", LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := mb.Capabilities(); !c.Markers || !c.MsgTTL || c.LimitMarkerTTL != time.Minute || !c.Rollups ||
		!strings.Contains(c.String(), "any writer of one key can purge") {
		t.Fatalf("capabilities with markers: %+v", c)
	}
	if nb, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "nottl", NoTTL: true}); err != nil {
		t.Fatal(err)
	} else if c := nb.Capabilities(); c.Markers || c.MsgTTL || c.Rollups || c.Purges {
		t.Fatalf("capabilities without TTL: %+v", c)
	}
	if _, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "markers"}); !errors.Is(err, natskv.ErrBucketConfig) ||
		!strings.Contains(err.Error(), "roll-ups want false have true") {
		t.Fatalf("markers bucket asked without: want ErrBucketConfig naming roll-ups, have %v", err)
	}
	if _, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "reg", History: 3}); err != nil {
		t.Fatalf("same config again: %v", err)
	}
	_, err = natskv.CreateBucket(ctx, js, natskv.BucketConfig{Name: "reg", History: 5})
	if !errors.Is(err, natskv.ErrBucketConfig) || !strings.Contains(err.Error(), "history want 5 have 3") {
		t.Fatalf("different config: want ErrBucketConfig naming history, have %v", err)
	}
	st, _ := b.KeyValue().Status(ctx)
	if st.History() != 3 {
		t.Fatalf("existing bucket changed: history %d", st.History())
	}
	// A bucket made as AegisSDK makes it has no markers, and says so.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "service_registry"}); err != nil {
		t.Fatal(err)
	}
	ab, err := natskv.BindBucket(ctx, js, "service_registry")
	if err != nil {
		t.Fatal(err)
	}
	if c := ab.Capabilities(); c.Markers || c.MsgTTL || !c.Rollups || !strings.Contains(c.String(), "heartbeat age only") {
		t.Fatalf("aegis bucket: %v", c)
	}
	if _, err := natskv.BindBucket(ctx, js, "nope"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("bind missing: want ErrBucketNotFound, have %v", err)
	}
}

func TestPollingMode(t *testing.T) {
	s, b := newBucket(t, natskv.BucketConfig{})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	r := register(t, b, inst("svc", "a"), natskv.WithHeartbeat(200*time.Millisecond))
	i := newInstancer(t, b, "svc", natskv.WithPolling(200*time.Millisecond), natskv.WithMeterProvider(mp))
	ch := subscribe(t, i)
	waitSet(t, ch, "a")
	ctx := ctxT(t)
	register(t, b, inst("svc", "b"))
	if err := i.Refresh(ctx); err != nil { // forces the re-list now
		t.Fatal(err)
	}
	if have := len(i.Instances()); have != 2 {
		t.Fatalf("after Refresh: want 2 instances, have %d", have)
	}
	waitSet(t, ch, "a", "b")
	if err := r.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch, "b")
	s.Stop()
	if err := waitErr(t, ch); err == nil {
		t.Fatal("want an error event")
	}
	if have := i.Instances(); len(have) != 1 || have[0].InstanceID != "b" {
		t.Fatalf("cached set while the server is down: %+v", have)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := i.Refresh(rctx); err == nil {
		t.Fatal("Refresh with the server down: want an error")
	}
	if err := s.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch, "b")
	if hist := histogramCount(t, reader, metricListDuration); hist < 3 {
		t.Fatalf("list latency recorded %d times, want ≥ 3", hist)
	}
}

func TestMetrics(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	r := register(t, b, inst("svc", "a"))
	register(t, b, inst("svc", "b"))
	i := newInstancer(t, b, "svc", natskv.WithMeterProvider(mp))
	ch := subscribe(t, i)
	waitSet(t, ch, "a", "b")
	if err := r.DeregisterContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch, "b")
	if have := gauge(t, reader, metricInstances); have != 1 {
		t.Fatalf("instances gauge: want 1, have %d", have)
	}
	eventually(t, "events by kind", func() error {
		if kinds := counterBy(t, reader, metricEvents, "kind"); kinds["added"] != 2 || kinds["deleted"] != 1 {
			return fmt.Errorf("want 2 added and 1 deleted, have %v", kinds)
		}
		return nil
	})
}

// metric helpers

func collect(t testing.TB, r *sdkmetric.ManualReader, name string) []metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []metricdata.Aggregation
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				out = append(out, m.Data)
			}
		}
	}
	return out
}

func counter(t testing.TB, r *sdkmetric.ManualReader, name string) int64 {
	var n int64
	for _, v := range counterBy(t, r, name, "") {
		n += v
	}
	return n
}

func counterBy(t testing.TB, r *sdkmetric.ManualReader, name, attr string) map[string]int64 {
	out := map[string]int64{}
	for _, a := range collect(t, r, name) {
		if s, ok := a.(metricdata.Sum[int64]); ok {
			for _, dp := range s.DataPoints {
				v, _ := dp.Attributes.Value(attributeKey(attr))
				out[v.AsString()] += dp.Value
			}
		}
	}
	return out
}

func gauge(t testing.TB, r *sdkmetric.ManualReader, name string) int64 {
	for _, a := range collect(t, r, name) {
		if g, ok := a.(metricdata.Gauge[int64]); ok && len(g.DataPoints) > 0 {
			return g.DataPoints[0].Value
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func histogramCount(t testing.TB, r *sdkmetric.ManualReader, name string) uint64 {
	var n uint64
	for _, a := range collect(t, r, name) {
		if h, ok := a.(metricdata.Histogram[float64]); ok {
			for _, dp := range h.DataPoints {
				n += dp.Count
			}
		}
	}
	return n
}

// Describe is what lb.EndpointSet reads: STANDBY and the record's metadata,
// published before the event that carries the instance.
func TestDescribe(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	ra := register(t, b, inst("svc", "a"))
	i := newInstancer(t, b, "svc")
	ch := subscribe(t, i)
	waitSet(t, ch, "a")
	if attrs, ok := i.Describe("a"); !ok || attrs.Standby || attrs.Metadata["addr"] != "10.0.0.1:a" {
		t.Fatalf("Describe(a) = %+v, %v", attrs, ok)
	}
	if _, ok := i.Describe("zz"); ok {
		t.Fatal("Describe of an unknown instance must miss")
	}
	if err := ra.SetStatus(ctxT(t), natskv.StatusStandby); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch, "a")
	if attrs, ok := i.Describe("a"); !ok || !attrs.Standby {
		t.Fatalf("Describe(a) after STANDBY = %+v, %v", attrs, ok)
	}
}

// The one name limit: an instance ID of wire.MaxInstanceLen bytes registers and
// is discovered (the transport calls it by the same rules); one byte more is
// refused with the shared name error.
func TestLongestInstanceID(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	id := strings.Repeat("i", wire.MaxInstanceLen)
	register(t, b, inst("svc", id))
	i := newInstancer(t, b, "svc")
	waitSet(t, subscribe(t, i), id)
	_, err := natskv.NewRegistrar(b, inst("svc", id+"x"), nil)
	var ne *wire.NameError
	if !errors.Is(err, wire.ErrInvalidName) || !errors.As(err, &ne) || ne.Kind != "instance" {
		t.Fatalf("an ID over the limit: want a wire.NameError for the instance, have %v", err)
	}
}

package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The metrics an Instancer records (WithMeterProvider names them).
const (
	metricInstances    = "kitnats.registry.instances"
	metricEvents       = "kitnats.registry.watch.events"
	metricSkipped      = "kitnats.registry.skipped"
	metricStaleDropped = "kitnats.registry.stale_dropped"
	metricRestarts     = "kitnats.registry.watch.restarts"
	metricListDuration = "kitnats.registry.list.duration"
	metricStaleGuard   = "kitnats.registry.stale_guard.engaged"
)

const waitFor = 20 * time.Second // generous: the machine is shared

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newBucket starts a server and creates a registry bucket on it.
func newBucket(t testing.TB, cfg natskv.BucketConfig) (*natstest.Server, *natskv.Bucket) {
	t.Helper()
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	js := natstest.JetStream(t, nc)
	b, err := natskv.CreateBucket(ctxT(t), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func inst(svc, id string) natskv.Instance {
	return natskv.Instance{ServiceName: svc, InstanceID: id, Version: "1.0.0", Status: natskv.StatusActive,
		Metadata: map[string]string{"addr": "10.0.0.1:" + id}}
}

// register starts a registrar and deregisters it at cleanup.
func register(t testing.TB, b *natskv.Bucket, in natskv.Instance, opts ...natskv.RegistrarOption) *natskv.Registrar {
	t.Helper()
	r, err := natskv.NewRegistrar(b, in, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterContext(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newInstancer(t testing.TB, b *natskv.Bucket, svc string, opts ...natskv.InstancerOption) *natskv.Instancer {
	t.Helper()
	// Tests that need the set at once have it however loaded the machine.
	opts = append([]natskv.InstancerOption{natskv.WithReadyWait(waitFor)}, opts...)
	i, err := natskv.NewInstancer(b, svc, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(i.Stop)
	return i
}

// subscribe registers a buffered channel.
func subscribe(t testing.TB, i *natskv.Instancer) chan sd.Event {
	ch := make(chan sd.Event, 64)
	i.Register(ch)
	t.Cleanup(func() { i.Deregister(ch) })
	return ch
}

// waitSet reads events until one carries exactly want (sorted), failing after
// a generous deadline. It returns every event read, the last matching.
func waitSet(t testing.TB, ch <-chan sd.Event, want ...string) []sd.Event {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	if want == nil {
		want = []string{}
	}
	var seen []sd.Event
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-ch:
			seen = append(seen, ev)
			if ev.Err == nil && slices.Equal(nonNil(ev.Instances), want) {
				return seen
			}
		case <-deadline:
			t.Fatalf("want instances %v; events seen: %v", want, seen)
		}
	}
}

// waitErr reads events until one carries an error.
func waitErr(t testing.TB, ch <-chan sd.Event) error {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-ch:
			if ev.Err != nil {
				return ev.Err
			}
		case <-deadline:
			t.Fatal("want an error event, got none")
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// changes collects what WithChangeFunc reports.
type changes chan natskv.Change

func (c changes) opt() natskv.InstancerOption {
	return natskv.WithChangeFunc(func(ch natskv.Change) {
		select {
		case c <- ch:
		default:
		}
	})
}

func (c changes) wait(t testing.TB, key string, kinds ...natskv.ChangeKind) natskv.Change {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ch := <-c:
			if ch.Key == key && slices.Contains(kinds, ch.Kind) {
				return ch
			}
		case <-deadline:
			t.Fatalf("no %v change for %s", kinds, key)
		}
	}
}

func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = errors.Is
var _ = fmt.Sprint
var _ jetstream.KeyValue

func attributeKey(k string) attribute.Key { return attribute.Key(k) }

package natskv_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// judgeBucket reads every record of b as cmd/kitnats does and returns the
// instances the judge offers, sorted, and the judge.
func judgeBucket(t *testing.T, b *natskv.Bucket, l registry.Liveness, now time.Time) ([]string, *registry.Judge) {
	t.Helper()
	ctx := ctxT(t)
	j, err := registry.NewJudge(registry.JudgeConfig{Layout: registry.LayoutDotted, Liveness: l, Markers: b.Capabilities().Markers})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := b.KeyValue().ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for k := range keys.Keys() {
		e, err := b.KeyValue().Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		j.Add(k, e.Value(), e.Revision(), e.Created())
		all = append(all, k)
	}
	var offered []string
	for _, k := range all {
		if h, ok := j.Health(k, now); ok && h.Offered() {
			_, id, _ := registry.LayoutDotted.Parse(k)
			offered = append(offered, id)
		}
	}
	slices.Sort(offered)
	return offered, j
}

func offeredBy(i *natskv.Instancer) []string {
	var ids []string
	for _, in := range i.Instances() {
		ids = append(ids, in.InstanceID)
	}
	slices.Sort(ids)
	return ids
}

// The judge cmd/kitnats uses offers exactly what a running Instancer
// offers: active and standby, not unhealthy, not stale; and MsgTTL reads
// back the TTL a Registrar writes.
func TestJudgeAgreesWithInstancer(t *testing.T) {
	s, b := newBucket(t, natskv.BucketConfig{Name: "inspect"})
	ctx := ctxT(t)
	liveness := natskv.Options(natskv.WithHeartbeat(200*time.Millisecond), natskv.WithTTL(5*time.Second))
	js := b.JetStream()
	for id, st := range map[string]natskv.Status{"a": natskv.StatusActive, "s": natskv.StatusStandby, "u": natskv.StatusUnhealthy} {
		in := inst("svc", id)
		in.Status = st
		r := register(t, b, in, liveness)
		stream, err := js.Stream(ctx, "KV_inspect")
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.GetLastMsgForSubject(ctx, "$KV.inspect."+r.Key())
		if err != nil {
			t.Fatal(err)
		}
		if ttl, ok := registry.MsgTTL(msg.Header); !ok || ttl != r.TTL() {
			t.Errorf("%s: MsgTTL %v, %v; registrar's TTL %v", id, ttl, ok, r.TTL())
		}
	}
	_ = s
	// A record written once, never again: it goes stale.
	dead := inst("svc", "d")
	dead.LastHeartbeat = time.Now()
	data, _ := natskv.EncodeInstance(dead)
	if _, err := b.KeyValue().Put(ctx, "service-instances.svc.d", data); err != nil {
		t.Fatal(err)
	}
	stale := time.Second
	i := newInstancer(t, b, "svc", liveness, natskv.WithStaleAfter(stale))
	want := []string{"a", "s"}
	eventually(t, "the Instancer drops d", func() error {
		if have := offeredBy(i); !slices.Equal(have, want) {
			return fmt.Errorf("offered %v", have)
		}
		return nil
	})
	judged, _ := judgeBucket(t, b, registry.Liveness{Heartbeat: 200 * time.Millisecond, TTL: 5 * time.Second, StaleAfter: stale}, time.Now())
	if !slices.Equal(judged, want) {
		t.Errorf("judge offers %v, Instancer %v", judged, want)
	}
}

// While a client's stale guard holds a fleet that stopped writing
// together, the judge holds it too, and says why: kitnats ls and the
// client agree.
func TestJudgeAgreesWithStaleGuard(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{NoTTL: true}) // records outlive the threshold

	hb, staleAfter := 100*time.Millisecond, 3*time.Second
	var rs []*natskv.Registrar
	for _, id := range []string{"x", "y", "z"} {
		rs = append(rs, register(t, b, inst("svc", id), natskv.WithHeartbeat(hb)))
	}
	glog := &guardLog{}
	i, err := natskv.NewInstancer(b, "svc", log.Logger(glog), natskv.WithHeartbeat(hb),
		natskv.WithStaleAfter(staleAfter), natskv.WithReadyWait(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	defer i.Stop()
	waitSet(t, subscribe(t, i), "x", "y", "z")
	for _, r := range rs {
		r.Close()
	}
	eventually(t, "guard engaged", func() error {
		if lines := glog.get(); len(lines) == 0 || lines[0] != "engaged" {
			return fmt.Errorf("log %v", lines)
		}
		return nil
	})
	held := offeredBy(i)
	judged, j := judgeBucket(t, b, registry.Liveness{Heartbeat: hb, StaleAfter: staleAfter}, time.Now())
	if lines := glog.get(); len(lines) != 1 {
		t.Skipf("the guard let go before the judge ran (log %v): too slow a machine to compare", lines)
	}
	if !slices.Equal(held, []string{"x", "y", "z"}) || !slices.Equal(judged, held) || j.Guard("svc", time.Now()) == "" {
		t.Errorf("Instancer holds %v, judge offers %v (guard %q)", held, judged, j.Guard("svc", time.Now()))
	}
}

package natskv

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
)

func TestParseLayout(t *testing.T) {
	for _, l := range []Layout{LayoutDotted, LayoutAegis} {
		got, err := ParseLayout(l.String())
		if err != nil || got != l {
			t.Errorf("ParseLayout(%q) = %v, %v", l.String(), got, err)
		}
	}
	for _, s := range []string{"", "Dotted", "aegis ", "flat"} {
		if _, err := ParseLayout(s); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("ParseLayout(%q): err %v, want ErrInvalidOption", s, err)
		}
	}
}

func TestLayoutParse(t *testing.T) {
	type want struct {
		service, instance string
		ok                bool
	}
	cases := []struct {
		l    Layout
		key  string
		want want
	}{
		{LayoutDotted, "service-instances.greeter.greeter-1", want{"greeter", "greeter-1", true}},
		{LayoutDotted, "service-instances.a_.b", want{"a_", "b", true}},
		{LayoutDotted, "service-instances.greeter.-x", want{"greeter", "-x", true}}, // held by greeter's Instancer, skipped there
		{LayoutDotted, "service-instances.greeter", want{}},
		{LayoutDotted, "service-instances.greeter.a.b", want{}},
		{LayoutDotted, "service-instances.1bad.a", want{}},
		{LayoutDotted, "service-instances__greeter__greeter-1", want{}},
		{LayoutDotted, "other.greeter.a", want{}},
		{LayoutAegis, "service-instances__greeter__greeter-1", want{"greeter", "greeter-1", true}},
		{LayoutAegis, "service-instances__a___inst", want{}}, // "a_" is no service of the layout, "_inst" no instance
		{LayoutAegis, "service-instances__ab__Inst", want{"ab", "Inst", true}},
		{LayoutAegis, "service-instances__Ab__inst", want{}}, // upper-case service
		{LayoutAegis, "service-instances__a__inst", want{}},  // one-letter service
		{LayoutAegis, "service-instances__a_b__c_d", want{"a_b", "c_d", true}},
		{LayoutAegis, "service-instances__greeter___x", want{}},
		{LayoutAegis, "service-instances__greeter-__x", want{}},
		{LayoutAegis, "service-instances__greeter__x__y", want{}},
		{LayoutAegis, "service-instances__greeter", want{}},
		{LayoutAegis, "service-instances.greeter.greeter-1", want{}},
		{LayoutAegis, "service-instances__greeter__", want{"greeter", "", true}},
		{Layout(7), "service-instances.greeter.greeter-1", want{}},
	}
	for _, c := range cases {
		s, i, ok := c.l.Parse(c.key)
		if got := (want{s, i, ok}); got != c.want {
			t.Errorf("%v.Parse(%q) = %+v, want %+v", c.l, c.key, got, c.want)
		}
	}
	// Parse undoes Key, and agrees with what an Instancer of the service
	// holds.
	for _, l := range []Layout{LayoutDotted, LayoutAegis} {
		for _, n := range [][2]string{{"greeter", "greeter-1"}, {"a_b", "b_"}, {"x-y", "0"}, {"sv", "i-_-j"}} {
			key, err := l.Key(n[0], n[1])
			if err != nil {
				t.Fatal(err)
			}
			s, i, ok := l.Parse(key)
			if !ok || s != n[0] || i != n[1] {
				t.Errorf("%v: Parse(Key(%q, %q)) = %q, %q, %v", l, n[0], n[1], s, i, ok)
			}
			if id, ours := l.match(s, key); !ours || id != i {
				t.Errorf("%v: match(%q, %q) = %q, %v", l, s, key, id, ours)
			}
		}
	}
}

func TestDecodeRecord(t *testing.T) {
	good := Instance{ServiceName: "greeter", InstanceID: "g-1", Version: "1.0.0", Status: StatusActive,
		LastHeartbeat: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	data, err := EncodeInstance(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRecord(LayoutDotted, "service-instances.greeter.g-1", data); err != nil || got.InstanceID != "g-1" {
		t.Errorf("good record: %+v, %v", got, err)
	}
	if _, err := DecodeRecord(LayoutAegis, "service-instances__greeter__g-1", data); err != nil {
		t.Errorf("good aegis record: %v", err)
	}
	cases := []struct {
		name string
		l    Layout
		key  string
		data string
		is   []error
	}{
		{"other service", LayoutDotted, "service-instances.other.g-1", string(data), []error{ErrInvalidRecord, ErrKeyMismatch}},
		{"other instance", LayoutDotted, "service-instances.greeter.g-2", string(data), []error{ErrInvalidRecord, ErrKeyMismatch}},
		{"wrong layout", LayoutAegis, "service-instances.greeter.g-1", string(data), []error{ErrInvalidRecord, ErrKeyMismatch}},
		{"not json", LayoutDotted, "service-instances.greeter.g-1", "{", []error{ErrInvalidRecord}},
		{"bad status", LayoutDotted, "service-instances.greeter.g-1",
			`{"serviceName":"greeter","instanceId":"g-1","version":"1.0.0","status":"BOGUS","lastHeartbeat":"2026-01-02T03:04:05+00:00"}`,
			[]error{ErrInvalidRecord, ErrInvalidStatus}},
		{"no version", LayoutDotted, "service-instances.greeter.g-1",
			`{"serviceName":"greeter","instanceId":"g-1","status":"ACTIVE","lastHeartbeat":"2026-01-02T03:04:05+00:00"}`,
			[]error{ErrInvalidRecord, ErrMissingField}},
	}
	for _, c := range cases {
		_, err := DecodeRecord(c.l, c.key, []byte(c.data))
		for _, target := range c.is {
			if !errors.Is(err, target) {
				t.Errorf("%s: err %v, want it to match %v", c.name, err, target)
			}
		}
	}
}

func TestMsgTTL(t *testing.T) {
	cases := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"1m0s", time.Minute, true},
		{"30", 30 * time.Second, true},
		{"", 0, false},
		{"never", 0, false},
		{"-1", 0, false},
		{"0s", 0, false},
		{"soon", 0, false},
	}
	for _, c := range cases {
		h := nats.Header{}
		if c.v != "" {
			h.Set(jetstream.MsgTTLHeader, c.v)
		}
		if got, ok := MsgTTL(h); got != c.want || ok != c.ok {
			t.Errorf("MsgTTL(%q) = %v, %v; want %v, %v", c.v, got, ok, c.want, c.ok)
		}
	}
	if _, ok := MsgTTL(nil); ok {
		t.Error("MsgTTL(nil) found a TTL")
	}
}

func TestJudge(t *testing.T) {
	markers := &Bucket{caps: Capabilities{Bucket: "b", MsgTTL: true, Markers: true}}
	plain := &Bucket{caps: Capabilities{Bucket: "b"}}
	for _, c := range []struct {
		name string
		b    *Bucket
		opts []InstancerOption
		want time.Duration
	}{
		{"markers, defaults", markers, nil, 31 * time.Second},
		{"no markers, defaults", plain, nil, 30 * time.Second},
		{"markers, heartbeat", markers, []InstancerOption{WithHeartbeat(300 * time.Millisecond)}, 2 * time.Second},
		{"no markers, TTL", plain, []InstancerOption{WithHeartbeat(time.Second), WithTTL(5 * time.Second)}, 5 * time.Second},
		{"explicit", markers, []InstancerOption{WithStaleAfter(time.Minute)}, time.Minute},
		{"never", plain, []InstancerOption{WithStaleAfter(-1)}, -1},
	} {
		j, err := NewJudge(c.b, c.opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := j.StaleAfter(); got != c.want {
			t.Errorf("%s: StaleAfter %v, want %v", c.name, got, c.want)
		}
		// The Instancer's own default, from its own helper.
		if len(c.opts) == 0 {
			o := defaultCommon()
			if d := staleDefault(c.b, &o); d != j.StaleAfter() {
				t.Errorf("%s: judge %v, Instancer default %v", c.name, j.StaleAfter(), d)
			}
		}
	}
	if _, err := NewJudge(markers, WithHeartbeat(-1)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad option: %v", err)
	}
	if _, err := NewJudge(nil); err == nil {
		t.Error("nil bucket accepted")
	}

	j, _ := NewJudge(plain, WithStaleAfter(10*time.Second))
	jx, _ := NewJudge(plain, WithStaleAfter(10*time.Second), WithExcludeStandby())
	never, _ := NewJudge(plain, WithStaleAfter(-1))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := func(s Status) Instance {
		return Instance{ServiceName: "s", InstanceID: "i", Version: "1.0.0", Status: s}
	}
	for _, c := range []struct {
		j       *Judge
		s       Status
		age     time.Duration
		want    Health
		offered bool
	}{
		{j, StatusActive, time.Second, HealthActive, true},
		{j, StatusStandby, time.Second, HealthStandby, true},
		{jx, StatusStandby, time.Second, HealthExcluded, false},
		{j, StatusUnhealthy, time.Second, HealthUnhealthy, false},
		{j, StatusActive, 10 * time.Second, HealthActive, true}, // not older than the threshold
		{j, StatusActive, 11 * time.Second, HealthStale, false},
		{j, StatusUnhealthy, time.Minute, HealthStale, false},
		{j, StatusActive, -time.Minute, HealthActive, true}, // a write "from the future"
		{never, StatusActive, 1000 * time.Hour, HealthActive, true},
	} {
		h := c.j.Health(in(c.s), now.Add(-c.age), now)
		if h != c.want || h.Offered() != c.offered {
			t.Errorf("%s aged %v: %v (offered %v), want %v (offered %v)", c.s, c.age, h, h.Offered(), c.want, c.offered)
		}
	}
	for h, s := range map[Health]string{HealthActive: "active", HealthStandby: "standby", HealthExcluded: "excluded",
		HealthUnhealthy: "unhealthy", HealthStale: "stale", Health(9): "Health(9)"} {
		if h.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(h), h.String(), s)
		}
	}
}

// TestJudgeAgreesWithInstancer registers instances of every kind and checks
// that the judge offers exactly what a running Instancer offers, and that
// MsgTTL reads back the TTL a Registrar writes.
func TestJudgeAgreesWithInstancer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	b, err := CreateBucket(ctx, js, BucketConfig{Name: "inspect"})
	if err != nil {
		t.Fatal(err)
	}
	liveness := Options(WithHeartbeat(200*time.Millisecond), WithTTL(5*time.Second))
	for id, s := range map[string]Status{"a": StatusActive, "s": StatusStandby, "u": StatusUnhealthy} {
		r, err := NewRegistrar(b, Instance{ServiceName: "svc", InstanceID: id, Version: "1.0.0", Status: s}, nil, liveness)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.RegisterContext(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		m, err := js.Stream(ctx, b.stream())
		if err != nil {
			t.Fatal(err)
		}
		msg, err := m.GetLastMsgForSubject(ctx, b.subject(r.Key()))
		if err != nil {
			t.Fatal(err)
		}
		if ttl, ok := MsgTTL(msg.Header); !ok || ttl != r.TTL() {
			t.Errorf("%s: MsgTTL %v, %v; registrar's TTL %v", id, ttl, ok, r.TTL())
		}
	}
	// A record written once, never again: it goes stale.
	dead, _ := EncodeInstance(Instance{ServiceName: "svc", InstanceID: "d", Version: "1.0.0", Status: StatusActive, LastHeartbeat: time.Now()})
	if _, err := b.KeyValue().Put(ctx, "service-instances.svc.d", dead); err != nil {
		t.Fatal(err)
	}
	stale := time.Second
	opts := []InstancerOption{liveness, WithStaleAfter(stale)}
	inst, err := NewInstancer(b, "svc", nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	judge, err := NewJudge(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "s"}
	for {
		var offered []string
		for _, in := range inst.Instances() {
			offered = append(offered, in.InstanceID)
		}
		if slices.Equal(offered, want) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Instancer offers %v, want %v", offered, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	keys, err := b.KeyValue().ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var judged []string
	for k := range keys.Keys() {
		e, err := b.KeyValue().Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		in, err := DecodeRecord(LayoutDotted, k, e.Value())
		if err != nil {
			t.Fatal(err)
		}
		if judge.Health(in, e.Created(), time.Now()).Offered() {
			judged = append(judged, in.InstanceID)
		}
	}
	slices.Sort(judged)
	if !slices.Equal(judged, want) {
		t.Errorf("judge offers %v, Instancer %v", judged, want)
	}
}

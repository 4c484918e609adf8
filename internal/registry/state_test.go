package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The registry state's rules, driven without a server: each case is a
// sequence of operations a feed would make, with what each must report and
// publish.

var t0 = time.Date(2025, 8, 8, 5, 0, 0, 0, time.UTC)

// at is t0 plus seconds.
func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

type recOpt func(*Instance)

func standby(i *Instance)   { i.Status = StatusStandby }
func unhealthy(i *Instance) { i.Status = StatusUnhealthy }
func version(v string) recOpt {
	return func(i *Instance) { i.Version = v }
}
func meta(k, v string) recOpt {
	return func(i *Instance) { i.Metadata = map[string]string{k: v} }
}
func beat(sec float64) recOpt { // the heartbeat time written in the Msg
	return func(i *Instance) { i.LastHeartbeat = at(sec) }
}
func named(svc, id string) recOpt { // the names inside the Msg
	return func(i *Instance) { i.ServiceName, i.InstanceID = svc, id }
}

func key(svc, id string) string { return "service-instances." + svc + "." + id }

// put is a write of svc/id, seen at sec.
func put(id string, rev uint64, sec float64, opts ...recOpt) Msg {
	return putIn("svc", id, rev, sec, opts...)
}

func putIn(svc, id string, rev uint64, sec float64, opts ...recOpt) Msg {
	in := Instance{ServiceName: svc, InstanceID: id, Version: "1.0.0", Status: StatusActive,
		LastHeartbeat: at(sec), Metadata: map[string]string{}}
	for _, o := range opts {
		o(&in)
	}
	data, err := in.Marshal()
	if err != nil {
		panic(err)
	}
	return Msg{Key: key(svc, id), Op: ChangeUpdated, Data: data, Rev: rev, Seen: at(sec)}
}

func raw(id string, rev uint64, sec float64, data string) Msg {
	return Msg{Key: key("svc", id), Op: ChangeUpdated, Data: []byte(data), Rev: rev, Seen: at(sec)}
}

func removal(id string, kind ChangeKind, rev uint64, sec float64) Msg {
	return Msg{Key: key("svc", id), Op: kind, Rev: rev, Seen: at(sec)}
}

// An operation on a state and what it must do.
type step struct {
	name string
	do   func(s *State) Update
	// changes, as "kind id" (id: the key's last token), in order.
	changes []string
	// publish: an event is due; then want is its set (nil: the error event).
	publish bool
	want    []string
}

func apply(r Msg) func(*State) Update { return func(s *State) Update { return s.Apply(r) } }
func tick(sec float64) func(*State) Update {
	return func(s *State) Update { return s.Tick(at(sec)) }
}
func lost(err error) func(*State) Update { return func(s *State) Update { return s.Lost(err) } }
func replace(sec float64, rs ...Msg) func(*State) Update {
	return func(s *State) Update {
		l := s.NewLoad()
		for _, r := range rs {
			l.Add(r)
		}
		return s.Replace(l, at(sec))
	}
}

func set(ids ...string) []string { return append([]string{}, ids...) }

var errFeed = errors.New("feed lost")

func TestState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*StateConfig)
		steps []step
	}{
		{name: "first full set publishes, even empty", steps: []step{
			{name: "empty", do: replace(0), publish: true, want: set()},
			{name: "then an add", do: apply(put("a", 1, 1)), changes: []string{"added a"}, publish: true, want: set("a")},
		}},
		{name: "initial values", steps: []step{
			{do: replace(0, put("b", 2, 0), put("a", 1, 0), put("c", 3, 0, unhealthy)),
				changes: []string{"added a", "added b", "added c"}, publish: true, want: set("a", "b")},
		}},
		{name: "status flips re-send the same set", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{name: "to STANDBY", do: apply(put("a", 3, 1, standby)), changes: []string{"updated a"}, publish: true, want: set("a", "b")},
			{name: "STANDBY again: a heartbeat", do: apply(put("a", 4, 2, standby, beat(2))), changes: []string{"updated a"}},
			{name: "back to ACTIVE", do: apply(put("a", 5, 3)), changes: []string{"updated a"}, publish: true, want: set("a", "b")},
			{name: "UNHEALTHY leaves the set", do: apply(put("a", 6, 4, unhealthy)), changes: []string{"updated a"}, publish: true, want: set("b")},
			{name: "ACTIVE rejoins", do: apply(put("a", 7, 5)), changes: []string{"updated a"}, publish: true, want: set("a", "b")},
		}},
		{name: "status flips change the set without STANDBY", cfg: func(c *StateConfig) { c.ExcludeStandby = true }, steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0, standby)), changes: []string{"added a", "added b"}, publish: true, want: set("a")},
			{do: apply(put("b", 3, 1)), changes: []string{"updated b"}, publish: true, want: set("a", "b")},
			{do: apply(put("a", 4, 1, standby)), changes: []string{"updated a"}, publish: true, want: set("b")},
		}},
		{name: "heartbeat-only rewrites publish nothing", steps: []step{
			{do: replace(0, put("a", 1, 0)), changes: []string{"added a"}, publish: true, want: set("a")},
			{do: apply(put("a", 2, 1, beat(1))), changes: []string{"updated a"}},
			{do: apply(put("a", 3, 2, beat(2))), changes: []string{"updated a"}},
			{name: "version and metadata: a new snapshot, no event", do: apply(put("a", 4, 3, version("1.1.0"), meta("zone", "b"))),
				changes: []string{"updated a"}},
		}},
		{name: "deletes, purges and expiry markers", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0), put("c", 3, 0)), changes: []string{"added a", "added b", "added c"}, publish: true, want: set("a", "b", "c")},
			{do: apply(removal("a", ChangeDeleted, 4, 1)), changes: []string{"deleted a"}, publish: true, want: set("b", "c")},
			{do: apply(removal("b", ChangePurged, 5, 1)), changes: []string{"purged b"}, publish: true, want: set("c")},
			{do: apply(removal("c", ChangeExpired, 6, 1)), changes: []string{"expired c"}, publish: true, want: set()},
			{name: "a removal of what is not held", do: apply(removal("c", ChangeDeleted, 7, 1))},
		}},
		{name: "key/Msg mismatch is skipped and drops the entry", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{name: "another instance's Msg", do: apply(put("a", 3, 1, named("svc", "x"))), changes: []string{"skipped a"}, publish: true, want: set("b")},
			{name: "another service's Msg", do: apply(put("b", 4, 1, named("other", "b"))), changes: []string{"skipped b"}, publish: true, want: set()},
			{name: "a good Msg again", do: apply(put("a", 5, 2)), changes: []string{"added a"}, publish: true, want: set("a")},
		}},
		{name: "malformed records are skipped and drop the entry", steps: []step{
			{do: replace(0, put("a", 1, 0), raw("bad", 2, 0, `not json`)), changes: []string{"skipped bad", "added a"}, publish: true, want: set("a")},
			{do: apply(raw("a", 3, 1, `{}`)), changes: []string{"skipped a"}, publish: true, want: set()},
			{name: "skipped with nothing held", do: apply(raw("a", 4, 1, `{"serviceName":`)), changes: []string{"skipped a"}},
			{name: "an invalid status", do: apply(raw("c", 5, 1, strings.Replace(string(put("c", 5, 1).Data), "ACTIVE", "BUSY", 1))), changes: []string{"skipped c"}},
		}},
		{name: "keys of other services and outside the layout are ignored", steps: []step{
			{do: replace(0, put("a", 1, 0), putIn("other", "a", 2, 0), Msg{Key: "svc", Data: []byte(`{}`), Rev: 3},
				Msg{Key: key("svc", "a") + ".deep", Data: put("a", 4, 0).Data, Rev: 4}),
				changes: []string{"added a"}, publish: true, want: set("a")},
			{do: apply(putIn("other", "b", 5, 1))},
			{do: apply(Msg{Key: "service-instances.other.b", Op: ChangeDeleted, Rev: 6})},
		}},
		{name: "stale and un-stale", cfg: func(c *StateConfig) { c.StaleAfter = 3 * time.Second }, steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{do: apply(put("b", 3, 2, beat(2))), changes: []string{"updated b"}},
			{name: "not yet", do: tick(3)},
			{name: "a is 3.5 s old", do: tick(3.5), changes: []string{"stale a"}, publish: true, want: set("b")},
			{name: "told once", do: tick(4)},
			{name: "a writes again", do: apply(put("a", 4, 4.5, beat(4.5))), changes: []string{"updated a"}, publish: true, want: set("a", "b")},
			{name: "b's turn", do: tick(5.5), changes: []string{"stale b"}, publish: true, want: set("a")},
			{name: "both", do: tick(9), changes: []string{"stale a"}, publish: true, want: set()},
		}},
		{name: "nothing goes stale while the feed is lost", cfg: func(c *StateConfig) { c.StaleAfter = time.Second }, steps: []step{
			{do: replace(0, put("a", 1, 0)), changes: []string{"added a"}, publish: true, want: set("a")},
			{do: lost(errFeed), publish: true},
			{do: tick(10)},
			{name: "a rebuilt feed judges the values it loads", do: replace(10, put("a", 1, 0), put("b", 2, 9.5)),
				changes: []string{"added b", "stale a"}, publish: true, want: set("b")},
		}},
		{name: "staleness disabled", cfg: func(c *StateConfig) { c.StaleAfter = -1 }, steps: []step{
			{do: replace(0, put("a", 1, 0)), changes: []string{"added a"}, publish: true, want: set("a")},
			{do: tick(1e6)},
		}},
		{name: "a lost feed is told once; a rebuild reports what it missed", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0), put("c", 3, 0), put("d", 4, 0)),
				changes: []string{"added a", "added b", "added c", "added d"}, publish: true, want: set("a", "b", "c", "d")},
			{do: lost(errFeed), publish: true},
			{name: "once per outage", do: lost(errFeed)},
			{name: "rebuilt", do: replace(5,
				put("a", 1, 0),                    // unchanged: nothing to say
				put("b", 7, 4, standby),           // rewritten meanwhile
				removal("c", ChangeExpired, 8, 4), // expired meanwhile: the marker says so
				put("e", 9, 4),                    // new
				// d: gone without a trace
			), changes: []string{"updated b", "expired c", "deleted d", "added e"}, publish: true, want: set("a", "b", "e")},
		}},
		{name: "a rebuild publishes even the same set", steps: []step{
			{do: replace(0, put("a", 1, 0)), changes: []string{"added a"}, publish: true, want: set("a")},
			{do: lost(errFeed), publish: true},
			{do: replace(1, put("a", 1, 0)), publish: true, want: set("a")},
			{name: "a re-list with nothing new publishes nothing", do: replace(2, put("a", 1, 0))},
		}},
		{name: "a full set reads keys in order", steps: []step{
			{do: replace(0, put("a", 1, 0), removal("a", ChangeDeleted, 2, 0), put("b", 3, 0), raw("b", 4, 0, `{}`), raw("c", 5, 0, `{}`), put("c", 6, 0)),
				changes: []string{"skipped b", "skipped c", "added c"}, publish: true, want: set("c")},
		}},
		{name: "a malformed value in a rebuild drops the entry once", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{do: replace(1, put("a", 1, 0), raw("b", 3, 1, `{}`)), changes: []string{"skipped b"}, publish: true, want: set("a")},
		}},
		{name: "formatted strings", cfg: func(c *StateConfig) {
			c.Format = func(i Instance) string { return i.Metadata["addr"] }
		}, steps: []step{
			{do: replace(0, put("a", 1, 0, meta("addr", "10.0.0.1:80")), put("b", 2, 0), put("c", 3, 0, meta("addr", "10.0.0.1:80"))),
				changes: []string{"added a", "added b", "added c"}, publish: true, want: set("10.0.0.1:80")},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID }}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := NewState(cfg)
			for n, st := range tc.steps {
				seq := s.seq
				u := st.do(s)
				where := fmt.Sprintf("step %d %s", n, st.name)
				var have []string
				for _, c := range u.Changes {
					have = append(have, c.Kind.String()+" "+c.Key[strings.LastIndexByte(c.Key, '.')+1:])
				}
				if !slices.Equal(have, st.changes) {
					t.Fatalf("%s: changes: want %q, have %q", where, st.changes, have)
				}
				if u.Publish != st.publish {
					t.Fatalf("%s: publish: want %v, have %v", where, st.publish, u.Publish)
				}
				if !u.Publish {
					if s.seq != seq {
						t.Fatalf("%s: nothing to publish, yet the event changed", where)
					}
					continue
				}
				ev := s.Event()
				switch {
				case st.want == nil && ev.Err == nil:
					t.Fatalf("%s: want an error event, have %v", where, ev)
				case st.want != nil && (ev.Err != nil || !slices.Equal(ev.Instances, st.want)):
					t.Fatalf("%s: want %q, have %v", where, st.want, ev)
				}
				if ev.Err == nil && !slices.Equal(s.Snapshot().Strs, ev.Instances) {
					t.Fatalf("%s: the snapshot (%q) is not the event (%q)", where, s.Snapshot().Strs, ev.Instances)
				}
			}
		})
	}
}

// The snapshot follows every material change, events or not; a heartbeat
// leaves it as it is.
func TestStateSnapshot(t *testing.T) {
	s := NewState(StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID }})
	if _, ok := s.Initial(); ok {
		t.Fatal("an initial event before anything was published")
	}
	replace(0, put("a", 1, 0, meta("zone", "a")))(s)
	first := s.Snapshot()
	if in, _ := first.Get("a"); in.Metadata["zone"] != "a" || len(first.List) != 1 {
		t.Fatalf("snapshot: %+v", first)
	}
	s.Apply(put("a", 2, 1, meta("zone", "a"), beat(1)))
	if s.Snapshot() != first {
		t.Fatal("a heartbeat replaced the snapshot")
	}
	s.Apply(put("a", 3, 2, meta("zone", "b")))
	if in, _ := s.Snapshot().Get("a"); s.Snapshot() == first || in.Metadata["zone"] != "b" {
		t.Fatalf("a metadata change: snapshot %+v", s.Snapshot())
	}
	if in, _ := first.Get("a"); in.Metadata["zone"] != "a" {
		t.Fatal("a published snapshot changed")
	}
	s.Apply(put("a", 4, 3, standby))
	if in, _ := s.Snapshot().Get("a"); in.Status != StatusStandby {
		t.Fatal("a status change is not in the snapshot")
	}
}

// A new subscriber gets the last set, even while the feed is lost; the
// error only when no set was ever published.
func TestStateInitialEvent(t *testing.T) {
	s := NewState(StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID }})
	s.Lost(errFeed)
	if ev, ok := s.Initial(); !ok || !errors.Is(ev.Err, errFeed) {
		t.Fatalf("lost before any set: want the error, have %v %v", ev, ok)
	}
	replace(0, put("a", 1, 0))(s)
	s.Lost(errFeed)
	if ev, ok := s.Initial(); !ok || ev.Err != nil || !slices.Equal(ev.Instances, []string{"a"}) {
		t.Fatalf("lost after a set: want the set, have %v %v", ev, ok)
	}
	if ev := s.Event(); !errors.Is(ev.Err, errFeed) {
		t.Fatalf("the last event: want the error, have %v", ev)
	}
}

// Changes carry the Msg (for removals the last one held), the revision,
// and for skipped records the cause.
func TestStateChangeDetails(t *testing.T) {
	s := NewState(StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID }})
	u := replace(0, put("a", 1, 0, meta("zone", "a")))(s)
	if c := u.Changes[0]; c.Instance.InstanceID != "a" || c.Revision != 1 || c.Key != key("svc", "a") {
		t.Fatalf("added: %+v", c)
	}
	u = s.Apply(put("a", 2, 1, named("svc", "b")))
	if c := u.Changes[0]; !errors.Is(c.Err, ErrKeyMismatch) || !errors.Is(c.Err, ErrInvalidRecord) || c.Instance.Metadata["zone"] != "a" || c.Revision != 2 {
		t.Fatalf("mismatch: %+v", c)
	}
	u = s.Apply(raw("a", 3, 1, `not json`))
	if c := u.Changes[0]; !errors.Is(c.Err, ErrInvalidRecord) || c.Instance.InstanceID != "" {
		t.Fatalf("malformed with nothing held: %+v", c)
	}
	s.Apply(put("a", 4, 1))
	u = s.Apply(removal("a", ChangeExpired, 5, 2))
	if c := u.Changes[0]; c.Kind != ChangeExpired || c.Instance.InstanceID != "a" || c.Revision != 5 {
		t.Fatalf("expired: %+v", c)
	}
	s.Apply(put("a", 6, 3))
	u = replace(4, raw("a", 7, 3, `{}`))(s)
	if c := u.Changes; len(c) != 1 || c[0].Kind != ChangeSkipped || c[0].Instance.InstanceID != "a" {
		t.Fatalf("malformed in a rebuild: %+v", c)
	}
}

// The aegis layout: one token per key, so a watch sees every service; the
// state keeps only its own.
func TestStateAegisLayout(t *testing.T) {
	s := NewState(StateConfig{Service: "svc", Layout: LayoutAegis, Format: func(i Instance) string { return i.InstanceID }})
	r := put("a", 1, 0)
	r.Key = "service-instances__svc__a"
	other := putIn("svc__x", "a", 2, 0) // a service whose name extends ours
	other.Key = "service-instances__svc__x__a"
	u := replace(0, r, other)(s)
	if !u.Publish || !slices.Equal(s.Event().Instances, []string{"a"}) || len(u.Changes) != 1 {
		t.Fatalf("aegis: %+v %v", u, s.Event())
	}
}

// Whatever a key holds, the state stays consistent: the snapshot is the
// published set, and an instance is offered only if its Msg decodes as
// what its key says.
func FuzzStateApply(f *testing.F) {
	f.Add(put("a", 1, 0).Data, false)
	f.Add(put("a", 1, 0, standby).Data, false)
	f.Add(put("a", 1, 0, named("svc", "b")).Data, true)
	f.Add([]byte(`{"serviceName":"svc","instance_id":"a","version":"1.0.0","status":"ACTIVE","last_heartbeat":"2025-08-08 05:02:34"}`), false)
	f.Add([]byte(`not json`), false)
	f.Fuzz(func(t *testing.T, data []byte, rebuild bool) {
		s := NewState(StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID },
			StaleAfter: time.Hour})
		replace(0, put("b", 1, 0))(s)
		r := raw("a", 2, 1, string(data))
		var u Update
		if rebuild {
			s.Lost(errFeed)
			u = replace(2, put("b", 1, 0), r)(s)
		} else {
			u = s.Apply(r)
		}
		in, err := Decode(data, false)
		want := []string{"b"}
		if err == nil && in.ServiceName == "svc" && in.InstanceID == "a" && in.Healthy() {
			want = []string{"a", "b"}
		}
		if have := s.Snapshot().Strs; !slices.Equal(have, want) {
			t.Fatalf("snapshot %q, want %q (decode: %+v, %v)", have, want, in, err)
		}
		if u.Publish && !slices.Equal(s.Event().Instances, want) {
			t.Fatalf("event %v, want %q", s.Event(), want)
		}
	})
}

// Strict books skip (and report) what the AegisSDK reader drops; lenient
// ones offer it. The aegis layout's matching leaves keys of "svc_" (which
// start "svc___") to no Instancer of "svc".
func TestStateStrictRecords(t *testing.T) {
	const hb = `"lastHeartbeat":"2025-08-08T05:02:34Z"`
	recs := map[string]string{
		"ok":      `{"serviceName":"svc","instanceId":"ok","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":{}}`,
		"extra":   `{"serviceName":"svc","instanceId":"extra","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":{},"zone":"a"}`,
		"nullmd":  `{"serviceName":"svc","instanceId":"nullmd","version":"1.0.0","status":"ACTIVE",` + hb + `,"metadata":null}`,
		"version": `{"serviceName":"svc","instanceId":"version","version":"1.0","status":"ACTIVE",` + hb + `}`,
	}
	for _, tc := range []struct {
		layout  Layout
		strict  bool
		offered []string
		skipped int
	}{
		{LayoutDotted, false, []string{"extra", "nullmd", "ok", "version"}, 0},
		{LayoutDotted, true, []string{"ok"}, 3},
		{LayoutAegis, true, []string{"ok"}, 3},
		{LayoutAegis, false, []string{"extra", "nullmd", "ok", "version"}, 0},
	} {
		t.Run(fmt.Sprintf("%v strict=%v", tc.layout, tc.strict), func(t *testing.T) {
			s := NewState(StateConfig{Service: "svc", Layout: tc.layout, Strict: tc.strict,
				Format: func(i Instance) string { return i.InstanceID }})
			var rs []Msg
			for id, data := range recs {
				k, err := tc.layout.Key("svc", id)
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, Msg{Key: k, Op: ChangeUpdated, Data: []byte(data), Rev: uint64(len(rs) + 1), Seen: at(0)})
			}
			if tc.layout == LayoutAegis {
				// A Msg of service "svc_": not ours, not even skipped.
				other := putIn("svc_", "x", 9, 0)
				other.Key = "service-instances__svc___x"
				rs = append(rs, other)
			}
			u := replace(0, rs...)(s)
			skipped := 0
			for _, c := range u.Changes {
				if c.Kind == ChangeSkipped {
					skipped++
				}
			}
			if !slices.Equal(s.Event().Instances, tc.offered) || skipped != tc.skipped {
				t.Fatalf("offered %v, skipped %d (%+v); want %v, %d", s.Event().Instances, skipped, u.Changes, tc.offered, tc.skipped)
			}
			// Live changes are judged the same way.
			k, _ := tc.layout.Key("svc", "extra")
			u = s.Apply(Msg{Key: k, Op: ChangeUpdated, Data: []byte(recs["extra"]), Rev: 20, Seen: at(1)})
			if want := ChangeUpdated; tc.strict {
				want = ChangeSkipped
				if len(u.Changes) != 1 || u.Changes[0].Kind != want {
					t.Fatalf("live: %+v, want %v", u.Changes, want)
				}
			}
		})
	}
}

// The mass-removal guard: staleness removes one silent instance at once,
// and holds a fleet whose heartbeats stop together (or the ages a rebuilt
// watch brings) for at most staleAfter; deletes and expiry markers remove
// at once, guard or not.
func TestStaleGuard(t *testing.T) {
	type gstep struct {
		name  string
		do    func(*State) Update
		want  []string // the offered set after the step
		guard string   // "engaged", "disengaged" or "" (no change)
	}
	at0 := func(ids ...string) []Msg {
		var rs []Msg
		for n, id := range ids {
			rs = append(rs, put(id, uint64(n+1), 0))
		}
		return rs
	}
	for _, tc := range []struct {
		name  string
		share float64
		steps []gstep
	}{
		{name: "one of three goes silent: removed", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b", "c")...), want: set("a", "b", "c")},
			{do: apply(put("b", 4, 2)), want: set("a", "b", "c")},
			{do: apply(put("c", 5, 2)), want: set("a", "b", "c")},
			{do: tick(3.5), want: set("b", "c")},
		}},
		{name: "three stop within a heartbeat: held, released by writes", share: 0.5, steps: []gstep{
			{do: replace(0.6, put("a", 1, 0), put("b", 2, 0.3), put("c", 3, 0.6)), want: set("a", "b", "c")},
			{name: "a past, b and c close", do: tick(3.1), want: set("a", "b", "c"), guard: "engaged"},
			{do: tick(4), want: set("a", "b", "c")},
			{do: apply(put("a", 4, 4.2)), want: set("a", "b", "c")},
			{do: apply(put("b", 5, 4.2)), want: set("a", "b", "c")},
			{do: apply(put("c", 6, 4.2)), want: set("a", "b", "c")},
			{do: tick(4.5), want: set("a", "b", "c"), guard: "disengaged"},
		}},
		{name: "held for at most staleAfter", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b", "c")...), want: set("a", "b", "c")},
			{do: tick(3.1), want: set("a", "b", "c"), guard: "engaged"},
			{do: tick(6.0), want: set("a", "b", "c")},
			{do: tick(6.2), want: set()},
			{do: tick(6.5), want: set(), guard: "disengaged"},
		}},
		{name: "deletes and expiry markers remove while held", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b", "c")...), want: set("a", "b", "c")},
			{do: tick(3.1), want: set("a", "b", "c"), guard: "engaged"},
			{do: apply(removal("a", ChangeExpired, 7, 3.2)), want: set("b", "c")},
			{do: apply(removal("b", ChangeDeleted, 8, 3.3)), want: set("c")},
			{name: "one left, alone: no mass", do: tick(3.4), want: set(), guard: "disengaged"},
		}},
		{name: "two of two held", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b")...), want: set("a", "b")},
			{do: tick(3.1), want: set("a", "b"), guard: "engaged"},
		}},
		{name: "one of one removed", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a")...), want: set("a")},
			{do: tick(3.1), want: set()},
		}},
		{name: "half of four is not more than half", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b", "c", "d")...), want: set("a", "b", "c", "d")},
			{do: apply(put("c", 5, 2.5)), want: set("a", "b", "c", "d")},
			{do: apply(put("d", 6, 2.5)), want: set("a", "b", "c", "d")},
			{do: tick(3.1), want: set("c", "d")},
		}},
		{name: "guard off", share: 0, steps: []gstep{
			{do: replace(0, at0("a", "b", "c")...), want: set("a", "b", "c")},
			{do: tick(3.1), want: set()},
		}},
		{name: "a rebuilt watch's ages are held a moment", share: 0.5, steps: []gstep{
			{do: replace(0, at0("a", "b", "c")...), want: set("a", "b", "c")},
			{do: lost(errFeed), want: set("a", "b", "c")},
			{name: "c silent since 0, a and b written during the outage",
				do: replace(5, put("a", 4, 4.5), put("b", 5, 4.5), put("c", 3, 0)), want: set("a", "b", "c"), guard: "engaged"},
			{do: tick(6.1), want: set("a", "b"), guard: "disengaged"},
		}},
		{name: "the first set is judged as it is", share: 0.5, steps: []gstep{
			{do: replace(10, at0("a", "b", "c")...), want: set()},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState(StateConfig{Service: "svc", Layout: LayoutDotted, Format: func(i Instance) string { return i.InstanceID },
				StaleAfter: 3 * time.Second, GuardShare: tc.share})
			for n, st := range tc.steps {
				u := st.do(s)
				if have := s.Snapshot().Strs; !slices.Equal(have, st.want) {
					t.Fatalf("step %d %s: offered %q, want %q (changes %+v)", n, st.name, have, st.want, u.Changes)
				}
				g := ""
				if u.Guard != nil {
					g = map[bool]string{true: "engaged", false: "disengaged"}[u.Guard.Engaged]
				}
				if g != st.guard {
					t.Fatalf("step %d %s: guard %q (%+v), want %q", n, st.name, g, u.Guard, st.guard)
				}
				if g == "engaged" && u.Guard.Reason == "" {
					t.Fatalf("step %d: engaged without a reason", n)
				}
				if s.Guarded() != (g == "engaged" || (g == "" && s.Guarded())) {
					t.Fatalf("step %d: guarded() = %v", n, s.Guarded())
				}
			}
		})
	}
}

package natskv

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/wire"
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
func beat(sec float64) recOpt { // the heartbeat time written in the record
	return func(i *Instance) { i.LastHeartbeat = at(sec) }
}
func named(svc, id string) recOpt { // the names inside the record
	return func(i *Instance) { i.ServiceName, i.InstanceID = svc, id }
}

func key(svc, id string) string { return "service-instances." + svc + "." + id }

// put is a write of svc/id, seen at sec.
func put(id string, rev uint64, sec float64, opts ...recOpt) record {
	return putIn("svc", id, rev, sec, opts...)
}

func putIn(svc, id string, rev uint64, sec float64, opts ...recOpt) record {
	in := Instance{ServiceName: svc, InstanceID: id, Version: "1.0.0", Status: StatusActive,
		LastHeartbeat: at(sec), Metadata: map[string]string{}}
	for _, o := range opts {
		o(&in)
	}
	data, err := in.MarshalJSON()
	if err != nil {
		panic(err)
	}
	return record{key: key(svc, id), op: ChangeUpdated, data: data, rev: rev, seen: at(sec)}
}

func raw(id string, rev uint64, sec float64, data string) record {
	return record{key: key("svc", id), op: ChangeUpdated, data: []byte(data), rev: rev, seen: at(sec)}
}

func removal(id string, kind ChangeKind, rev uint64, sec float64) record {
	return record{key: key("svc", id), op: kind, rev: rev, seen: at(sec)}
}

// An operation on a state and what it must do.
type step struct {
	name string
	do   func(s *state) update
	// changes, as "kind id" (id: the key's last token), in order.
	changes []string
	// publish: an event is due; then want is its set (nil: the error event).
	publish bool
	want    []string
}

func apply(r record) func(*state) update { return func(s *state) update { return s.apply(r) } }
func tick(sec float64) func(*state) update {
	return func(s *state) update { return s.tick(at(sec)) }
}
func lost(err error) func(*state) update { return func(s *state) update { return s.lost(err) } }
func replace(sec float64, rs ...record) func(*state) update {
	return func(s *state) update {
		l := s.newLoad()
		for _, r := range rs {
			l.add(r)
		}
		return s.replace(l, at(sec))
	}
}

func set(ids ...string) []string { return append([]string{}, ids...) }

var errFeed = errors.New("feed lost")

func TestState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*stateConfig)
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
		{name: "status flips change the set without STANDBY", cfg: func(c *stateConfig) { c.excludeStandby = true }, steps: []step{
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
		{name: "key/record mismatch is skipped and drops the entry", steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{name: "another instance's record", do: apply(put("a", 3, 1, named("svc", "x"))), changes: []string{"skipped a"}, publish: true, want: set("b")},
			{name: "another service's record", do: apply(put("b", 4, 1, named("other", "b"))), changes: []string{"skipped b"}, publish: true, want: set()},
			{name: "a good record again", do: apply(put("a", 5, 2)), changes: []string{"added a"}, publish: true, want: set("a")},
		}},
		{name: "malformed records are skipped and drop the entry", steps: []step{
			{do: replace(0, put("a", 1, 0), raw("bad", 2, 0, `not json`)), changes: []string{"skipped bad", "added a"}, publish: true, want: set("a")},
			{do: apply(raw("a", 3, 1, `{}`)), changes: []string{"skipped a"}, publish: true, want: set()},
			{name: "skipped with nothing held", do: apply(raw("a", 4, 1, `{"serviceName":`)), changes: []string{"skipped a"}},
			{name: "an invalid status", do: apply(raw("c", 5, 1, strings.Replace(string(put("c", 5, 1).data), "ACTIVE", "BUSY", 1))), changes: []string{"skipped c"}},
		}},
		{name: "keys of other services and outside the layout are ignored", steps: []step{
			{do: replace(0, put("a", 1, 0), putIn("other", "a", 2, 0), record{key: "svc", data: []byte(`{}`), rev: 3},
				record{key: key("svc", "a") + ".deep", data: put("a", 4, 0).data, rev: 4}),
				changes: []string{"added a"}, publish: true, want: set("a")},
			{do: apply(putIn("other", "b", 5, 1))},
			{do: apply(record{key: "service-instances.other.b", op: ChangeDeleted, rev: 6})},
		}},
		{name: "stale and un-stale", cfg: func(c *stateConfig) { c.staleAfter = 3 * time.Second }, steps: []step{
			{do: replace(0, put("a", 1, 0), put("b", 2, 0)), changes: []string{"added a", "added b"}, publish: true, want: set("a", "b")},
			{do: apply(put("b", 3, 2, beat(2))), changes: []string{"updated b"}},
			{name: "not yet", do: tick(3)},
			{name: "a is 3.5 s old", do: tick(3.5), changes: []string{"stale a"}, publish: true, want: set("b")},
			{name: "told once", do: tick(4)},
			{name: "a writes again", do: apply(put("a", 4, 4.5, beat(4.5))), changes: []string{"updated a"}, publish: true, want: set("a", "b")},
			{name: "b's turn", do: tick(5.5), changes: []string{"stale b"}, publish: true, want: set("a")},
			{name: "both", do: tick(9), changes: []string{"stale a"}, publish: true, want: set()},
		}},
		{name: "nothing goes stale while the feed is lost", cfg: func(c *stateConfig) { c.staleAfter = time.Second }, steps: []step{
			{do: replace(0, put("a", 1, 0)), changes: []string{"added a"}, publish: true, want: set("a")},
			{do: lost(errFeed), publish: true},
			{do: tick(10)},
			{name: "a rebuilt feed judges the values it loads", do: replace(10, put("a", 1, 0), put("b", 2, 9.5)),
				changes: []string{"added b", "stale a"}, publish: true, want: set("b")},
		}},
		{name: "staleness disabled", cfg: func(c *stateConfig) { c.staleAfter = -1 }, steps: []step{
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
		{name: "formatted strings", cfg: func(c *stateConfig) {
			c.format = func(i Instance) string { return i.Metadata["addr"] }
		}, steps: []step{
			{do: replace(0, put("a", 1, 0, meta("addr", "10.0.0.1:80")), put("b", 2, 0), put("c", 3, 0, meta("addr", "10.0.0.1:80"))),
				changes: []string{"added a", "added b", "added c"}, publish: true, want: set("10.0.0.1:80")},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID }}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := newState(cfg)
			for n, st := range tc.steps {
				seq := s.seq
				u := st.do(s)
				where := fmt.Sprintf("step %d %s", n, st.name)
				var have []string
				for _, c := range u.changes {
					have = append(have, c.Kind.String()+" "+c.Key[strings.LastIndexByte(c.Key, '.')+1:])
				}
				if !slices.Equal(have, st.changes) {
					t.Fatalf("%s: changes: want %q, have %q", where, st.changes, have)
				}
				if u.publish != st.publish {
					t.Fatalf("%s: publish: want %v, have %v", where, st.publish, u.publish)
				}
				if !u.publish {
					if s.seq != seq {
						t.Fatalf("%s: nothing to publish, yet the event changed", where)
					}
					continue
				}
				ev := s.event()
				switch {
				case st.want == nil && ev.Err == nil:
					t.Fatalf("%s: want an error event, have %v", where, ev)
				case st.want != nil && (ev.Err != nil || !slices.Equal(ev.Instances, st.want)):
					t.Fatalf("%s: want %q, have %v", where, st.want, ev)
				}
				if ev.Err == nil && !slices.Equal(s.snapshot().strs, ev.Instances) {
					t.Fatalf("%s: the snapshot (%q) is not the event (%q)", where, s.snapshot().strs, ev.Instances)
				}
			}
		})
	}
}

// The snapshot follows every material change, events or not; a heartbeat
// leaves it as it is.
func TestStateSnapshot(t *testing.T) {
	s := newState(stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID }})
	if _, ok := s.initial(); ok {
		t.Fatal("an initial event before anything was published")
	}
	replace(0, put("a", 1, 0, meta("zone", "a")))(s)
	first := s.snapshot()
	if in, _ := first.get("a"); in.Metadata["zone"] != "a" || len(first.list) != 1 {
		t.Fatalf("snapshot: %+v", first)
	}
	s.apply(put("a", 2, 1, meta("zone", "a"), beat(1)))
	if s.snapshot() != first {
		t.Fatal("a heartbeat replaced the snapshot")
	}
	s.apply(put("a", 3, 2, meta("zone", "b")))
	if in, _ := s.snapshot().get("a"); s.snapshot() == first || in.Metadata["zone"] != "b" {
		t.Fatalf("a metadata change: snapshot %+v", s.snapshot())
	}
	if in, _ := first.get("a"); in.Metadata["zone"] != "a" {
		t.Fatal("a published snapshot changed")
	}
	s.apply(put("a", 4, 3, standby))
	if in, _ := s.snapshot().get("a"); in.Status != StatusStandby {
		t.Fatal("a status change is not in the snapshot")
	}
}

// A new subscriber gets the last set, even while the feed is lost; the
// error only when no set was ever published.
func TestStateInitialEvent(t *testing.T) {
	s := newState(stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID }})
	s.lost(errFeed)
	if ev, ok := s.initial(); !ok || !errors.Is(ev.Err, errFeed) {
		t.Fatalf("lost before any set: want the error, have %v %v", ev, ok)
	}
	replace(0, put("a", 1, 0))(s)
	s.lost(errFeed)
	if ev, ok := s.initial(); !ok || ev.Err != nil || !slices.Equal(ev.Instances, []string{"a"}) {
		t.Fatalf("lost after a set: want the set, have %v %v", ev, ok)
	}
	if ev := s.event(); !errors.Is(ev.Err, errFeed) {
		t.Fatalf("the last event: want the error, have %v", ev)
	}
}

// Changes carry the record (for removals the last one held), the revision,
// and for skipped records the cause.
func TestStateChangeDetails(t *testing.T) {
	s := newState(stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID }})
	u := replace(0, put("a", 1, 0, meta("zone", "a")))(s)
	if c := u.changes[0]; c.Instance.InstanceID != "a" || c.Revision != 1 || c.Key != key("svc", "a") {
		t.Fatalf("added: %+v", c)
	}
	u = s.apply(put("a", 2, 1, named("svc", "b")))
	if c := u.changes[0]; !errors.Is(c.Err, ErrKeyMismatch) || !errors.Is(c.Err, ErrInvalidRecord) || c.Instance.Metadata["zone"] != "a" || c.Revision != 2 {
		t.Fatalf("mismatch: %+v", c)
	}
	u = s.apply(raw("a", 3, 1, `not json`))
	if c := u.changes[0]; !errors.Is(c.Err, ErrInvalidRecord) || c.Instance.InstanceID != "" {
		t.Fatalf("malformed with nothing held: %+v", c)
	}
	s.apply(put("a", 4, 1))
	u = s.apply(removal("a", ChangeExpired, 5, 2))
	if c := u.changes[0]; c.Kind != ChangeExpired || c.Instance.InstanceID != "a" || c.Revision != 5 {
		t.Fatalf("expired: %+v", c)
	}
	s.apply(put("a", 6, 3))
	u = replace(4, raw("a", 7, 3, `{}`))(s)
	if c := u.changes; len(c) != 1 || c[0].Kind != ChangeSkipped || c[0].Instance.InstanceID != "a" {
		t.Fatalf("malformed in a rebuild: %+v", c)
	}
}

// The aegis layout: one token per key, so a watch sees every service; the
// state keeps only its own.
func TestStateAegisLayout(t *testing.T) {
	s := newState(stateConfig{service: "svc", layout: LayoutAegis, format: func(i Instance) string { return i.InstanceID }})
	r := put("a", 1, 0)
	r.key = "service-instances__svc__a"
	other := putIn("svc__x", "a", 2, 0) // a service whose name extends ours
	other.key = "service-instances__svc__x__a"
	u := replace(0, r, other)(s)
	if !u.publish || !slices.Equal(s.event().Instances, []string{"a"}) || len(u.changes) != 1 {
		t.Fatalf("aegis: %+v %v", u, s.event())
	}
}

// Whatever a key holds, the state stays consistent: the snapshot is the
// published set, and an instance is offered only if its record decodes as
// what its key says.
func FuzzStateApply(f *testing.F) {
	f.Add(put("a", 1, 0).data, false)
	f.Add(put("a", 1, 0, standby).data, false)
	f.Add(put("a", 1, 0, named("svc", "b")).data, true)
	f.Add([]byte(`{"serviceName":"svc","instance_id":"a","version":"1.0.0","status":"ACTIVE","last_heartbeat":"2025-08-08 05:02:34"}`), false)
	f.Add([]byte(`not json`), false)
	f.Fuzz(func(t *testing.T, data []byte, rebuild bool) {
		s := newState(stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID },
			staleAfter: time.Hour})
		replace(0, put("b", 1, 0))(s)
		r := raw("a", 2, 1, string(data))
		var u update
		if rebuild {
			s.lost(errFeed)
			u = replace(2, put("b", 1, 0), r)(s)
		} else {
			u = s.apply(r)
		}
		in, err := DecodeInstance(data)
		want := []string{"b"}
		if err == nil && in.ServiceName == "svc" && in.InstanceID == "a" && in.Healthy() {
			want = []string{"a", "b"}
		}
		if have := s.snapshot().strs; !slices.Equal(have, want) {
			t.Fatalf("snapshot %q, want %q (decode: %+v, %v)", have, want, in, err)
		}
		if u.publish && !slices.Equal(s.event().Instances, want) {
			t.Fatalf("event %v, want %q", s.event(), want)
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
			s := newState(stateConfig{service: "svc", layout: tc.layout, strict: tc.strict,
				format: func(i Instance) string { return i.InstanceID }})
			var rs []record
			for id, data := range recs {
				k, err := tc.layout.Key("svc", id)
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, record{key: k, op: ChangeUpdated, data: []byte(data), rev: uint64(len(rs) + 1), seen: at(0)})
			}
			if tc.layout == LayoutAegis {
				// A record of service "svc_": not ours, not even skipped.
				other := putIn("svc_", "x", 9, 0)
				other.key = "service-instances__svc___x"
				rs = append(rs, other)
			}
			u := replace(0, rs...)(s)
			skipped := 0
			for _, c := range u.changes {
				if c.Kind == ChangeSkipped {
					skipped++
				}
			}
			if !slices.Equal(s.event().Instances, tc.offered) || skipped != tc.skipped {
				t.Fatalf("offered %v, skipped %d (%+v); want %v, %d", s.event().Instances, skipped, u.changes, tc.offered, tc.skipped)
			}
			// Live changes are judged the same way.
			k, _ := tc.layout.Key("svc", "extra")
			u = s.apply(record{key: k, op: ChangeUpdated, data: []byte(recs["extra"]), rev: 20, seen: at(1)})
			if want := ChangeUpdated; tc.strict {
				want = ChangeSkipped
				if len(u.changes) != 1 || u.changes[0].Kind != want {
					t.Fatalf("live: %+v, want %v", u.changes, want)
				}
			}
		})
	}
}

func TestAegisServiceNames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		aegis, ok bool // valid on the aegis layout; on the dotted one
	}{
		{"go-echo", true, true},
		{"go_echo2", true, true},
		{"ab", true, true},
		{strings.Repeat("a", 64), true, true},
		{strings.Repeat("a", 65), false, false},
		{"g", false, true},
		{"Go-Echo", false, true},
		{"go_echo_", false, true},
		{"go-echo-", false, true},
		{"go__echo", false, true},
		{"1go", false, false},
	} {
		for _, l := range []Layout{LayoutAegis, LayoutDotted} {
			want := tc.ok
			if l == LayoutAegis {
				want = tc.aegis
			}
			_, kerr := l.Key(tc.name, "i-1")
			inst := Instance{ServiceName: tc.name, InstanceID: "i-1", Version: "1.0.0"}
			_, rerr := NewRegistrar(fakeBucket(true), inst, nil, WithLayout(l))
			for what, err := range map[string]error{"Key": kerr, "NewRegistrar": rerr} {
				if (err == nil) != want || (err != nil && !errors.Is(err, wire.ErrInvalidName)) {
					t.Errorf("%v %s(%q): %v, want valid=%v", l, what, tc.name, err, want)
				}
			}
			if want {
				continue // a valid Instancer would start reading the fake bucket
			}
			// Names are checked before the bucket is used.
			if _, ierr := NewInstancer(fakeBucket(true), tc.name, nil, WithLayout(l)); !errors.Is(ierr, wire.ErrInvalidName) {
				t.Errorf("%v NewInstancer(%q): %v, want wire.ErrInvalidName", l, tc.name, ierr)
			}
		}
	}
	// The key of "svc_" is nobody's on the aegis layout: not "svc"'s.
	if _, ours := LayoutAegis.match("svc", "service-instances__svc___x"); ours {
		t.Error(`match("svc") claims a key of "svc_"`)
	}
	if s, ok := LayoutAegis.serviceOf("service-instances__svc___x"); !ok || s != "svc_" {
		t.Errorf("serviceOf = %q, %v", s, ok)
	}
}

// The mass-removal guard: staleness removes one silent instance at once,
// and holds a fleet whose heartbeats stop together (or the ages a rebuilt
// watch brings) for at most staleAfter; deletes and expiry markers remove
// at once, guard or not.
func TestStaleGuard(t *testing.T) {
	type gstep struct {
		name  string
		do    func(*state) update
		want  []string // the offered set after the step
		guard string   // "engaged", "disengaged" or "" (no change)
	}
	at0 := func(ids ...string) []record {
		var rs []record
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
			s := newState(stateConfig{service: "svc", layout: LayoutDotted, format: func(i Instance) string { return i.InstanceID },
				staleAfter: 3 * time.Second, guardShare: tc.share})
			for n, st := range tc.steps {
				u := st.do(s)
				if have := s.snapshot().strs; !slices.Equal(have, st.want) {
					t.Fatalf("step %d %s: offered %q, want %q (changes %+v)", n, st.name, have, st.want, u.changes)
				}
				g := ""
				if u.guard != nil {
					g = map[bool]string{true: "engaged", false: "disengaged"}[u.guard.engaged]
				}
				if g != st.guard {
					t.Fatalf("step %d %s: guard %q (%+v), want %q", n, st.name, g, u.guard, st.guard)
				}
				if g == "engaged" && u.guard.reason == "" {
					t.Fatalf("step %d: engaged without a reason", n)
				}
				if s.guarded() != (g == "engaged" || (g == "" && s.guarded())) {
					t.Fatalf("step %d: guarded() = %v", n, s.guarded())
				}
			}
		})
	}
}

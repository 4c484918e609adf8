package registry

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestJudgeStaleAfter(t *testing.T) {
	for _, c := range []struct {
		name    string
		markers bool
		l       Liveness
		want    time.Duration
	}{
		{"markers, defaults", true, Liveness{Heartbeat: DefaultHeartbeat}, 31 * time.Second},
		{"no markers, defaults", false, Liveness{Heartbeat: DefaultHeartbeat}, 30 * time.Second},
		{"markers, heartbeat", true, Liveness{Heartbeat: 300 * time.Millisecond}, 2 * time.Second},
		{"no markers, TTL", false, Liveness{Heartbeat: time.Second, TTL: 5 * time.Second}, 5 * time.Second},
		{"markers, TTL rounded up plus one", true, Liveness{Heartbeat: 200 * time.Millisecond, TTL: 1500 * time.Millisecond}, 3 * time.Second},
		{"explicit", true, Liveness{Heartbeat: DefaultHeartbeat, StaleAfter: time.Minute}, time.Minute},
		{"never", false, Liveness{Heartbeat: DefaultHeartbeat, StaleAfter: -1}, -1},
	} {
		j, err := NewJudge(JudgeConfig{Layout: LayoutDotted, Liveness: c.l, Markers: c.markers})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := j.StaleAfter(); got != c.want {
			t.Errorf("%s: StaleAfter %v, want %v", c.name, got, c.want)
		}
	}
	for _, l := range []Liveness{{Heartbeat: -1}, {Heartbeat: time.Second, TTL: time.Second}, {Heartbeat: time.Second, TTL: 100 * time.Millisecond}} {
		if _, err := NewJudge(JudgeConfig{Liveness: l}); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%+v: %v, want ErrInvalidOption", l, err)
		}
	}
	if _, err := NewJudge(JudgeConfig{Layout: 7, Liveness: Liveness{Heartbeat: time.Second}}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad layout: %v", err)
	}
}

// The judge applies the state's rule: statuses, staleness, and the
// mass-removal guard a running client would have engaged.
func TestJudgeHealth(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(j *Judge, id string, s Status, age time.Duration) string {
		in := Instance{ServiceName: "svc", InstanceID: id, Version: "1.0.0", Status: s, LastHeartbeat: now}
		data, err := Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := LayoutDotted.Key("svc", id)
		j.Add(key, data, uint64(len(j.services)+1), now.Add(-age))
		return key
	}
	live := Liveness{Heartbeat: time.Second, StaleAfter: 9 * time.Second}
	j, _ := NewJudge(JudgeConfig{Layout: LayoutDotted, Liveness: live})
	jx, _ := NewJudge(JudgeConfig{Layout: LayoutDotted, Liveness: live, ExcludeStandby: true})
	never, _ := NewJudge(JudgeConfig{Layout: LayoutDotted, Liveness: Liveness{Heartbeat: time.Second, StaleAfter: -1}})
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
		{j, StatusActive, 9 * time.Second, HealthActive, true}, // not older than the threshold
		{j, StatusActive, 10 * time.Second, HealthStale, false},
		{j, StatusUnhealthy, time.Minute, HealthStale, false},
		{j, StatusActive, -time.Minute, HealthActive, true}, // a write "from the future"
		{never, StatusActive, 1000 * time.Hour, HealthActive, true},
	} {
		c.j.services = map[string]*judged{}
		key := add(c.j, "i", c.s, c.age)
		h, ok := c.j.Health(key, now)
		if !ok || h != c.want || h.Offered() != c.offered {
			t.Errorf("%s aged %v: %v %v (offered %v), want %v (offered %v)", c.s, c.age, h, ok, h.Offered(), c.want, c.offered)
		}
	}
	for h, s := range map[Health]string{HealthActive: "active", HealthStandby: "standby", HealthExcluded: "excluded",
		HealthUnhealthy: "unhealthy", HealthStale: "stale", Health(9): "Health(9)"} {
		if h.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(h), h.String(), s)
		}
	}

	// A fleet whose writes stopped together a moment ago: a running
	// client holds it (the stale guard), so the judge offers it, and says
	// why. Long after, the guard has let go.
	fleet := func(age time.Duration) (*Judge, []string) {
		j, _ := NewJudge(JudgeConfig{Layout: LayoutDotted, Liveness: live})
		var keys []string
		for n := range 4 {
			keys = append(keys, add(j, fmt.Sprintf("f%d", n), StatusActive, age+time.Duration(n)*100*time.Millisecond))
		}
		keys = append(keys, add(j, "fresh", StatusActive, time.Second))
		return j, keys
	}
	j, keys := fleet(10 * time.Second)
	var offered []string
	for _, k := range keys {
		if h, ok := j.Health(k, now); ok && h.Offered() {
			offered = append(offered, k)
		}
	}
	if !slices.Equal(offered, keys) || j.Guard("svc", now) == "" {
		t.Errorf("a fleet stale together a second ago: offered %v, guard %q; want all, held", offered, j.Guard("svc", now))
	}
	j, keys = fleet(30 * time.Second)
	offered = nil
	for _, k := range keys {
		if h, ok := j.Health(k, now); ok && h.Offered() {
			offered = append(offered, k)
		}
	}
	if want := keys[4:]; !slices.Equal(offered, want) || j.Guard("svc", now) != "" {
		t.Errorf("a fleet stale for 20 s: offered %v, guard %q; want %v, none", offered, j.Guard("svc", now), want)
	}
	// Keys it was not given, or whose record a client skips.
	j.Add("service-instances.svc.bad", []byte(`{}`), 99, now)
	for _, k := range []string{"service-instances.svc.bad", "service-instances.svc.nobody", "service-instances.other.x", "x"} {
		if _, ok := j.Health(k, now); ok {
			t.Errorf("%s: judged", k)
		}
	}
}

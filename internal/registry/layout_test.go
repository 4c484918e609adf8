package registry

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/wire"
)

func TestOpOf(t *testing.T) {
	for _, tc := range []struct {
		h    nats.Header
		want ChangeKind
	}{
		{nil, ChangeUpdated},
		{nats.Header{"Nats-TTL": {"3s"}}, ChangeUpdated},
		{nats.Header{"KV-Operation": {"DEL"}}, ChangeDeleted},
		{nats.Header{"KV-Operation": {"PURGE"}}, ChangePurged},
		{nats.Header{"Nats-Marker-Reason": {"MaxAge"}}, ChangeExpired},
		{nats.Header{"Nats-Marker-Reason": {"Purge"}}, ChangePurged},
		{nats.Header{"Nats-Marker-Reason": {"Remove"}}, ChangeDeleted},
	} {
		if have := OpOf(tc.h); have != tc.want {
			t.Errorf("%v: want %v, have %v", tc.h, tc.want, have)
		}
	}
}

func TestLayoutMatch(t *testing.T) {
	for _, tc := range []struct {
		l         Layout
		key       string
		wantInst  string
		wantMatch bool
	}{
		{LayoutDotted, "service-instances.svc.a", "a", true},
		{LayoutDotted, "service-instances.svc2.a", "", false},
		{LayoutDotted, "svc", "", false},
		{LayoutDotted, "service-instances.svc.x.deep", "", false},
		{LayoutAegis, "service-instances__svc__a-1", "a-1", true},
		{LayoutAegis, "service-instances__svc__x__y", "", false}, // service "svc__x"
		{LayoutAegis, "service-instances_svc_a", "", false},      // the old single-underscore keys
		{LayoutAegis, "service-instances__svcx__a", "", false},
	} {
		inst, ok := tc.l.Match("svc", tc.key)
		if inst != tc.wantInst || ok != tc.wantMatch {
			t.Errorf("%v %s: want %q %v, have %q %v", tc.l, tc.key, tc.wantInst, tc.wantMatch, inst, ok)
		}
	}
}

func TestLayoutServiceOf(t *testing.T) {
	for _, tc := range []struct {
		l    Layout
		key  string
		want string
		ok   bool
	}{
		{LayoutDotted, "service-instances.svc.a", "svc", true},
		{LayoutDotted, "service-instances.svc.a.deep", "svc", true}, // Match refuses it later
		{LayoutDotted, "service-instances.svc", "", false},
		{LayoutDotted, "service-instances..a", "", false},
		{LayoutDotted, "svc", "", false},
		{LayoutAegis, "service-instances__svc__a", "svc", true},
		{LayoutAegis, "service-instances__svc", "", false},
		{LayoutAegis, "service-instances.svc.a", "", false},
	} {
		svc, ok := tc.l.ServiceOf(tc.key)
		if svc != tc.want || ok != tc.ok {
			t.Errorf("%v %s: want %q %v, have %q %v", tc.l, tc.key, tc.want, tc.ok, svc, ok)
		}
	}
}

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
		{LayoutAegis, "service-instances__" + strings.Repeat("a", 64) + "__x", want{strings.Repeat("a", 64), "x", true}},
		{LayoutAegis, "service-instances__" + strings.Repeat("a", 65) + "__x", want{}},
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
			if id, ours := l.Match(s, key); !ours || id != i {
				t.Errorf("%v: Match(%q, %q) = %q, %v", l, s, key, id, ours)
			}
		}
	}
}

// Key parsing is linear in the key: a key of a megabyte of underscores
// (the aegis layout's worst case, once quadratic) or dots parses, or is
// refused, with no more allocations than a key a thousand times shorter.
func TestLayoutParseHostileKeys(t *testing.T) {
	for _, shape := range []func(n int) string{
		func(n int) string { return KeyPrefix + "__" + strings.Repeat("_", n) },
		func(n int) string { return KeyPrefix + "__" + strings.Repeat("a_", n/2) + "__x" },
		func(n int) string { return KeyPrefix + "__ab" + strings.Repeat("__", n/2) },
		func(n int) string { return KeyPrefix + "." + strings.Repeat(".", n) },
		func(n int) string { return KeyPrefix + ".svc." + strings.Repeat("x", n) },
	} {
		for _, l := range []Layout{LayoutDotted, LayoutAegis} {
			cost := func(key string) float64 {
				return testing.AllocsPerRun(3, func() {
					l.Parse(key)
					l.ServiceOf(key)
					l.Match("svc", key)
				})
			}
			small, big := cost(shape(1<<10)), cost(shape(1<<20))
			if big > small+2 {
				t.Errorf("%v %.30q…: %.0f allocations for a 1 MiB key, %.0f for 1 KiB", l, shape(16), big, small)
			}
		}
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
			_, err := l.Key(tc.name, "i-1")
			if (err == nil) != want || (err != nil && !errors.Is(err, wire.ErrInvalidName)) {
				t.Errorf("%v Key(%q): %v, want valid=%v", l, tc.name, err, want)
			}
		}
	}
	// The key of "svc_" is nobody's on the aegis layout: not "svc"'s.
	if _, ours := LayoutAegis.Match("svc", "service-instances__svc___x"); ours {
		t.Error(`Match("svc") claims a key of "svc_"`)
	}
	if s, ok := LayoutAegis.ServiceOf("service-instances__svc___x"); !ok || s != "svc_" {
		t.Errorf("ServiceOf = %q, %v", s, ok)
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
		{"1.5s", time.Second, true}, // the server keeps whole seconds
		{"30", 30 * time.Second, true},
		{"", 0, false},
		{"never", 0, false},
		{"NEVER", 0, false},
		{"-1", 0, false},
		{"+30", 0, false},
		{"0", 0, false},
		{"0s", 0, false},
		{"500ms", 0, false}, // under a second: the server refuses it
		{"soon", 0, false},
		{"9223372036", 9223372036 * time.Second, true},
		// Past what a Duration holds: the longest one, never negative.
		{"9300000000", time.Duration(1<<63 - 1), true},
		{"9223372036854775807", time.Duration(1<<63 - 1), true},
		{"99999999999999999999", 0, false}, // past an int64
		{strings.Repeat("9", 1<<16), 0, false},
	}
	for _, c := range cases {
		h := nats.Header{}
		if c.v != "" {
			h.Set(jetstream.MsgTTLHeader, c.v)
		}
		if got, ok := MsgTTL(h); got != c.want || ok != c.ok {
			t.Errorf("MsgTTL(%.20q) = %v, %v; want %v, %v", c.v, got, ok, c.want, c.ok)
		}
	}
	if _, ok := MsgTTL(nil); ok {
		t.Error("MsgTTL(nil) found a TTL")
	}
}

// MsgTTL never returns a negative TTL with ok, whatever the header.
func FuzzMsgTTL(f *testing.F) {
	for _, s := range []string{"30s", "30", "9300000000", "never", "-5", "1e9h", "2562047h47m16.854775807s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ttl, ok := MsgTTL(nats.Header{jetstream.MsgTTLHeader: {v}})
		if ok && ttl < time.Second {
			t.Fatalf("MsgTTL(%q) = %v, true", v, ttl)
		}
	})
}

func TestDecodeKey(t *testing.T) {
	good := Instance{ServiceName: "greeter", InstanceID: "g-1", Version: "1.0.0", Status: StatusActive,
		LastHeartbeat: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	data, err := Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeKey(LayoutDotted, "service-instances.greeter.g-1", data); err != nil || got.InstanceID != "g-1" {
		t.Errorf("good record: %+v, %v", got, err)
	}
	if _, err := DecodeKey(LayoutAegis, "service-instances__greeter__g-1", data); err != nil {
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
		_, err := DecodeKey(c.l, c.key, []byte(c.data))
		for _, target := range c.is {
			if !errors.Is(err, target) {
				t.Errorf("%s: err %v, want it to match %v", c.name, err, target)
			}
		}
	}
	// The error quotes at most a bounded part of a long key.
	_, err = DecodeKey(LayoutDotted, "x."+strings.Repeat("\x1b[2J", 1<<14), data)
	if err == nil || len(err.Error()) > 512 || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("a long key: %d bytes of error, escapes kept: %v", len(err.Error()), strings.Contains(err.Error(), "\x1b"))
	}
}

// FuzzLayoutKeys: whatever a key holds, Parse, Match and ServiceOf agree —
// a key Parse takes apart is one its service's Instancer holds, and spells
// the same key again when the instance part is valid — with allocations
// that do not grow with the key.
func FuzzLayoutKeys(f *testing.F) {
	for _, k := range []string{"service-instances.svc.a", "service-instances__svc__a", "service-instances__a_b__c_d",
		"service-instances__svc___x", "service-instances.svc.a.b", "service-instances__" + strings.Repeat("_", 100)} {
		f.Add(k, false)
		f.Add(k, true)
	}
	f.Fuzz(func(t *testing.T, key string, aegis bool) {
		l := LayoutDotted
		if aegis {
			l = LayoutAegis
		}
		service, instance, ok := l.Parse(key)
		if allocs := testing.AllocsPerRun(2, func() { l.Parse(key); l.ServiceOf(key); l.Match("svc", key) }); allocs > 200 {
			t.Fatalf("%.0f allocations for a %d-byte key", allocs, len(key))
		}
		if !ok {
			return
		}
		if l.ValidateService(service) != nil {
			t.Fatalf("Parse(%q) gave an invalid service %q", key, service)
		}
		if id, ours := l.Match(service, key); !ours || id != instance {
			t.Fatalf("Parse(%q) = %q, %q; Match = %q, %v", key, service, instance, id, ours)
		}
		if svc, ok := l.ServiceOf(key); !ok || svc != service {
			t.Fatalf("Parse(%q) = %q; ServiceOf = %q, %v", key, service, svc, ok)
		}
		if l.ValidateInstance(instance) == nil {
			if k, err := l.Key(service, instance); err != nil || k != key {
				t.Fatalf("Key(Parse(%q)) = %q, %v", key, k, err)
			}
		}
	})
}

package natskv

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/wire"
)

// A bucket that is never used: the constructors refuse bad options before
// they touch it.
func fakeBucket(msgTTL bool) *Bucket {
	return &Bucket{caps: Capabilities{Bucket: "b", MsgTTL: msgTTL, Markers: msgTTL}}
}

var validInst = Instance{ServiceName: "svc", InstanceID: "a", Version: "1.0.0"}

func TestBadOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  []RegistrarOption
		ins  []InstancerOption
		in   string // in the error
	}{
		{name: "zero heartbeat", reg: []RegistrarOption{WithHeartbeat(0)}, in: "WithHeartbeat"},
		{name: "negative heartbeat", reg: []RegistrarOption{WithHeartbeat(-time.Second)}, ins: []InstancerOption{WithHeartbeat(-1)}, in: "WithHeartbeat"},
		{name: "sub-second TTL", reg: []RegistrarOption{WithTTL(500 * time.Millisecond)}, ins: []InstancerOption{WithTTL(0)}, in: "WithTTL"},
		{name: "TTL within a heartbeat", reg: []RegistrarOption{WithTTL(2 * time.Second), WithHeartbeat(5 * time.Second)},
			ins: []InstancerOption{WithHeartbeat(2 * time.Second), WithTTL(2 * time.Second)}, in: "outlast the heartbeat"},
		{name: "TTL under the default heartbeat", reg: []RegistrarOption{WithTTL(5 * time.Second)}, in: "WithTTL"},
		{name: "zero retry wait", reg: []RegistrarOption{withRetryWait(0)}, ins: []InstancerOption{withRetryWait(-1)}, in: "WithRetryWait"},
		{name: "unknown layout", reg: []RegistrarOption{WithLayout(Layout(7))}, ins: []InstancerOption{WithLayout(-1)}, in: "unknown layout"},
		{name: "bad option in a bundle", reg: []RegistrarOption{Options(WithLayout(LayoutAegis), WithHeartbeat(0))},
			ins: []InstancerOption{Options(nil, withRetryWait(0))}, in: "natskv: invalid option"},
		{name: "empty zone", reg: []RegistrarOption{WithZone("")}, in: "WithZone"},
		{name: "zone with a newline", reg: []RegistrarOption{WithZone("eu-1\n")}, in: "WithZone"},
		{name: "zone with a NUL", reg: []RegistrarOption{WithZone("eu\x001")}, in: "WithZone"},
		{name: "zone not UTF-8", reg: []RegistrarOption{WithZone("eu\xff")}, in: "WithZone"},
		{name: "zone too long", reg: []RegistrarOption{WithZone(strings.Repeat("z", 256))}, in: "WithZone"},
		{name: "negative stale guard", ins: []InstancerOption{WithStaleGuard(-0.1)}, in: "WithStaleGuard"},
		{name: "stale guard over 1", ins: []InstancerOption{WithStaleGuard(1.5)}, in: "WithStaleGuard"},
		{name: "NaN stale guard", ins: []InstancerOption{WithStaleGuard(math.NaN())}, in: "WithStaleGuard"},
		{name: "zero poll interval", ins: []InstancerOption{WithPolling(0)}, in: "WithPolling"},
		{name: "negative ready wait", ins: []InstancerOption{WithReadyWait(-time.Second)}, in: "WithReadyWait"},
		{name: "negative poll interval", ins: []InstancerOption{WithPolling(-time.Second)}, in: "WithPolling"},
		{name: "nil formatter", ins: []InstancerOption{WithFormatter(nil)}, in: "WithFormatter"},
		{name: "nil change func", ins: []InstancerOption{WithChangeFunc(nil)}, in: "WithChangeFunc"},
		{name: "nil meter provider", ins: []InstancerOption{WithMeterProvider(nil)}, in: "WithMeterProvider"},
		{name: "zero watch heartbeat", ins: []InstancerOption{withWatchHeartbeat(0)}, in: "WithWatchHeartbeat"},
		{name: "watch heartbeat without a watch", ins: []InstancerOption{WithPolling(time.Second), withWatchHeartbeat(time.Second)}, in: "WithPolling"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.reg != nil {
				_, err := NewRegistrar(fakeBucket(true), validInst, nil, tc.reg...)
				if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.in) {
					t.Errorf("NewRegistrar: want ErrInvalidOption naming %q, have %v", tc.in, err)
				}
			}
			if tc.ins != nil {
				i, err := NewInstancer(fakeBucket(true), "svc", nil, tc.ins...)
				if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.in) {
					t.Errorf("NewInstancer: want ErrInvalidOption naming %q, have %v", tc.in, err)
				}
				if i != nil {
					i.Stop()
				}
			}
		})
	}
	if _, err := NewRegistrar(nil, validInst, nil); err == nil {
		t.Error("NewRegistrar(nil bucket): want an error")
	}
	if _, err := NewInstancer(nil, "svc", nil); err == nil {
		t.Error("NewInstancer(nil bucket): want an error")
	}
}

// Options that concern only an Instancer are not RegistrarOptions: passing
// one to NewRegistrar does not compile. Options of both are both.
func TestOptionTypes(t *testing.T) {
	for name, o := range map[string]any{
		"WithStaleAfter": WithStaleAfter(time.Second), "WithFormatter": WithFormatter(func(Instance) string { return "" }),
		"WithExcludeStandby": WithExcludeStandby(), "WithPolling": WithPolling(time.Second),
		"WithChangeFunc": WithChangeFunc(func(Change) {}), "WithWatchHeartbeat": withWatchHeartbeat(time.Second),
		"WithReadyWait": WithReadyWait(time.Second),
	} {
		if _, ok := o.(RegistrarOption); ok {
			t.Errorf("%s is a RegistrarOption", name)
		}
		if _, ok := o.(InstancerOption); !ok {
			t.Errorf("%s is not an InstancerOption", name)
		}
	}
	for name, o := range map[string]any{
		"WithLayout": WithLayout(LayoutAegis), "WithHeartbeat": WithHeartbeat(time.Second), "WithTTL": WithTTL(time.Second),
		"WithRetryWait": withRetryWait(time.Second), "Options": Options(),
	} {
		_, r := o.(RegistrarOption)
		_, i := o.(InstancerOption)
		if !r || !i {
			t.Errorf("%s: RegistrarOption %v, InstancerOption %v; want both", name, r, i)
		}
	}
}

func TestRegistrarTTL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msgTTL bool
		opts   []RegistrarOption
		want   time.Duration
	}{
		{"default: 3 heartbeats", true, nil, 30 * time.Second},
		{"rounded up to whole seconds", true, []RegistrarOption{Options(WithHeartbeat(200*time.Millisecond), WithTTL(1500*time.Millisecond))}, 2 * time.Second},
		{"a short default heartbeat: at least 1 s", true, []RegistrarOption{WithHeartbeat(50 * time.Millisecond)}, time.Second},
		{"no per-write TTL on the bucket", false, []RegistrarOption{WithHeartbeat(time.Second), WithTTL(3 * time.Second)}, 0},
		{"nil options are skipped", true, []RegistrarOption{nil, WithHeartbeat(time.Second), nil}, 3 * time.Second},
	} {
		r, err := NewRegistrar(fakeBucket(tc.msgTTL), validInst, nil, tc.opts...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.TTL() != tc.want {
			t.Errorf("%s: TTL want %v, have %v", tc.name, tc.want, r.TTL())
		}
	}
}

func TestOptionDefaults(t *testing.T) {
	o := instancerOptions{commonOptions: defaultCommon()}
	if _, err := configure(fakeBucket(false), nil, []InstancerOption{WithHeartbeat(2 * time.Second)}, InstancerOption.applyInstancer, &o, &o.commonOptions); err != nil {
		t.Fatal(err)
	}
	if o.retryWait != 500*time.Millisecond || o.layout != LayoutDotted {
		t.Errorf("defaults: %+v", o.commonOptions)
	}
	o = instancerOptions{commonOptions: defaultCommon()}
	if _, err := configure(fakeBucket(false), nil, []InstancerOption{Options(WithLayout(LayoutAegis), withRetryWait(time.Minute))}, InstancerOption.applyInstancer, &o, &o.commonOptions); err != nil {
		t.Fatal(err)
	}
	if o.retryWait != time.Minute || o.layout != LayoutAegis || o.heartbeat != registry.DefaultHeartbeat {
		t.Errorf("bundled: %+v", o.commonOptions)
	}
}

func TestWithZoneWritesMetadata(t *testing.T) {
	inst := validInst.clone()
	inst.Metadata = map[string]string{"zone": "old", "addr": "x"}
	r, err := NewRegistrar(fakeBucket(true), inst, nil, WithZone("eu-west-1a"))
	if err != nil {
		t.Fatal(err)
	}
	got := r.instance().Metadata
	if got[wire.MetadataZone] != "eu-west-1a" || got["addr"] != "x" {
		t.Errorf("metadata %v, want zone eu-west-1a and addr x", got)
	}
	if inst.Metadata["zone"] != "old" {
		t.Errorf("the caller's map was changed: %v", inst.Metadata)
	}
	// Without the option the Instance's own zone stays.
	r, err = NewRegistrar(fakeBucket(true), inst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if z := r.instance().Metadata[wire.MetadataZone]; z != "old" {
		t.Errorf("zone %q without WithZone, want old", z)
	}
	// Unicode zones are fine.
	if _, err := NewRegistrar(fakeBucket(true), validInst, nil, WithZone("zürich-1 b")); err != nil {
		t.Errorf("WithZone(zürich-1 b): %v", err)
	}
}

// The aegis layout's name rules apply to registrars and Instancers alike,
// before the bucket is used.
func TestAegisServiceNames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		aegis, ok bool // valid on the aegis layout; on the dotted one
	}{
		{"go-echo", true, true},
		{"ab", true, true},
		{strings.Repeat("a", 65), false, false},
		{"g", false, true},
		{"Go-Echo", false, true},
		{"go_echo_", false, true},
		{"go__echo", false, true},
		{"1go", false, false},
	} {
		for _, l := range []Layout{LayoutAegis, LayoutDotted} {
			want := tc.ok
			if l == LayoutAegis {
				want = tc.aegis
			}
			inst := Instance{ServiceName: tc.name, InstanceID: "i-1", Version: "1.0.0"}
			if _, err := NewRegistrar(fakeBucket(true), inst, nil, WithLayout(l)); (err == nil) != want || (err != nil && !errors.Is(err, wire.ErrInvalidName)) {
				t.Errorf("%v NewRegistrar(%q): %v, want valid=%v", l, tc.name, err, want)
			}
			if want {
				continue // a valid Instancer would start reading the fake bucket
			}
			if _, err := NewInstancer(fakeBucket(true), tc.name, nil, WithLayout(l)); !errors.Is(err, wire.ErrInvalidName) {
				t.Errorf("%v NewInstancer(%q): %v, want wire.ErrInvalidName", l, tc.name, err)
			}
		}
	}
}

package lb_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
)

// describingInstancer is a fakeInstancer that knows its instances'
// attributes, as natskv's Instancer does.
type describingInstancer struct {
	*fakeInstancer
	mu    sync.Mutex
	attrs map[string]lb.Attributes
}

func (d *describingInstancer) Describe(instance string) (lb.Attributes, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.attrs[instance]
	return a, ok
}

func (d *describingInstancer) set(instance string, a lb.Attributes) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attrs[instance] = a
}

var _ lb.Describer = (*describingInstancer)(nil)

func TestEndpointSetReadsDescriber(t *testing.T) {
	inst := &describingInstancer{
		fakeInstancer: newFakeInstancer("a", "b", "c"),
		attrs: map[string]lb.Attributes{
			"a": {Metadata: map[string]string{"zone": "eu"}},
			"b": {Standby: true, Metadata: map[string]string{"zone": "us"}},
			// c: unknown to the describer, so ACTIVE with no metadata
		},
	}
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil)
	defer set.Close()

	v := set.View()
	if want, have := []string{"a", "c"}, instanceNames(v.Active()); !slices.Equal(want, have) {
		t.Errorf("ACTIVE: want %v, have %v", want, have)
	}
	if want, have := []string{"b"}, instanceNames(v.Standby()); !slices.Equal(want, have) {
		t.Errorf("STANDBY: want %v, have %v", want, have)
	}
	if want, have := "us", v.Lookup("b").Attributes().Metadata["zone"]; want != have {
		t.Errorf("b's zone: want %q, have %q", want, have)
	}
	if md := v.Lookup("c").Attributes().Metadata; md != nil {
		t.Errorf("c's metadata: want none, have %v", md)
	}
	if want, have := []bool{false, true, false}, standbys(set); !slices.Equal(want, have) {
		t.Errorf("Stats standby: want %v, have %v", want, have)
	}

	// A status change travels with an event, as natskv sends one.
	rr := lb.New(set, lb.RoundRobin())
	inst.set("a", lb.Attributes{Standby: true})
	inst.set("c", lb.Attributes{Standby: true})
	inst.set("b", lb.Attributes{})
	inst.Update(sd.Event{Instances: []string{"a", "b", "c"}})
	eventually(t, "b ACTIVE", func() bool { return !set.View().Lookup("b").Attributes().Standby })
	for range 5 {
		if p, _ := rr.Pick(context.Background(), nil); p.Instance != "b" {
			t.Fatalf("only b ACTIVE: want b, have %s", p.Instance)
		}
	}
}

func TestWithAttributesOverridesDescriber(t *testing.T) {
	inst := &describingInstancer{
		fakeInstancer: newFakeInstancer("a", "b"),
		attrs:         map[string]lb.Attributes{"a": {Standby: true}},
	}
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil,
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s == "b"} }))
	defer set.Close()
	if want, have := []bool{false, true}, standbys(set); !slices.Equal(want, have) {
		t.Errorf("Stats standby: want %v, have %v", want, have)
	}
}

func instanceNames(ins []*lb.Instance) []string {
	var s []string
	for _, in := range ins {
		s = append(s, in.Name())
	}
	return s
}

func TestSubscribe(t *testing.T) {
	inst := newFakeInstancer("a")
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil)

	var mu sync.Mutex
	var seen [][]string
	cancel := set.Subscribe(func(v *lb.View) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, instanceNames(v.Instances()))
	})
	seenNow := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	if want, have := [][]string{{"a"}}, seenNow(); !slices.EqualFunc(want, have, slices.Equal) {
		t.Fatalf("on Subscribe: want %v, have %v", want, have)
	}
	inst.Update(sd.Event{Instances: []string{"a", "b"}})
	eventually(t, "the second view", func() bool { return len(seenNow()) == 2 })
	set.Refresh()
	if want, have := [][]string{{"a"}, {"a", "b"}, {"a", "b"}}, seenNow(); !slices.EqualFunc(want, have, slices.Equal) {
		t.Errorf("after an event and Refresh: want %v, have %v", want, have)
	}

	var last atomic.Pointer[lb.View]
	set.Subscribe(func(v *lb.View) { last.Store(v) })
	cancel()
	cancel()
	set.Close()
	if want, have := 3, len(seenNow()); want != have {
		t.Errorf("views after cancel: want %d in all, have %d", want, have)
	}
	if v := last.Load(); v.Len() != 0 || !errors.Is(lb.ViewErr(v), lb.ErrClosed) {
		t.Errorf("last view: want empty with ErrClosed, have %d instances, %v", v.Len(), lb.ViewErr(v))
	}
	// After Close: the closed view, once.
	calls := 0
	set.Subscribe(func(v *lb.View) { calls++ })()
	if calls != 1 {
		t.Errorf("Subscribe after Close: want 1 call, have %d", calls)
	}
}

// countingPolicy counts its builds and the views they were for; its picker
// picks the first instance by name through Fallback.
type countingPolicy struct {
	builds atomic.Int32
	last   atomic.Pointer[lb.View]
}

func (c *countingPolicy) Build(v *lb.View) lb.Picker {
	c.builds.Add(1)
	c.last.Store(v)
	return pickerFunc(func(_ context.Context, tried []string) *lb.Instance { return v.Fallback(0, tried) })
}

// TestPickersBuiltOnPublish: a picker is built once per view, when the set
// publishes it, never on a pick; an empty view reaches no policy.
func TestPickersBuiltOnPublish(t *testing.T) {
	inst := newFakeInstancer()
	set := newSetOver(t, inst)
	policy := &countingPolicy{}
	b := lb.New(set, policy)
	if want, have := int32(0), policy.builds.Load(); want != have {
		t.Errorf("builds for an empty view: want %d, have %d", want, have)
	}
	if _, err := b.Pick(context.Background(), nil); !errors.Is(err, lb.ErrNoInstances) {
		t.Errorf("empty view: want %v, have %v", lb.ErrNoInstances, err)
	}

	inst.Update(sd.Event{Instances: []string{"b", "a"}})
	eventually(t, "a build", func() bool { return policy.builds.Load() == 1 })
	if policy.last.Load() != set.View() {
		t.Error("the picker was built from another view than the set's")
	}
	for range 100 {
		if p, err := b.Pick(context.Background(), nil); err != nil || p.Instance != "a" {
			t.Fatalf("pick: want a, have %q, %v", p.Instance, err)
		}
	}
	if want, have := int32(1), policy.builds.Load(); want != have {
		t.Errorf("builds after picks: want %d, have %d", want, have)
	}
	set.Refresh()
	if want, have := int32(2), policy.builds.Load(); want != have {
		t.Errorf("builds once Refresh returned: want %d, have %d", want, have)
	}
}

func newSetOver(t *testing.T, inst sd.Instancer, opts ...lb.EndpointSetOption) *lb.EndpointSet {
	t.Helper()
	set := lb.NewEndpointSet(inst, newFakeFactory().Factory, nil, opts...)
	t.Cleanup(set.Close)
	return set
}

// TestViewRules checks the exported rules on their own: Eligible, Rank and
// Fallback, which every policy, inside lb or not, relies on.
func TestViewRules(t *testing.T) {
	f := newFakeFactory()
	set := newSet(t, f, []string{"a", "b", "c", "s1", "s2"},
		lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s[0] == 's'} }))
	v := set.View()
	a, b, c, s1, s2 := v.Lookup("a"), v.Lookup("b"), v.Lookup("c"), v.Lookup("s1"), v.Lookup("s2")
	if v.Lookup("zz") != nil {
		t.Error("Lookup of an unknown instance")
	}
	f.Closer("c").down.Store(true)
	defer f.Closer("c").down.Store(false)

	for _, tc := range []struct {
		in       *lb.Instance
		tried    []string
		eligible bool
		rank     int
	}{
		{a, nil, true, 0},
		{a, []string{"b"}, true, 0},
		{s1, nil, true, 1},
		{a, []string{"a"}, false, 2},
		{s1, []string{"s1"}, false, 3},
		{c, nil, false, 4},
		{c, []string{"c"}, false, 6},
	} {
		if have := tc.in.Eligible(tc.tried); have != tc.eligible {
			t.Errorf("%s tried %v: Eligible: want %v, have %v", tc.in.Name(), tc.tried, tc.eligible, have)
		}
		if have := tc.in.Rank(tc.tried); have != tc.rank {
			t.Errorf("%s tried %v: Rank: want %d, have %d", tc.in.Name(), tc.tried, tc.rank, have)
		}
	}

	for _, tc := range []struct {
		start uint64
		tried []string
		want  *lb.Instance
	}{
		{0, nil, a},
		{1, nil, b},
		{2, nil, a}, // c is unavailable: its turn passes on, wrapping
		{0, []string{"a", "b"}, s1},
		{1, []string{"a", "b"}, s2},
		{0, []string{"a", "b", "s1", "s2"}, a}, // all tried: the first available
		{1, []string{"a", "b", "s1", "s2"}, b},
	} {
		if have := v.Fallback(tc.start, tc.tried); have != tc.want {
			t.Errorf("Fallback(%d, %v): want %s, have %s", tc.start, tc.tried, tc.want.Name(), have.Name())
		}
	}
	if got := (&lb.View{}).Fallback(0, nil); got != nil {
		t.Errorf("Fallback of an empty view: want nil, have %s", got.Name())
	}
}

// TestStickyLeavesSetAlone: a sticky balancer builds its rings from the
// views it is given; the set publishes the same views with or without it.
func TestStickyLeavesSetAlone(t *testing.T) {
	set := newSet(t, nil, names(10))
	before := set.View()
	lb.New(set, lb.Sticky())
	if set.View() != before {
		t.Error("NewSticky published a view")
	}
	set.Refresh()
	after := set.View()
	if want, have := instanceNames(before.Instances()), instanceNames(after.Instances()); !slices.Equal(want, have) {
		t.Errorf("views: want %v, have %v", want, have)
	}
}

func TestPolicyReturningNil(t *testing.T) {
	set := newSet(t, nil, []string{"a"})
	refuse := policyFunc(func(*lb.View) lb.Picker {
		return pickerFunc(func(context.Context, []string) *lb.Instance { return nil })
	})
	if _, err := lb.New(set, refuse).Pick(context.Background(), nil); !errors.Is(err, lb.ErrNoInstances) {
		t.Errorf("a picker that refuses: want %v, have %v", lb.ErrNoInstances, err)
	}
}

package lb_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/aegis-sdk/kitnats/lb"
)

const stickyKeys = 10000

// assignment maps each of the test keys to the instance the sticky balancer
// picks for it.
func assignment(t *testing.T, instances []string, opts ...lb.EndpointSetOption) []string {
	t.Helper()
	set := newSet(t, nil, instances, opts...)
	s := lb.New(set, lb.Sticky())
	out := make([]string, stickyKeys)
	for i := range out {
		p, err := s.Pick(lb.WithStickyKey(context.Background(), fmt.Sprintf("user-%d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = p.Instance
	}
	return out
}

func TestStickySameKeySameInstance(t *testing.T) {
	insts := names(20)
	// Two clients that learnt the instances in different orders.
	reversed := slices.Clone(insts)
	slices.Reverse(reversed)
	a, b := assignment(t, insts), assignment(t, reversed)
	if !slices.Equal(a, b) {
		t.Fatal("two clients map keys differently")
	}
	counts := map[string]int{}
	for _, name := range a {
		counts[name]++
	}
	// Spread: every instance owns keys, none more than twice its share.
	if want, have := len(insts), len(counts); want != have {
		t.Errorf("instances owning keys: want %d, have %d", want, have)
	}
	for name, n := range counts {
		if share := stickyKeys / len(insts); n > 2*share {
			t.Errorf("%s owns %d keys, over twice its share %d", name, n, share)
		}
	}
}

// TestStickyRemapBound measures the keys moved when one of N instances is
// added or removed: only the keys of the instance that changed may move, and
// they must be at most ~1.5/N of all keys.
func TestStickyRemapBound(t *testing.T) {
	for _, n := range []int{3, 10, 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			all := names(n + 1)
			before := assignment(t, all[:n])

			// Add one.
			added := all[n]
			after := assignment(t, all)
			moved := 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if after[i] != added {
						t.Fatalf("adding %s moved a key from %s to %s", added, before[i], after[i])
					}
				}
			}
			frac := float64(moved) / stickyKeys
			t.Logf("add 1 to %d: %.4f of keys moved (1/N=%.4f)", n, frac, 1/float64(n+1))
			if bound := 1.5 / float64(n+1); frac > bound {
				t.Errorf("add 1 to %d: %.4f of keys moved, want ≤ %.4f", n, frac, bound)
			}
			if moved == 0 {
				t.Error("the added instance owns no keys")
			}

			// Remove one.
			removed := all[n/2]
			after = assignment(t, slices.Delete(slices.Clone(all[:n]), n/2, n/2+1))
			moved = 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if before[i] != removed {
						t.Fatalf("removing %s moved a key of %s", removed, before[i])
					}
				}
			}
			frac = float64(moved) / stickyKeys
			t.Logf("remove 1 of %d: %.4f of keys moved (1/N=%.4f)", n, frac, 1/float64(n))
			if bound := 1.5 / float64(n); frac > bound {
				t.Errorf("remove 1 of %d: %.4f of keys moved, want ≤ %.4f", n, frac, bound)
			}
		})
	}
}

func TestStickyFailoverSpreadsAndReturns(t *testing.T) {
	insts := names(10)
	f := newFakeFactory()
	set := newSet(t, f, insts)
	s := lb.New(set, lb.Sticky())
	pick := func(i int) string {
		p, err := s.Pick(lb.WithStickyKey(context.Background(), fmt.Sprintf("user-%d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return p.Instance
	}
	before := make([]string, 2000)
	for i := range before {
		before[i] = pick(i)
	}

	down := before[0]
	f.Closer(down).down.Store(true)
	heirs := map[string]int{}
	for i := range before {
		have := pick(i)
		if before[i] == down {
			if have == down {
				t.Fatalf("key %d stays on unavailable %s", i, down)
			}
			heirs[have]++
		} else if have != before[i] {
			t.Fatalf("key %d of healthy %s moved to %s", i, before[i], have)
		}
	}
	if len(heirs) < 3 {
		t.Errorf("keys of %s went to %d instances (%v), want them spread over ≥ 3", down, len(heirs), heirs)
	}

	f.Closer(down).down.Store(false)
	for i := range before {
		if want, have := before[i], pick(i); want != have {
			t.Fatalf("key %d after recovery: want %s, have %s", i, want, have)
		}
	}
}

func TestStickyPreferredInstance(t *testing.T) {
	insts := names(5)
	f := newFakeFactory()
	set := newSet(t, f, insts, lb.WithAttributes(func(s string) lb.Attributes { return lb.Attributes{Standby: s == insts[3]} }))
	s := lb.New(set, lb.Sticky())
	keyed := lb.WithStickyKey(context.Background(), "user-1")
	p, _ := s.Pick(keyed, nil)
	keyOwner := p.Instance
	pref := insts[3]
	if keyOwner == pref {
		t.Fatal("pick another key: its owner is the preferred instance")
	}

	for _, tc := range []struct {
		name    string
		ctx     context.Context
		tried   []string
		prefOff bool
		want    string
	}{
		{"preferred wins, even STANDBY", lb.WithPreferredInstance(keyed, pref), nil, false, pref},
		{"preferred without a key", lb.WithPreferredInstance(context.Background(), pref), nil, false, pref},
		{"preferred tried", lb.WithPreferredInstance(keyed, pref), []string{pref}, false, keyOwner},
		{"preferred unavailable", lb.WithPreferredInstance(keyed, pref), nil, true, keyOwner},
		{"preferred unknown", lb.WithPreferredInstance(keyed, "gone"), nil, false, keyOwner},
	} {
		f.Closer(pref).down.Store(tc.prefOff)
		p, err := s.Pick(tc.ctx, tc.tried)
		if err != nil {
			t.Fatal(err)
		}
		if p.Instance != tc.want {
			t.Errorf("%s: want %s, have %s", tc.name, tc.want, p.Instance)
		}
	}
}

func TestStickyNoKeyIsRoundRobin(t *testing.T) {
	insts := names(4)
	s := lb.New(newSet(t, nil, insts), lb.SeededSticky(11))
	var have []string
	for range 8 {
		p, _ := s.Pick(context.Background(), nil)
		have = append(have, p.Instance)
	}
	start := slices.Index(insts, have[0])
	for i, name := range have {
		if want := insts[(start+i)%len(insts)]; want != name {
			t.Fatalf("pick %d: want %s, have %s", i, want, name)
		}
	}
}

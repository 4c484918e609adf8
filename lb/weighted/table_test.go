package weighted

import (
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/wire"
)

// tier returns the ACTIVE instances of a set whose instance i weighs
// weights[i].
func tier(t testing.TB, weights []string) []*lb.Instance {
	t.Helper()
	names := make([]string, len(weights))
	byName := map[string]string{}
	for i, w := range weights {
		names[i] = fmt.Sprintf("inst-%05d", i)
		byName[names[i]] = w
	}
	set := lb.NewEndpointSet(sd.FixedInstancer(names), func(string) (endpoint.Endpoint, io.Closer, error) {
		return endpoint.Nop, nil, nil
	}, nil, lb.WithAttributes(func(s string) lb.Attributes {
		return lb.Attributes{Metadata: map[string]string{wire.MetadataWeight: byName[s]}}
	}))
	t.Cleanup(set.Close)
	return set.View().Active()
}

// TestAliasTableExact checks, with no randomness, that each instance owns
// exactly its weight's share of the table: summed over the columns, the
// capacity an instance holds is weight·n, of n·total in all.
func TestAliasTableExact(t *testing.T) {
	for _, weights := range [][]string{
		{"1"},
		{"1", "2", "7"},
		{"0", "5", "0", "5"},
		{"4294967295", "1", "3"},
		{"3", "3", "3", "3", "3"},
		{"1", "1000000", "1", "1", "2", "999", "0", "17"},
	} {
		tb := newTable(tier(t, weights))
		n := uint64(len(tb.insts))
		held := make([]uint64, n)
		for col := range n {
			if tb.prob[col] > tb.total {
				t.Fatalf("%v: column %d holds %d of capacity %d", weights, col, tb.prob[col], tb.total)
			}
			held[col] += tb.prob[col]
			held[tb.alias[col]] += tb.total - tb.prob[col]
		}
		for i, w := range tb.weights {
			if want, have := w*n, held[i]; want != have {
				t.Errorf("%v: %s holds %d, want %d", weights, tb.insts[i].Name(), have, want)
			}
		}
	}
}

// BenchmarkDraw compares the alias table with prefix sums searched by
// halving (branch-free, so random draws cost no mispredictions), the usual
// alternative, on 1,000 instances weighing 1 to 10. The alias table is
// O(1) where the search is O(log n); see BenchmarkPick in package lb for
// the whole pick.
func BenchmarkDraw(b *testing.B) {
	weights := make([]string, 1000)
	for i := range weights {
		weights[i] = fmt.Sprint(1 + i%10)
	}
	tb := newTable(tier(b, weights))
	cum := make([]uint64, len(tb.weights))
	var sum uint64
	for i, w := range tb.weights {
		sum += w
		cum[i] = sum
	}
	b.Run("alias", func(b *testing.B) {
		for b.Loop() {
			_ = tb.at(rand.Uint64())
		}
	})
	b.Run("prefix-sums", func(b *testing.B) {
		for b.Loop() {
			r, _ := bits.Mul64(rand.Uint64(), sum)
			base, n := 0, len(cum)
			for n > 1 {
				half := n >> 1
				_, borrow := bits.Sub64(r, cum[base+half-1], 0) // 1 when r < cum[...]
				base += half * int(1-borrow)
				n -= half
			}
			_ = tb.insts[base]
		}
	})
}

package lb

import "context"

// Random picks uniformly at random. Unlike go-kit's NewRandom it is safe for
// concurrent use, and it neither locks nor allocates. Run it with New.
func Random() Policy { return newRandom(seed{}) }

func newRandom(s seed) Policy { return &random{rnd: newSource(s)} }

type random struct{ rnd *source }

func (r *random) Build(v *View) Picker { return &randomPicker{view: v, rnd: r.rnd} }

type randomPicker struct {
	view *View
	rnd  *source
}

// randomDraws is how many uniform draws a random pick tries before it falls
// back from the last one: a few draws keep the choice uniform among the
// eligible instances when some are skipped, the fallback bounds the cost.
const randomDraws = 3

func (p *randomPicker) Pick(_ context.Context, tried []string) *Instance {
	x := p.rnd.uint64()
	if tier := p.view.tiers[0]; len(tier) > 0 {
		for i := 0; ; i++ {
			if in := tier[bounded(x, len(tier))]; in.score(tried) == 0 {
				return in
			}
			if i == randomDraws-1 {
				break
			}
			x = p.rnd.uint64()
		}
	}
	return p.view.Fallback(x, tried)
}

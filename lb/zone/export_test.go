package zone

import "github.com/aegis-sdk/kitnats/lb"

// WithSeed makes the policy's draws (local or not, for requests without a
// sticky key) repeat from run to run. It does not seed the inner policy.
func WithSeed(seed uint64) Option {
	return option(func(o *options) error {
		o.seed, o.seeded = seed, true
		return nil
	})
}

func Of(in *lb.Instance) string { return of(in) }

package zone

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/wire"
)

// defaultHealthyShare is about Envoy's overprovisioning factor of 1.4.
const defaultHealthyShare = 0.7

// of is the zone an instance registered, "" when it has none.
func of(in *lb.Instance) string { return in.Attributes().Metadata[wire.MetadataZone] }

// Option configures Policy. Policy, like lb's constructors, returns no
// error: an option given a value it cannot use is a programming error, and
// Policy panics with a message naming the option.
type Option interface {
	apply(*options) error
}

type option func(*options) error

func (f option) apply(o *options) error { return f(o) }

type options struct {
	key     string  // the metadata key naming an instance's place (WithKey)
	healthy float64 // > 0: the health rule's share; 0: off
	client  float64 // > 0: the capacity rule's client share; 0: off
	seed    uint64
	seeded  bool
}

func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("kitnats/lb/zone: invalid option %s: %s", option, fmt.Sprintf(format, args...))
}

// WithHealthyShare sets the share of the local instances that must be
// healthy (available) for all the traffic to stay local; below it, the
// share kept local is the healthy share divided by it. The default is 0.7.
// share is from 0 to 1: 1 spills as soon as one local instance is down; 0
// turns the rule off, and traffic stays local while any local instance is
// eligible.
func WithHealthyShare(share float64) Option {
	return option(func(o *options) error {
		if math.IsNaN(share) || share < 0 || share > 1 {
			return invalidOption("WithHealthyShare", "share %v not in [0, 1]", share)
		}
		o.healthy = share
		return nil
	})
}

// WithClientShare tells the policy what share of the service's callers are
// in the local zone (a third, in three zones of equal traffic), and turns on
// the capacity rule: the share of the traffic kept local is at most the
// local zone's share of the healthy instances of every zone, divided by
// share — Envoy's zone-aware rule. A zone with too few instances for its
// callers then sends the excess to the other zones even while every
// instance is healthy. share is from 0 to 1; 0 turns the rule off (the
// default).
func WithClientShare(share float64) Option {
	return option(func(o *options) error {
		if math.IsNaN(share) || share < 0 || share > 1 {
			return invalidOption("WithClientShare", "share %v not in [0, 1]", share)
		}
		o.client = share
		return nil
	})
}

// Policy returns a policy that runs inner over the instances of the zone
// named local, and over the instances of every other zone when the local
// ones are too few, too unhealthy or not eligible (see the package
// documentation for the rule). inner may be any policy: lb's, weighted's,
// yours. It builds two pickers per view, one over each part (lb.View.Filter);
// when the view has no instance in the local zone, or nothing else, it
// builds one over the whole view. An empty local turns zones off: Policy
// returns inner.
func Policy(inner lb.Policy, local string, opts ...Option) lb.Policy {
	o := options{key: wire.MetadataZone, healthy: defaultHealthyShare}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.apply(&o); err != nil {
			panic(err)
		}
	}
	if local == "" {
		return inner
	}
	p := &policy{inner: inner, local: local, opts: o}
	p.rnd.Store(o.seed)
	return p
}

type policy struct {
	inner lb.Policy
	local string
	opts  options
	rnd   splitmix // seeded draws; runtime randomness otherwise
}

func (p *policy) isLocal(in *lb.Instance) bool {
	return in.Attributes().Metadata[p.opts.key] == p.local
}

func (p *policy) Build(v *lb.View) lb.Picker {
	n := 0
	for _, in := range v.Instances() {
		if p.isLocal(in) {
			n++
		}
	}
	if n == 0 || n == v.Len() {
		return p.inner.Build(v) // one zone: nothing to choose
	}
	local := v.Filter(p.isLocal)
	remote := v.Filter(func(in *lb.Instance) bool { return !p.isLocal(in) })
	pk := &picker{
		policy:  p,
		view:    v,
		views:   [2]*lb.View{local, remote},
		pickers: [2]lb.Picker{p.inner.Build(local), p.inner.Build(remote)},
		counted: [2]*lb.View{active(local), active(remote)},
	}
	pk.nLocal, pk.nRemote = pk.counted[0].Len(), pk.counted[1].Len()
	if p.opts.healthy > 0 && pk.nLocal > 0 {
		pk.healthScale = 1 / (float64(pk.nLocal) * p.opts.healthy)
	}
	return pk
}

// active is the part of v the zone rule counts: its ACTIVE instances. A
// STANDBY instance takes traffic only when no ACTIVE instance of any zone
// can, so it is no zone's capacity.
func active(v *lb.View) *lb.View {
	if len(v.Standby()) == 0 {
		return v
	}
	return v.Filter(func(in *lb.Instance) bool { return !in.Attributes().Standby })
}

const (
	local  = 0
	remote = 1
)

type picker struct {
	*policy
	view    *lb.View
	views   [2]*lb.View // local, remote
	pickers [2]lb.Picker
	counted [2]*lb.View // the ACTIVE instances of views, for the zone rule
	nLocal  int         // counted[0].Len()
	nRemote int
	// healthScale turns a count of healthy local instances into the share
	// kept local by the health rule: 1 / (nLocal × healthy share).
	healthScale float64
}

// Pick asks the picker of the side the zone rule draws (local or remote)
// and keeps its choice if it is an eligible ACTIVE instance (lb.Instance
// Rank 0) or the eligible preferred instance; otherwise it asks the other
// side too and returns the better ranked of the two, the drawn side's on a
// tie. So the shared rules come first across zones: an eligible remote
// instance beats an ineligible local one, an ACTIVE one a STANDBY one.
func (p *picker) Pick(ctx context.Context, tried []string) *lb.Instance {
	side := p.side(ctx)
	pref, hasPref := lb.PreferredInstance(ctx)
	if hasPref {
		// The preferred instance's side, while it is eligible: the inner
		// policy decides whether to honour it (lb's sticky one does).
		for s, v := range p.views {
			if in := v.Lookup(pref); in != nil && in.Eligible(tried) {
				side = s
			}
		}
	}
	first := p.pickers[side].Pick(ctx, tried)
	var firstRank int
	if first != nil {
		if firstRank = first.Rank(tried); firstRank == 0 || (hasPref && first.Name() == pref && firstRank == 1) {
			return first
		}
	}
	second := p.pickers[1-side].Pick(ctx, tried)
	switch {
	case second == nil:
		return first
	case first == nil || second.Rank(tried) < firstRank:
		return second
	}
	return first
}

// side draws local or remote by the zone rule.
func (p *picker) side(ctx context.Context) int {
	f := p.localShare()
	switch {
	case f >= 1:
		return local
	case f <= 0:
		return remote
	}
	// A request with a sticky key stays or spills as a whole, so its key
	// keeps to one instance; the hash is not the one sticky rings use.
	var x uint64
	if key, ok := lb.StickyKey(ctx); ok {
		x = hashString(key)
	} else if p.opts.seeded {
		x = p.rnd.next()
	} else {
		x = rand.Uint64()
	}
	if float64(x>>11) < f*(1<<53) {
		return local
	}
	return remote
}

// localShare is the share of the picks the zone rule keeps local now, from
// the set's latest census of unavailable instances.
func (p *picker) localShare() float64 {
	lu, ru := p.counted[local].Unavailable(), p.counted[remote].Unavailable()
	if lu == 0 && p.opts.client == 0 && p.nLocal > 0 {
		return 1 // the common case: the local zone is whole
	}
	if p.view.PanicMode() {
		lu, ru = 0, 0 // every instance counts as healthy, as for the shared rules
	}
	lh, rh := p.nLocal-lu, p.nRemote-ru
	switch {
	case rh <= 0:
		return 1 // nowhere healthy to spill to
	case lh <= 0:
		return 0
	}
	f := 1.0
	if p.healthScale > 0 {
		f = float64(lh) * p.healthScale
	}
	if p.opts.client > 0 {
		f = min(f, float64(lh)/(float64(lh+rh)*p.opts.client))
	}
	return f
}

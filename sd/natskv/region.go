package natskv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/wire"
)

// A regional registry keeps writes and reads inside each region. Every
// region has two buckets, placed in its own cluster: its home bucket, where
// its instances register, and its view, a read-only bucket that JetStream
// fills by sourcing every region's home bucket (its own included). Clients
// watch their region's view. A cut gateway then costs only the other
// regions' records: local heartbeats and watches never cross it. In the
// view, records carry the time the view stored them, so a region that is
// cut off ages there as a crashed instance would: the Instancer's
// staleness rule drops it, whatever the sources do, and on buckets with
// markers the view expires it with a marker of its own first.

// maxRegionLen bounds a region's name, so that the buckets' names fit.
const maxRegionLen = 32

// viewSuffix ends a view bucket's name. Region names have no '_', so no
// region's home bucket is named like another region's view.
const viewSuffix = "_view"

// sourceHeartbeat is the idle heartbeat nats-server requires of a
// consumer that a stream sources through (AckFlowControl).
const sourceHeartbeat = time.Second

// sourceMaxAckPending bounds what a source has in flight.
const sourceMaxAckPending = 1 << 16

// durableSourceLevel is the JetStream API level of durable sourcing
// (nats-server 2.14).
const durableSourceLevel = 4

// RegionConfig is one region of a regional registry, as ProvisionRegion
// makes it. Every region of a registry is provisioned with the same
// regions (Regions and Remote, each from its own side) and the same
// liveness settings (per-key TTL, LimitMarkerTTL): a view refuses what its
// own bucket would. Replicas and storage may differ from region to region.
type RegionConfig struct {
	// Region names this region: letters, digits and '-', at most 32
	// bytes. Its buckets are placed in the NATS cluster of that name
	// (unless NoPlacement) and named after it.
	Region string
	// Regions are the registry's regions in this JetStream (the clusters
	// of a supercluster); Region is added when missing.
	Regions []string
	// Remote are the registry's regions in other JetStream domains, each
	// with its domain: leaf sites seen from the hub, the hub's regions
	// seen from a leaf site.
	Remote map[string]string
	// Bucket configures both buckets. Its Name is the registry's name,
	// the stem of theirs (default DefaultBucket): region r writes to
	// {Name}_{r} and reads {Name}_{r}_view. Instance IDs must be unique
	// across regions: a view holds one record per key.
	Bucket BucketConfig
	// NoPlacement leaves the buckets where the server puts them (the
	// cluster of the server that receives the request): for a server in
	// no named cluster, such as a leaf site.
	NoPlacement bool
}

// remoteRegion is a region of the registry in another JetStream domain.
type remoteRegion struct {
	region string
	domain string
}

// Region is one region of a regional registry, bound for use: its
// Registrars write to Home, its Instancers watch View.
type Region struct {
	name string
	home *Bucket
	view *Bucket
}

// Name is the region's name.
func (r *Region) Name() string { return r.name }

// Home is the region's own bucket, where its instances register.
func (r *Region) Home() *Bucket { return r.home }

// View is the region's read-only view of every region's instances, which
// its Instancers watch.
func (r *Region) View() *Bucket { return r.view }

// NewRegistrar is NewRegistrar on the region's home bucket, with the
// region written into the record's metadata under wire.MetadataRegion,
// where region-aware balancers read it.
func (r *Region) NewRegistrar(inst Instance, logger log.Logger, opts ...RegistrarOption) (*Registrar, error) {
	inst = inst.clone()
	if inst.Metadata == nil {
		inst.Metadata = map[string]string{}
	}
	inst.Metadata[wire.MetadataRegion] = r.name
	return NewRegistrar(r.home, inst, logger, opts...)
}

// ProvisionRegion creates (or binds) one region's home bucket and view,
// and what feeds the view: durable consumers on the home bucket, one for
// every region's view (nats-server ≥ 2.14; older servers source through
// consumers they make themselves), and the view's sources, one per
// region. A region's view fills as the other regions are provisioned, in
// any order (a source that found nothing is retried by the server, with a
// backoff of up to two minutes). Provisioning again is harmless; provisioning with more
// regions adds their sources to the view. The home bucket is never
// changed: one that exists with another configuration is an error
// matching ErrBucketConfig, as from CreateBucket.
func ProvisionRegion(ctx context.Context, js jetstream.JetStream, cfg RegionConfig) (*Region, error) {
	if cfg.Bucket.Name == "" {
		cfg.Bucket.Name = DefaultBucket
	}
	local, remote, err := regionNames(cfg)
	if err != nil {
		return nil, err
	}
	base := cfg.Bucket.Name
	bc, err := normalizeBucket(cfg.Bucket)
	if err != nil {
		return nil, err
	}
	var level int
	err = natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + ">", natserr.InboxPattern(js.Conn())}, func(ctx context.Context) error {
		info, err := js.AccountInfo(ctx)
		if err == nil {
			level = info.API.Level
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natskv: provision region %s: %w", cfg.Region, err)
	}
	ttl := !bc.NoTTL && level >= 1
	if !ttl {
		bc.LimitMarkerTTL = 0
	}
	durable := level >= durableSourceLevel
	var placement *jetstream.Placement
	if !cfg.NoPlacement {
		placement = &jetstream.Placement{Cluster: cfg.Region}
	}

	// The home bucket: as CreateBucket makes it, in the region's cluster.
	homeName := regionHome(base, cfg.Region)
	hc := bc
	hc.Name = homeName
	home := streamConfig(hc, ttl)
	home.Placement = placement
	if err := samePeers(ctx, js, base, cfg.Region, local, home); err != nil {
		return nil, err
	}
	if err := createStream(ctx, js, home, false); err != nil {
		return nil, err
	}

	// A durable consumer on it for every region's view.
	readers := append(slices.Clone(local), remoteNames(remote)...)
	if durable {
		for _, reader := range readers {
			if err := createSourceConsumer(ctx, js, home.Name, base, cfg.Region, reader); err != nil {
				return nil, err
			}
		}
	}

	// The view: the same bucket, read-only, fed by every home bucket.
	viewName := regionView(base, cfg.Region)
	vc := bc
	vc.Name = viewName
	view := streamConfig(vc, ttl)
	view.Placement = placement
	view.Subjects = nil // sources only: nobody registers in a view by mistake
	dest := "$KV." + viewName + ".>"
	source := func(region string) *jetstream.StreamSource {
		h := regionHome(base, region)
		s := &jetstream.StreamSource{
			Name:              "KV_" + h,
			SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "$KV." + h + ".>", Destination: dest}},
		}
		if durable {
			s.Consumer = &jetstream.StreamConsumerSource{Name: sourceConsumer(cfg.Region), DeliverSubject: sourceSubject(base, region, cfg.Region)}
		}
		return s
	}
	for _, r := range local {
		view.Sources = append(view.Sources, source(r))
	}
	for _, r := range remote {
		s := source(r.region)
		s.External = &jetstream.ExternalStream{APIPrefix: "$JS." + r.domain + ".API"}
		view.Sources = append(view.Sources, s)
	}
	if err := createStream(ctx, js, view, true); err != nil {
		return nil, err
	}
	return BindRegion(ctx, js, base, cfg.Region)
}

// BindRegion binds a provisioned region's buckets: what a service or a
// client of the region does, where ProvisionRegion is the operator's.
// bucket is the registry's name (empty: DefaultBucket).
func BindRegion(ctx context.Context, js jetstream.JetStream, bucket, region string) (*Region, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	if err := validateRegion(region); err != nil {
		return nil, err
	}
	home, err := BindBucket(ctx, js, regionHome(bucket, region))
	if err != nil {
		return nil, err
	}
	view, err := BindBucket(ctx, js, regionView(bucket, region))
	if err != nil {
		return nil, err
	}
	return &Region{name: region, home: home, view: view}, nil
}

// regionNames checks the region names of cfg: this one, the others of its
// JetStream (with this one, in order, without repeats) and the remote ones.
func regionNames(cfg RegionConfig) (local []string, remote []remoteRegion, err error) {
	if err := validateRegion(cfg.Region); err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{cfg.Region: true}
	local = []string{cfg.Region}
	for _, r := range cfg.Regions {
		if err := validateRegion(r); err != nil {
			return nil, nil, err
		}
		if !seen[r] {
			seen[r] = true
			local = append(local, r)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(cfg.Remote)) {
		if err := validateRegion(r); err != nil {
			return nil, nil, err
		}
		if seen[r] {
			return nil, nil, fmt.Errorf("%w: region %s is named twice", ErrInvalidOption, r)
		}
		if err := validateDomain(cfg.Remote[r]); err != nil {
			return nil, nil, err
		}
		seen[r] = true
		remote = append(remote, remoteRegion{region: r, domain: cfg.Remote[r]})
	}
	for r := range seen {
		if err := wire.ValidateBucket(regionView(cfg.Bucket.Name, r)); err != nil {
			return nil, nil, err
		}
	}
	return local, remote, nil
}

func remoteNames(rs []remoteRegion) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.region
	}
	return out
}

// validateRegion: letters, digits and '-', starting with a letter or digit.
// No '_' (it separates a bucket's name from the region's) and no '.' (a
// subject token).
func validateRegion(r string) error {
	bad := func(reason string) error { return &wire.NameError{Kind: "region", Name: r, Reason: reason} }
	switch {
	case r == "":
		return bad("empty")
	case len(r) > maxRegionLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxRegionLen))
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return bad(fmt.Sprintf("character %q at %d is not a letter, digit or a '-' after the first", c, i))
		}
	}
	return nil
}

// validateDomain: a JetStream domain is one subject token.
func validateDomain(d string) error {
	if d == "" {
		return fmt.Errorf("%w: remote region without a JetStream domain", ErrInvalidOption)
	}
	if err := wire.ValidateBucket(d); err != nil {
		return fmt.Errorf("%w: JetStream domain: %w", ErrInvalidOption, err)
	}
	return nil
}

func regionHome(bucket, region string) string { return bucket + "_" + region }

func regionView(bucket, region string) string { return bucket + "_" + region + viewSuffix }

// sourceConsumer names the consumer on a home bucket that feeds reader's
// view.
func sourceConsumer(reader string) string { return "kitnats_view_" + reader }

// sourceSubject is where the home bucket of region from delivers to the
// view of region to.
func sourceSubject(bucket, from, to string) string {
	return "kitnats.view." + bucket + "." + from + "." + to
}

// normalizeBucket applies CreateBucket's defaults and checks.
func normalizeBucket(cfg BucketConfig) (BucketConfig, error) {
	if err := wire.ValidateBucket(cfg.Name); err != nil {
		return cfg, err
	}
	if cfg.History == 0 {
		cfg.History = 1
	}
	if cfg.History > jetstream.KeyValueMaxHistory {
		return cfg, fmt.Errorf("natskv: bucket %s: history %d over %d", cfg.Name, cfg.History, jetstream.KeyValueMaxHistory)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxValueSize == 0 {
		cfg.MaxValueSize = registry.MaxRecordSize
	}
	if cfg.LimitMarkerTTL > 0 && cfg.LimitMarkerTTL < minLimitMarkerTTL {
		cfg.LimitMarkerTTL = minLimitMarkerTTL // the server's resolution
	}
	return cfg, nil
}

// createStream creates a bucket's stream. An existing one with the same
// configuration is fine; with another, a derived stream (update) is
// updated, a home bucket is an ErrBucketConfig.
func createStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, update bool) error {
	name := want.Name[len("KV_"):]
	err := natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + ">", natserr.InboxPattern(js.Conn())}, func(ctx context.Context) error {
		var err error
		if update {
			_, err = js.CreateOrUpdateStream(ctx, want)
		} else {
			_, err = js.CreateStream(ctx, want)
		}
		return err
	})
	if !update && errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		existing, berr := BindBucket(ctx, js, name)
		if berr != nil {
			return fmt.Errorf("%w: %s: %v", ErrBucketConfig, name, berr)
		}
		return fmt.Errorf("%w: %s", ErrBucketConfig, describeDiff(want, existing.caps))
	}
	if err != nil {
		return fmt.Errorf("natskv: create bucket %s: %w", name, err)
	}
	return nil
}

// samePeers checks that the home buckets of the other regions of this
// JetStream, those that exist, take what this one takes: a record with a
// TTL, a marker, a roll-up. A view refuses what its bucket would.
func samePeers(ctx context.Context, js jetstream.JetStream, base, region string, local []string, home jetstream.StreamConfig) error {
	for _, r := range local {
		if r == region {
			continue
		}
		peer, err := BindBucket(ctx, js, regionHome(base, r))
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue // not provisioned yet
		}
		if err != nil {
			return fmt.Errorf("natskv: provision region %s: %w", region, err)
		}
		c := peer.caps
		if c.MsgTTL != home.AllowMsgTTL || c.LimitMarkerTTL != home.SubjectDeleteMarkerTTL || c.Rollups != home.AllowRollup {
			return fmt.Errorf("%w: region %s: %s", ErrBucketConfig, region, describeDiff(home, c))
		}
	}
	return nil
}

// createSourceConsumer makes (or keeps) the durable consumer of stream
// that feeds reader's view.
func createSourceConsumer(ctx context.Context, js jetstream.JetStream, stream, bucket, region, reader string) error {
	cfg := jetstream.ConsumerConfig{
		Durable:        sourceConsumer(reader),
		Description:    "kitnats: feeds the registry view of region " + reader,
		DeliverSubject: sourceSubject(bucket, region, reader),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  sourceHeartbeat,
		MaxAckPending:  sourceMaxAckPending,
	}
	err := natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + ">", natserr.InboxPattern(js.Conn())}, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("natskv: source consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return nil
}

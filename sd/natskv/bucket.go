package natskv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/wire"
)

// DefaultBucket is the bucket AegisSDK services register in.
const DefaultBucket = "service_registry"

// ErrBucketConfig is returned by CreateBucket when the bucket exists with a
// different configuration; the existing bucket is left as it is.
var ErrBucketConfig = errors.New("natskv: bucket exists with a different configuration")

// BucketConfig is what CreateBucket asks the server for. The zero value is
// the AegisSDK's bucket name, one replica, history 1, file storage, per-key
// TTL, and no roll-ups or purges: no writer of one key can remove another's.
type BucketConfig struct {
	// Name of the bucket; empty means DefaultBucket.
	Name        string
	Description string
	// History is the values kept per key; 0 means 1.
	History uint8
	// Replicas in a cluster; 0 means 1.
	Replicas int
	// Storage defaults to file storage.
	Storage jetstream.StorageType
	// LimitMarkerTTL, when set, makes expiry leave a marker that every
	// watcher receives at once (ChangeExpired), kept this long (at least
	// 1 s). The server then allows roll-ups on the bucket, so any writer of
	// one key can purge every other (a Nats-Rollup header, which
	// permissions do not see). 0, the default: no markers, no roll-ups, no
	// purges; an expired record is dropped by Instancers' staleness check
	// instead, at the same time after its TTL (a crash of several instances
	// at once is held by WithStaleGuard for up to one threshold more).
	LimitMarkerTTL time.Duration
	// NoTTL creates the bucket without per-key TTL, as AegisSDK does: a
	// crashed instance's record stays until removed, and clients drop it by
	// heartbeat age. Servers before 2.11 have no per-key TTL either;
	// Capabilities says which applies.
	NoTTL bool
	// MaxAge expires every value after this long (0: never); the AegisSDK's
	// deployment charts use 30 s as a crude crash detector.
	MaxAge time.Duration
	// MaxValueSize bounds a record; 0 means 64 KiB, the most a record may
	// hold.
	MaxValueSize int32
}

// Capabilities is what a bucket can do, as the server reports it.
// Registrars and Instancers adapt to it; String says it in words.
type Capabilities struct {
	Bucket string
	// MsgTTL: the bucket accepts a TTL per write, so a crashed instance's
	// record expires on the server.
	MsgTTL bool
	// Markers: expiry leaves a marker every watcher receives at once.
	// Without, a crash is noticed by heartbeat age.
	Markers        bool
	LimitMarkerTTL time.Duration
	// Rollups: the bucket accepts Nats-Rollup headers, so any writer of
	// one key can purge every other key (buckets with markers, and those
	// nats.go or AegisSDK made).
	Rollups bool
	// Purges: the bucket's stream accepts purge requests (from users
	// allowed $JS.API.STREAM.PURGE).
	Purges   bool
	MaxAge   time.Duration
	History  int64
	Replicas int
}

// String says in words what the bucket offers and, when it lacks expiry
// markers, how crashes will be detected instead: worth logging at start-up.
func (c Capabilities) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bucket %s: R%d, history %d", c.Bucket, c.Replicas, c.History)
	if c.MaxAge > 0 {
		fmt.Fprintf(&b, ", max age %s", c.MaxAge)
	}
	switch {
	case c.MsgTTL && c.Markers:
		fmt.Fprintf(&b, ", per-key TTL with expiry markers (kept %s)", c.LimitMarkerTTL)
	case c.MsgTTL:
		b.WriteString(", per-key TTL without expiry markers: expiry is detected by heartbeat age")
	default:
		b.WriteString(", no per-key TTL or expiry markers: a crashed instance is detected by heartbeat age only")
	}
	switch {
	case c.Rollups:
		b.WriteString("; roll-ups allowed: any writer of one key can purge the bucket")
	case c.Purges:
		b.WriteString("; roll-ups refused, purges allowed")
	default:
		b.WriteString("; roll-ups and purges refused")
	}
	return b.String()
}

// Bucket is a registry bucket bound for use: the KV handle, the JetStream
// context behind it (renewable TTLs are JetStream publishes, and the
// Instancer watches the bucket's stream directly), what the bucket
// supports, and the watches its Instancers share.
type Bucket struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	caps Capabilities
	// direct: the stream answers direct gets, which is how a watch loads a
	// service it starts to follow (else it scans with a consumer).
	direct bool

	// The shared watches of this bucket's Instancers, one per setting
	// that changes what a watch is.
	watchMu sync.Mutex
	watches map[watchKey]*watcher

	decodeHook func(key string) // tests: runs before a watch decodes a record
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.caps.Bucket }

// KeyValue is the underlying KV handle.
func (b *Bucket) KeyValue() jetstream.KeyValue { return b.kv }

// JetStream is the JetStream context the bucket was bound with.
func (b *Bucket) JetStream() jetstream.JetStream { return b.js }

// Capabilities reports what the bucket supports, as of binding.
func (b *Bucket) Capabilities() Capabilities { return b.caps }

func (b *Bucket) stream() string { return "KV_" + b.caps.Bucket }

func (b *Bucket) subject(key string) string { return "$KV." + b.caps.Bucket + "." + key }

// minLimitMarkerTTL is the shortest time markers stay: the server's
// resolution.
const minLimitMarkerTTL = time.Second

// CreateBucket creates the registry bucket, or binds to it when it already
// exists with the same configuration. An existing bucket with a different
// configuration is never changed: the error matches ErrBucketConfig and says
// what differs; use BindBucket to use it as it is.
//
// The bucket is a KV bucket (any KV client reads it) that refuses roll-ups
// and purges unless cfg asks for expiry markers: then nats-server allows
// roll-ups whatever the configuration says.
func CreateBucket(ctx context.Context, js jetstream.JetStream, cfg BucketConfig) (*Bucket, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultBucket
	}
	cfg, err := normalizeBucket(cfg)
	if err != nil {
		return nil, err
	}
	var want jetstream.StreamConfig
	err = natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + ">", natserr.InboxPattern(js.Conn())}, func(ctx context.Context) error {
		ttl := !cfg.NoTTL
		if ttl {
			// Per-message TTL came with JetStream API level 1 (2.11).
			info, err := js.AccountInfo(ctx)
			if err != nil {
				return err
			}
			ttl = info.API.Level >= 1
		}
		if !ttl {
			cfg.LimitMarkerTTL = 0
		}
		want = streamConfig(cfg, ttl)
		_, err := js.CreateStream(ctx, want)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		existing, berr := BindBucket(ctx, js, cfg.Name)
		if berr != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBucketConfig, cfg.Name, berr)
		}
		return nil, fmt.Errorf("%w: %s", ErrBucketConfig, describeDiff(want, existing.caps))
	}
	if err != nil {
		return nil, fmt.Errorf("natskv: create bucket %s: %w", cfg.Name, err)
	}
	return BindBucket(ctx, js, cfg.Name)
}

// streamConfig is the KV stream of a bucket, as nats.go's KV makes it
// (any KV client binds it) but for roll-ups and purges: refused, unless
// the bucket has expiry markers, where the server requires roll-ups.
func streamConfig(cfg BucketConfig, ttl bool) jetstream.StreamConfig {
	dup := 2 * time.Minute
	if cfg.MaxAge > 0 && cfg.MaxAge < dup {
		dup = cfg.MaxAge
	}
	sc := jetstream.StreamConfig{
		Name:              "KV_" + cfg.Name,
		Description:       cfg.Description,
		Subjects:          []string{"$KV." + cfg.Name + ".>"},
		MaxMsgsPerSubject: int64(cfg.History),
		MaxBytes:          -1,
		MaxAge:            cfg.MaxAge,
		MaxMsgSize:        cfg.MaxValueSize,
		Storage:           cfg.Storage,
		Replicas:          cfg.Replicas,
		DenyDelete:        true,
		DenyPurge:         true,
		Duplicates:        dup,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
		AllowMsgTTL:       ttl,
	}
	if ttl && cfg.LimitMarkerTTL > 0 {
		sc.SubjectDeleteMarkerTTL = cfg.LimitMarkerTTL
		sc.AllowRollup, sc.DenyPurge = true, false // what the server makes of markers anyway
	}
	return sc
}

func describeDiff(want jetstream.StreamConfig, have Capabilities) string {
	var d []string
	if want.MaxMsgsPerSubject != have.History {
		d = append(d, fmt.Sprintf("history want %d have %d", want.MaxMsgsPerSubject, have.History))
	}
	if want.Replicas != have.Replicas {
		d = append(d, fmt.Sprintf("replicas want %d have %d", want.Replicas, have.Replicas))
	}
	if want.AllowMsgTTL != have.MsgTTL {
		d = append(d, fmt.Sprintf("per-key TTL want %v have %v", want.AllowMsgTTL, have.MsgTTL))
	}
	if want.SubjectDeleteMarkerTTL != have.LimitMarkerTTL {
		d = append(d, fmt.Sprintf("limit marker TTL want %s have %s", want.SubjectDeleteMarkerTTL, have.LimitMarkerTTL))
	}
	if want.AllowRollup != have.Rollups {
		d = append(d, fmt.Sprintf("roll-ups want %v have %v", want.AllowRollup, have.Rollups))
	}
	if !want.DenyPurge != have.Purges {
		d = append(d, fmt.Sprintf("purges want %v have %v", !want.DenyPurge, have.Purges))
	}
	if want.MaxAge != have.MaxAge {
		d = append(d, fmt.Sprintf("max age want %s have %s", want.MaxAge, have.MaxAge))
	}
	if len(d) == 0 {
		d = append(d, "other settings differ")
	}
	return have.Bucket + ": " + strings.Join(d, "; ")
}

// BindBucket uses an existing bucket as it is and reports what it supports
// (Capabilities): a bucket made by AegisSDK has no per-key TTL, and one
// made by nats.go allows roll-ups.
func BindBucket(ctx context.Context, js jetstream.JetStream, name string) (*Bucket, error) {
	if err := wire.ValidateBucket(name); err != nil {
		return nil, err
	}
	var kv jetstream.KeyValue
	err := natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + "STREAM.INFO.KV_" + name, natserr.InboxPattern(js.Conn())},
		func(ctx context.Context) (err error) {
			kv, err = js.KeyValue(ctx, name)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("natskv: bind bucket %s: %w", name, err)
	}
	return bind(ctx, js, kv)
}

func bind(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (*Bucket, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %s status: %w", kv.Bucket(), err)
	}
	c := st.Config()
	caps := Capabilities{
		Bucket:         kv.Bucket(),
		Markers:        st.LimitMarkerTTL() > 0,
		LimitMarkerTTL: st.LimitMarkerTTL(),
		MaxAge:         st.TTL(),
		History:        st.History(),
		Replicas:       c.Replicas,
		Rollups:        true, // unless the stream says otherwise
		Purges:         true,
	}
	caps.MsgTTL = caps.Markers
	direct := false
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		sc := bs.StreamInfo().Config
		caps.MsgTTL = sc.AllowMsgTTL
		caps.Replicas = sc.Replicas
		caps.Rollups = sc.AllowRollup
		caps.Purges = !sc.DenyPurge
		direct = sc.AllowDirect
	}
	if caps.Replicas == 0 {
		caps.Replicas = 1
	}
	return &Bucket{js: js, kv: kv, caps: caps, direct: direct}, nil
}

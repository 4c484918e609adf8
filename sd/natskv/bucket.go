package natskv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/wire"
)

// DefaultBucket is the bucket AegisSDK services register in.
const DefaultBucket = "service_registry"

// DefaultLimitMarkerTTL is how long expiry and delete markers stay in a bucket
// CreateBucket makes: long enough for every watcher to see them.
const DefaultLimitMarkerTTL = time.Minute

// ErrBucketConfig is returned by CreateBucket when the bucket exists with a
// different configuration; the existing bucket is left as it is.
var ErrBucketConfig = errors.New("natskv: bucket exists with a different configuration")

// BucketConfig is what CreateBucket asks the server for. The zero value is
// the AegisSDK's bucket name, one replica, history 1, file storage, and
// per-key TTL with expiry markers.
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
	// LimitMarkerTTL enables per-key TTL and expiry markers and says how
	// long markers stay; 0 means DefaultLimitMarkerTTL. Servers before 2.11
	// lack it; CreateBucket then creates the bucket without and says so in
	// the Capabilities.
	LimitMarkerTTL time.Duration
	// NoMarkers creates the bucket without per-key TTL, as AegisSDK does.
	NoMarkers bool
	// MaxAge expires every value after this long (0: never), the AegisSDK's
	// deployment charts use 30 s as a crude crash detector.
	MaxAge time.Duration
	// MaxValueSize bounds a record; 0 means MaxRecordSize.
	MaxValueSize int32
}

// Capabilities is what a bucket can do for liveness, as the server reports
// it. Registrars and Instancers adapt to it; String says it in words.
type Capabilities struct {
	Bucket string
	// MsgTTL: the bucket accepts a TTL per write, so a crashed instance's
	// record expires on the server.
	MsgTTL bool
	// Markers: expiry leaves a marker every watcher receives at once.
	// Without, a crash is noticed only by heartbeat age.
	Markers        bool
	LimitMarkerTTL time.Duration
	MaxAge         time.Duration
	History        int64
	Replicas       int
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
		b.WriteString(", per-key TTL without expiry markers: expiry is detected by heartbeat age only")
	default:
		b.WriteString(", no per-key TTL or expiry markers: a crashed instance is detected by heartbeat age only")
	}
	return b.String()
}

// Bucket is a registry bucket bound for use: the KV handle, the JetStream
// context behind it (renewable TTLs are JetStream publishes, and the Instancer
// watches the bucket's stream directly) and what the bucket supports.
type Bucket struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	caps Capabilities
	// direct: the stream answers direct gets, which is how a watch loads a
	// service it starts to follow (else it scans with a consumer).
	direct bool
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

// CreateBucket creates the registry bucket, or binds to it when it already
// exists with the same configuration. An existing bucket with a different
// configuration is never changed: the error matches ErrBucketConfig and says
// what differs; use BindBucket to use it as it is.
func CreateBucket(ctx context.Context, js jetstream.JetStream, cfg BucketConfig) (*Bucket, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultBucket
	}
	if err := wire.ValidateBucket(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.History == 0 {
		cfg.History = 1
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxValueSize == 0 {
		cfg.MaxValueSize = MaxRecordSize
	}
	kvc := jetstream.KeyValueConfig{
		Bucket:       cfg.Name,
		Description:  cfg.Description,
		History:      cfg.History,
		Replicas:     cfg.Replicas,
		Storage:      cfg.Storage,
		TTL:          cfg.MaxAge,
		MaxValueSize: cfg.MaxValueSize,
	}
	if !cfg.NoMarkers {
		kvc.LimitMarkerTTL = cfg.LimitMarkerTTL
		if kvc.LimitMarkerTTL == 0 {
			kvc.LimitMarkerTTL = DefaultLimitMarkerTTL
		}
		if kvc.LimitMarkerTTL < time.Second {
			kvc.LimitMarkerTTL = time.Second // the server's resolution
		}
	}
	kv, err := createKV(ctx, js, kvc)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		kvc.LimitMarkerTTL = 0
		kv, err = createKV(ctx, js, kvc)
	}
	if errors.Is(err, jetstream.ErrBucketExists) {
		existing, berr := BindBucket(ctx, js, cfg.Name)
		if berr != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBucketConfig, cfg.Name, berr)
		}
		return nil, fmt.Errorf("%w: %s", ErrBucketConfig, describeDiff(kvc, existing.caps))
	}
	if err != nil {
		return nil, fmt.Errorf("natskv: create bucket %s: %w", cfg.Name, err)
	}
	return bind(ctx, js, kv)
}

func describeDiff(want jetstream.KeyValueConfig, have Capabilities) string {
	var d []string
	if int64(want.History) != have.History {
		d = append(d, fmt.Sprintf("history want %d have %d", want.History, have.History))
	}
	if want.Replicas != have.Replicas {
		d = append(d, fmt.Sprintf("replicas want %d have %d", want.Replicas, have.Replicas))
	}
	if want.LimitMarkerTTL != have.LimitMarkerTTL {
		d = append(d, fmt.Sprintf("limit marker TTL want %s have %s", want.LimitMarkerTTL, have.LimitMarkerTTL))
	}
	if want.TTL != have.MaxAge {
		d = append(d, fmt.Sprintf("max age want %s have %s", want.TTL, have.MaxAge))
	}
	if len(d) == 0 {
		d = append(d, "other settings differ")
	}
	return have.Bucket + ": " + strings.Join(d, "; ")
}

// BindBucket uses an existing bucket as it is and reports what it supports.
// A bucket made by AegisSDK has no per-key TTL: check Capabilities.
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

// createKV is js.CreateKeyValue, which reports a refused JetStream API
// request (it asks for account info, then creates the stream) as a
// *PermissionError as soon as the server refuses it.
func createKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = natserr.Do(ctx, js.Conn(), []string{apiPrefix(js) + ">", natserr.InboxPattern(js.Conn())}, func(ctx context.Context) error {
		kv, err = js.CreateKeyValue(ctx, cfg)
		return err
	})
	return kv, err
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
	}
	caps.MsgTTL = caps.Markers
	direct := false
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		caps.MsgTTL = bs.StreamInfo().Config.AllowMsgTTL
		caps.Replicas = bs.StreamInfo().Config.Replicas
		direct = bs.StreamInfo().Config.AllowDirect
	}
	if caps.Replicas == 0 {
		caps.Replicas = 1
	}
	return &Bucket{js: js, kv: kv, caps: caps, direct: direct}, nil
}

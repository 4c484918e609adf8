// Package natskv is a go-kit service registry on a NATS JetStream key-value
// bucket: instances register themselves with a Registrar, and clients hold an
// always-current view of the healthy instances of a service through an
// Instancer, a go-kit sd.Instancer driven by a watch on the bucket — the call
// path never queries the registry.
//
// The record is the Python AegisSDK's ServiceInstance, written as that SDK
// writes it (compact camelCase JSON, `+00:00` timestamps), so Go and Python
// services can share a bucket; use LayoutAegis for its key spelling
// `service-instances__{service}__{instance}`. The default, LayoutDotted,
// spells keys `service-instances.{service}.{instance}` so that a watch on one
// service is filtered by the server. On LayoutAegis both sides see one
// fleet: service names follow the AegisSDK's rules (lower-case, at least 2
// characters, no trailing '_' or '-'), and Instancers read records strictly,
// skipping and counting what the Python reader drops (WithStrictRecords).
//
// Liveness. A Registrar rewrites its record every heartbeat (default 10 s).
// On a bucket with LimitMarkerTTL (nats-server ≥ 2.11; CreateBucket asks for
// it) every write carries a TTL (WithTTL, default 3 heartbeats), so a
// crashed instance expires on the server and every watcher is told at once,
// with a reason (Change.Kind ChangeExpired) distinct from a clean Deregister
// (ChangeDeleted). On buckets without markers — those AegisSDK creates — the
// Instancer drops instances whose heartbeat is older than a threshold, on a
// timer. Bucket.Capabilities says which applies.
//
// One watch per process. Every Instancer that watches a bucket through the
// same JetStream context (with the same layout and WithWatchHeartbeat) is a
// view over one shared watch: one JetStream consumer however many services
// and Instancers, one decode of each record (the decoded records are held
// once and shared by the views of a service), one staleness clock, one
// recovery. The consumer is filtered by the names of the services followed;
// past 64 it takes the whole registry instead and the client keeps what it
// follows, because the server checks a consumer's filters pairwise on every
// change (2 ms of server time per update at 64 filters, 200 ms at 1,000).
// LayoutAegis always takes the whole bucket. A new Instancer for a service
// already followed has its set at once, with no request; for a service not
// followed, one batched direct get (nats-server ≥ 2.11; a consumer scan on
// buckets without direct gets, or past 1,024 keys) loads it while the
// filter is updated, and records written in between are fetched again, not
// lost. Stopping the last Instancer of a service stops following it; the
// last Instancer of all deletes the consumer. The scope is the JetStream
// context rather than the process because a watch lives on a connection:
// Instancers bound through another connection (another client, in effect)
// get their own watch. Polling Instancers (WithPolling) each list on their
// own.
//
// Ready when go-kit asks. NewInstancer returns once the service's current
// set is in — as go-kit's etcd and Consul instancers read theirs before
// their constructors return — waiting at most WithReadyWait (default 2 s)
// and then returning anyway, without error, with the set to follow;
// NewInstancerContext waits as long as its context allows and fails
// otherwise. Register then hands the set over before it returns (on an
// unbuffered channel, it waits until the receiver has handled it), so
// sd.NewEndpointer or lb.NewEndpointSet built on a new Instancer serves its
// first call.
//
// Resilience. The watch rebuilds its consumer as soon as the connection
// comes back or the consumer is lost (a cluster node going down): in well
// under a second after a reconnect, about a second after a node loss, where
// the stock nats.go KV watcher stays silent for 15–20 s. Delivery gaps and
// missed idle heartbeats count as a loss too. While the watch is down
// subscribers get sd.Event{Err} and keep their last set; a fresh full set
// follows recovery. After a server restart the reconnect itself is most of
// the wait: nats.go's defaults retry every 2 s; connect with
// ReconnectOptions to be back within a few hundred milliseconds of the
// server. Every subscriber has a latest-value mailbox: a slow one receives
// the newest set when it is ready and never holds up the watch or other
// subscribers.
//
// WithPolling turns the watch into the AegisSDK's cached discovery: re-list
// every interval, keep the cached set on failure, Refresh to force a re-list.
//
// State. The rules of the registry — which entries are offered, what is
// stale, which rewrites are news, what a rebuilt watch missed — live in
// transport-free types (state.go) that the watch and the polling only feed:
// one change at a time, a whole set (the initial values of a watch, a
// direct get, a listing), or the clock. A book holds one service's decoded
// records; a state is one Instancer's view of a book. Their tests need no
// server (state_test.go).
//
// Options. Settings both sides of a bucket must agree on (WithLayout,
// WithHeartbeat, WithTTL) and WithRetryWait are of type Option, accepted by
// NewRegistrar and NewInstancer alike; Options bundles several to pass to
// both. The Instancer's own settings are InstancerOptions, which NewRegistrar
// does not accept (it does not compile). A value a constructor cannot use
// (a heartbeat that is not positive, a TTL under 1 s or within a heartbeat,
// a nil func, an unknown layout...) is refused with an error matching
// ErrInvalidOption, never clamped.
//
// Permissions. A Registrar needs to publish to its own key's subject and
// $JS.API.STREAM.INFO.KV_<bucket> (BindBucket), an Instancer the consumer
// APIs of the bucket's stream and a direct get; package
// github.com/aegis-sdk/kitnats/permissions has the least sets, tested.
// A refusal by the server is an error naming the permission (ErrPermission,
// *PermissionError): from BindBucket, a Registrar's writes, and
// NewInstancer, which fails rather than return an empty set.
//
// Names. Service, instance and bucket names follow kitnats' one set of rules,
// shared with the transport: letters, digits, '_' and '-', services up to
// wire.MaxServiceLen bytes, instance IDs up to wire.MaxInstanceLen. Every refusal
// is a *wire.NameError matching wire.ErrInvalidName, whichever package refused it.
package natskv

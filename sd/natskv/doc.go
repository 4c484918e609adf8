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
// service is filtered by the server.
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
// Resilience. The Instancer watches through its own consumer with short idle
// heartbeats and rebuilds it as soon as the connection comes back or the
// consumer is lost (a cluster node going down): in well under a second after
// a reconnect, about a second after a node loss, where the stock nats.go KV
// watcher stays silent for 15–20 s. While the watch is down subscribers get
// sd.Event{Err} and keep their last set; a fresh full set follows recovery.
// Every subscriber has a latest-value mailbox: a slow one receives the newest
// set when it is ready and never holds up the watch or other subscribers.
//
// Events. Subscribers get the healthy set, sorted, once the initial values
// are in, then each time it changes — and again, unchanged, when a member
// turns STANDBY or back to ACTIVE, so that balancers re-read its status.
// Heartbeats that change nothing send nothing. The Instancer is an
// lb.Describer: an lb.EndpointSet built on it learns each instance's STANDBY
// status and metadata with no wiring; Lookup gives the whole record.
//
// WithPolling turns the watch into the AegisSDK's cached discovery: re-list
// every interval, keep the cached set on failure, Refresh to force a re-list.
//
// State. The rules of the registry — which entries are offered, what is
// stale, which rewrites are news, what a rebuilt watch missed — live in one
// transport-free type (state.go) that the watch and the polling only feed:
// one change at a time, a whole set (the initial values of a watch, a
// listing), or the clock. Its tests need no server (state_test.go).
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
// Names. Service, instance and bucket names follow kitnats' one set of rules,
// shared with the transport: letters, digits, '_' and '-', services up to
// MaxServiceNameLen bytes, instance IDs up to MaxInstanceIDLen. Every refusal
// is a *NameError matching ErrInvalidName, whichever package refused it.
package natskv

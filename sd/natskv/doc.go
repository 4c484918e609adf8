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
// it) every write carries a TTL of 3 heartbeats, so a crashed instance
// expires on the server and every watcher is told at once, with a reason
// (Change.Kind ChangeExpired) distinct from a clean Deregister
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
// turns STANDBY or back to ACTIVE, so that balancers re-read its status
// through Instancer.Lookup. Heartbeats that change nothing send nothing.
//
// WithPolling turns the watch into the AegisSDK's cached discovery: re-list
// every interval, keep the cached set on failure, Refresh to force a re-list.
package natskv

// Package permissions holds the least NATS permissions each part of kitnats
// needs, as templates for a nats-server configuration (Permissions.Config)
// or for nsc (Permissions.NSC), and the error the library returns when a
// permission is missing (ErrPermission, *PermissionError).
//
// Whoever may write a registry key may announce an instance of a service
// and receive its traffic, so the registry is the most sensitive thing
// kitnats puts on NATS. Three roles, each a NATS user with only these allow
// lists (everything else is refused):
//
//	p, err := permissions.Service("service_registry", natskv.LayoutDotted, "greeter", "greeter-1")
//	p, err := permissions.Client("service_registry", natskv.LayoutDotted, "greeter", "billing")
//	p, err := permissions.Operator("service_registry", natskv.LayoutDotted) // read-only; add services to call them
//	fmt.Print(p.Config())
//
// `kitnats perms service|client|operator` prints the same. Template sets
// the inbox and reply prefixes and the methods of a service; Merge joins
// roles for one connection (a service that calls others is a Service and a
// Client). Subjects below are for bucket B (stream KV_B), service S,
// instance I, inbox prefix P (default _INBOX) and reply prefix R (default
// _INBOX); the layout spells the key K (service-instances.S.I, or
// service-instances__S__I for LayoutAegis).
//
// # A service instance
//
// Publish:
//
//	$KV.B.K                      its own registry key, and no other: Register and every
//	                             heartbeat (a JetStream publish; on buckets with per-key TTL
//	                             it carries Nats-TTL, which KV.Put would drop), SetStatus,
//	                             Deregister (a KV delete is a publish with KV-Operation: DEL)
//	$JS.API.STREAM.INFO.KV_B     natskv.BindBucket reads the bucket's configuration (does it
//	                             take per-key TTLs?); the Registrar calls no other JetStream API
//	R.>                          replies to callers and to $SRV discovery, on their inboxes
//
// Subscribe:
//
//	rpc.S.* rpc.S                the service-wide subjects, in queue group rpc.S only
//	rpc.S.*.I                    its own instance subjects (client-side balancing)
//	$SRV.{PING,INFO,STATS}       NATS micro discovery, as `nats micro ls|info|stats` ask it:
//	$SRV.{...}.S, $SRV.{...}.S.*   of every service, of S, of this instance (its micro ID is
//	                             made at start, hence the wildcard)
//	P.>                          its inbox: JetStream's acks of its writes, the stream info
//
// With Template.Methods the method token is literal (rpc.S.hello rpc.S,
// rpc.S.hello.I). Without, an instance may also take a queue subscription
// to rpc.S.> in group rpc.S — the server matches the subscription's own
// wildcard against the '*' it is allowed — and so receive a copy of the
// requests addressed to the other instances of S. Name the methods to close
// that.
//
// # A client
//
// Publish:
//
//	$JS.API.STREAM.INFO.KV_B          bind the bucket; the scan fallback reads its last sequence
//	$JS.API.CONSUMER.CREATE.KV_B.>    the watch's consumer: ephemeral (a random name), pull, no
//	                                  acks, in memory, filtered by the services watched, updated
//	                                  on the same subject as services are added; the scan
//	                                  fallback's short-lived consumer. The '>' covers nats.go's
//	                                  form with a filter subject in the API subject.
//	$JS.API.CONSUMER.MSG.NEXT.KV_B.*  the watch's pull requests
//	$JS.API.CONSUMER.DELETE.KV_B.*    delete its consumer when the watch is rebuilt or stops
//	$JS.API.DIRECT.GET.KV_B           a service followed once the watch runs is loaded with one
//	                                  batched direct get of its keys' last records (without it:
//	                                  a consumer scan, after a 2 s wait)
//	$JS.FC.KV_B.>                     flow control of nats.go's KV watch, which WithPolling's
//	                                  listing uses: a listing larger than the flow-control
//	                                  window stalls without it
//	rpc.S.>                           for each service it calls: rpc.S.M (any instance) and
//	                                  rpc.S.M.I (one instance)
//
// Subscribe: P.> only — API responses, the watch's records, direct get
// replies and RPC replies all arrive on its inbox. Nothing it may publish
// writes a registry key: no $KV subject, and none of the JetStream APIs
// that change a stream (STREAM.PURGE, STREAM.MSG.DELETE, STREAM.UPDATE...).
// It needs no CONSUMER.INFO, CONSUMER.LIST or CONSUMER.NAMES: without the
// last two it cannot learn the names of other clients' consumers.
//
// # An operator (cmd/kitnats)
//
// A client's registry reads (ls and check scan the bucket with a consumer,
// watch runs Instancers and lists keys), plus $SRV.> (micro discovery
// requests, for `nats micro ls|info|stats`), and rpc.S.> for each service
// it may call (AllServices: rpc.>). Subscribe: P.>. Nothing of another
// bucket: kitnats --bucket OTHER is refused, and says so.
//
// # Why no allow_responses
//
// allow_responses lets a user publish to the reply subject of any message it
// received, whatever its allow lists say — deny lists included. A caller
// chooses the reply subject: a request to S whose reply subject is
// $KV.B.service-instances.billing.x makes S write its reply into the
// registry, and a method that echoes its input writes a record of the
// caller's choosing (the tests show it). The service templates allow
// publishing under R (the callers' inboxes) instead. A reply subject within
// the service's own allow list remains reachable, its own key included:
// natsrpc.Service refuses to reply to subjects that start with '$' (where
// NATS keeps $KV, $JS, $O), and a Registrar on a connection of its own,
// apart from the Service's, closes it in any case.
//
// # Inboxes
//
// Every role subscribes only to its inbox prefix. The default, _INBOX, is
// shared by every connection that keeps nats.go's default: a user allowed
// _INBOX.> may read every reply in the account. Give each user its own
// under _INBOX. (Template.InboxPrefix "_INBOX.billing-7", and connect with
// nats.CustomInboxPrefix("_INBOX.billing-7"); kitnats --inbox-prefix), so
// that services, which may reply to _INBOX.>, still reach it.
//
// # What subject permissions cannot stop
//
//   - A writer of any one key can empty the whole bucket: a JetStream
//     publish with the header Nats-Rollup: all purges every other subject
//     of the stream. Buckets with expiry markers (what CreateBucket makes)
//     must allow roll-ups, and headers are not subject to permissions. The
//     registry heals — every live Registrar rewrites its record at its next
//     heartbeat — but until then a new client sees an empty service.
//   - A client may create push consumers on the bucket's stream and have
//     them deliver the registry's records to any subject of the account
//     (nats-server refuses only delivery back into the stream: a cycle).
//     Records delivered to an RPC subject are requests no method decodes.
//   - A client may create durable consumers; bound them with the account's
//     JetStream limits.
//   - Within its key, a service instance writes what it likes; a record
//     naming another service or instance than its key is skipped by every
//     client (natskv checks the record against its key).
//
// # Errors
//
// A refused operation is reported as a *PermissionError naming the
// permission (Op "publish" or "subscribe", the Subject, the queue group),
// matching ErrPermission and nats.ErrPermissionViolation, wrapped by what
// was being done: BindBucket and a Registrar's writes return it, an
// Instancer whose watch is refused fails its construction with it rather
// than publish an empty set, a natsrpc client call returns it in a
// *natsrpc.CallError, and NewService returns it for a refused subscription.
// The server reports a refusal asynchronously; kitnats watches for it while
// the operation runs and returns as soon as it is reported, without
// changing the connection's error handler.
//
// The tests of this package run the whole chain — register, heartbeat with
// TTL, watch, call, drain, deregister — on an embedded server whose users
// hold exactly these permissions, show that each entry is needed (without
// it the server refuses a step of the chain), and that a service instance
// cannot write another's key, a client cannot write the registry, and a
// missing permission is reported as the typed error. They run with users
// of a server's configuration (user and password) and, as JWT permissions,
// with users of operator mode connecting with creds files.
package permissions

// Package natskv is a go-kit service registry on a NATS JetStream key-value
// bucket. Instances register with a Registrar; clients follow a service
// with an Instancer, a go-kit sd.Instancer kept current by a watch, so the
// call path never queries the registry.
//
// Make or bind the bucket once per connection, then register and discover:
//
//	bucket, err := natskv.CreateBucket(ctx, js, natskv.BucketConfig{}) // or BindBucket
//	liveness := natskv.Options(natskv.WithHeartbeat(5*time.Second))   // both sides agree on these
//	reg, err := natskv.NewRegistrar(bucket, natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-1", Version: "1.0.0"}, logger, liveness)
//	reg.Register()
//	defer reg.Deregister()
//
//	inst, err := natskv.NewInstancer(bucket, "greeter", logger, liveness)
//	defer inst.Stop()
//	endpointer := sd.NewEndpointer(inst, factory, logger) // or lb.NewEndpointSet
//
// The record is the Python AegisSDK's ServiceInstance, so Go and Python
// services can share a bucket: use WithLayout(LayoutAegis) for its key
// spelling. A Registrar rewrites its record every heartbeat with a per-key
// TTL where the bucket takes one; an Instancer drops an instance whose
// record is deleted, expires or goes stale. Bucket.Capabilities says what a
// bucket offers: a bucket CreateBucket makes refuses roll-ups and purges,
// so no writer of one key can remove another's.
//
// Instancers made from one Bucket share one watch (one JetStream consumer,
// each record decoded once, one recovery); NewInstancer returns with the
// service's current set, and Register hands it over before it returns.
// Connect with ReconnectOptions to come back quickly after a server
// restart. WithPolling re-lists instead of watching, as the AegisSDK does.
//
// Options are of three types: Option (WithLayout, WithHeartbeat, WithTTL)
// goes to both constructors, RegistrarOption and InstancerOption to one.
// A value a constructor cannot use is an error matching ErrInvalidOption.
// The server refusing a permission is a *permissions.PermissionError, and
// package permissions has the least sets. Records and keys from the
// network are hostile until read: names are validated (package wire),
// records over 64 KiB are skipped unread, and text fields are any text —
// escape them before they reach a terminal.
package natskv

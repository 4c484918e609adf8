// Package natstest runs embedded NATS servers with JetStream for kitnats'
// tests, benchmarks and examples.
//
// Every server listens on loopback TCP (never an in-process pipe) so that a
// client can follow a restart or move to another cluster node exactly as it
// would in production. A single node gets a random port and a temporary store
// directory; [Server.Restart] brings it back on the same port and store, so
// JetStream data (a KV bucket, say) survives. [StartCluster] runs a 3-node
// JetStream cluster whose nodes can be stopped and started one at a time.
//
// The error-returning constructors ([Run], [RunCluster]) serve programs such
// as examples/quickstart; the testing.TB helpers ([Start], [StartCluster])
// fail the test on error and clean up when it ends.
package natstest

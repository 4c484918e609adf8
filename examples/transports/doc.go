// Package transports shows go-kit HTTP and gRPC services discovered through
// the NATS registry (sd/natskv) and called through the kitnats client chain
// — a balancer, retries, per-instance circuit breakers and OpenTelemetry
// tracing — exactly as go-kit services discovered through Consul or etcd:
//
//	go run ./httpgreeter   # go-kit transport/http
//	go run ./grpcgreeter   # go-kit transport/grpc over grpc-go
//
// Each program starts an embedded NATS server, three instances that
// register their address (natskv.WithAddress), and a client that discovers
// them (natskv.WithAddresses) and calls them under load while one instance
// crashes, another drains, and both come back; it reports every call.
//
// This package holds what the two share: NewClient, the client chain over
// any sd.Instancer and sd.Factory (natskv's, or sd.FixedInstancer, or
// go-kit's Consul and etcd instancers, unchanged), the instances' life
// cycle (StartInstance, Crash, Drain) and the load (Run). It is a module of
// its own so that the library never depends on grpc-go:
//
//	cd examples/transports && go test -race -count=1 ./...
package transports

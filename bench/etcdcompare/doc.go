// Package etcdcompare runs natskv's fleet-scale scenario (10,000 instances
// across 1,000 services, one Instancer per service, all live) over go-kit's
// etcdv3 Instancer on an embedded etcd, beside natskv on an embedded NATS
// server, in the same run:
//
//	cd bench/etcdcompare && go test -bench . -benchmem
//
// It is a module of its own so that the library never depends on etcd; the
// root module's `go test ./...` does not enter it. Its module path lies
// under sd/natskv so that it may import the scenario,
// sd/natskv/internal/scale, which the library's own benchmark runs too.
package etcdcompare

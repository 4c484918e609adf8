package breaker

import "github.com/aegis-sdk/kitnats/internal/reach"

// The failures of HTTP and gRPC clients (go-kit's transport/http and
// transport/grpc, net/http, grpc-go) carry no Retryable method, so the
// rules read them as their transports define them (internal/reach): HTTP
// statuses from an error with go-kit's StatusCode() int, gRPC codes from
// grpc-go's status errors, found without importing grpc-go, and the
// network errors of net/http's client.

// answered reports whether err is an HTTP or gRPC answer the instance gave
// on purpose — an HTTP 4xx but 408 and 429, a gRPC verdict on the request
// (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...) — which proves it
// healthy. Refusals (503, 429, UNAVAILABLE, RESOURCE_EXHAUSTED), timeouts
// (504, DEADLINE_EXCEEDED), cut or refused connections and the instance's
// own faults (5xx, INTERNAL, UNKNOWN, DATA_LOSS) are failures.
func answered(err error) bool { return reach.Of(err) == reach.Answered }

// transportKind sorts HTTP and gRPC failures for the correlation rule, so
// that an outage of the network or of a shared dependency, which fails
// every instance the same way, is not blamed on the instances: nothing took
// the request (a connection refused or not made, 503, 429, UNAVAILABLE,
// RESOURCE_EXHAUSTED) is failing as NATS's no responders does; 504 and
// DEADLINE_EXCEEDED are timeouts; 5xx and INTERNAL are error answers.
func transportKind(err error) (kind, bool) {
	switch reach.Of(err) {
	case reach.Unreached:
		return kindNoResponders, true
	case reach.Timeout:
		return kindTimeout, true
	case reach.Failed:
		return kindRemote, true
	case reach.Cut:
		return kindOther, true
	}
	return 0, false
}

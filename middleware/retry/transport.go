package retry

import "github.com/aegis-sdk/kitnats/internal/reach"

// classifyTransport is DefaultClassifier's rule for the failures of HTTP and
// gRPC clients (go-kit's transport/http and transport/grpc, net/http,
// grpc-go), which carry no Retryable method:
//
//   - not processed, by the transport's own convention — the connection
//     could not be made (refused, no route, dial timeout), HTTP 503, 429 or
//     408, gRPC UNAVAILABLE or RESOURCE_EXHAUSTED: another instance at once;
//   - may have been processed — the connection was cut after the request
//     went out (reset, EOF) or HTTP 502: another instance at once, for
//     idempotent calls only;
//   - timed out — HTTP 504, gRPC DEADLINE_EXCEEDED, a read timeout: after
//     a backoff, for idempotent calls only, as attempt timeouts;
//   - answered — an HTTP 4xx, a gRPC verdict on the request (INVALID_ARGUMENT,
//     NOT_FOUND...), or a fault the instance reported (HTTP 500, gRPC
//     INTERNAL): stop.
//
// HTTP statuses are read from an error with a StatusCode() int method (go-kit's
// StatusCoder, which the client's DecodeResponseFunc returns for a non-2xx
// answer); gRPC codes from grpc-go's status errors, without importing it.
// ok is false for errors it does not recognise.
func classifyTransport(err error, idempotent bool) (a Action, ok bool) {
	switch reach.Of(err) {
	case reach.Unreached:
		return Retry, true
	case reach.Cut:
		if idempotent {
			return Retry, true
		}
		return Stop, true
	case reach.Timeout:
		if idempotent {
			return RetryAfterBackoff, true
		}
		return Stop, true
	case reach.Answered, reach.Failed:
		return Stop, true
	}
	return Stop, false
}

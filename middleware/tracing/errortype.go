package tracing

import (
	"context"
	"errors"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// errorType returns the error.type of err, learnt from the error itself so
// that this package imports none of the packages whose errors it names:
//
//   - an error that stands for several attempts (retry's *Error) names the
//     one that decides its type with Last() error;
//   - an error in the chain with an ErrorType() string method names its type
//     (lb's no_instances, breaker's circuit_open and too_many_requests);
//   - the context's errors are canceled and deadline_exceeded;
//   - the sentinels of nats.go and gobreaker, whose types say nothing, are
//     known by their text (foreignTypes);
//   - anything else is its Go type, as semconv.ErrorType gives it.
func errorType(err error) string {
	if err == nil {
		return ""
	}
	var multi interface{ Last() error }
	if errors.As(err, &multi) && multi.Last() != nil {
		err = multi.Last()
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if s := typed.ErrorType(); s != "" {
			return s
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	if s := byText(err); s != "" {
		return s
	}
	return semconv.ErrorType(err).Value.AsString()
}

// foreignTypes are the error types of sentinels that are plain
// errors.New values of other modules: nats.ErrNoResponders, and
// gobreaker's refusals for breakers used without package breaker. The
// tests hold them to the modules' texts.
var foreignTypes = map[string]string{
	"nats: no responders available for request": "no_responders",
	"circuit breaker is open":                   "circuit_open",
	"too many requests":                         "too_many_requests",
}

// byText finds an error of err's tree whose text is one of foreignTypes.
func byText(err error) string {
	if err == nil {
		return ""
	}
	if s, ok := foreignTypes[err.Error()]; ok {
		return s
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return byText(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if s := byText(e); s != "" {
				return s
			}
		}
	}
	return ""
}

package tracing

var ErrorType = errorType

// Package envelope is the AegisSDK's RPC envelope, in JSON and msgpack:
// the request and response maps the Python AegisSDK frames every call in,
// read under its strict rules and written as it writes them. It is
// transport/natsrpc's codec, internal so that the format is not part of
// kitnats' public surface; cmd/kitnats and tests may use it.
//
// Params and results cross this package as JSON whatever the envelope's
// format: msgpack values are converted to JSON on the way in and JSON to
// msgpack on the way out, directly, without building Go values.
//
// Every byte is hostile. Decoding and conversion run in time linear in the
// input, walk nesting with an explicit stack bounded by rpclimit.MaxDepth
// (never by recursion), and quote input in errors only up to
// rpclimit.MaxQuote bytes.
package envelope

// Package registry is the kitnats registry apart from NATS: the instance
// record and its codec, the key layouts, and the state that turns a feed of
// records into the set an Instancer offers. It is the one place the
// registry's rules live: package sd/natskv feeds it from a watch or a
// listing, and cmd/kitnats reads a bucket through it as a client would
// (DecodeKey, Judge, MsgTTL).
//
// Every record comes from the network and is hostile until decoded: the
// decoder reads it in one pass, in time and memory linear in its size,
// refuses records over MaxRecordSize before reading them, bounds nesting by
// iteration (never by the goroutine stack) and quotes at most a bounded
// prefix of any value in an error. Decoding never needs a lock: a feed
// decodes a record before it takes the lock its readers share.
package registry

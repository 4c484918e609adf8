package natskv

// Settings the tests turn that users have no need to: a shorter retry, a
// faster watch heartbeat, and the record a Registrar holds.
var (
	WithRetryWait      = withRetryWait
	WithWatchHeartbeat = withWatchHeartbeat
)

// RecordOf is the record r writes.
func RecordOf(r *Registrar) Instance { return r.instance() }

// SetDecodeHook makes the watches of b run hook before they decode a
// record (the key's).
func SetDecodeHook(b *Bucket, hook func(key string)) { b.decodeHook = hook }

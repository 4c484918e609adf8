package lb

import "context"

type ctxKey int

const (
	stickyKeyCtx ctxKey = iota
	preferredCtx
)

// WithStickyKey returns a context whose requests the Sticky policy maps to
// the same instance for as long as that instance is healthy: a user ID, a
// session, a shard key.
func WithStickyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, stickyKeyCtx, key)
}

// StickyKey returns the key set by WithStickyKey.
func StickyKey(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(stickyKeyCtx).(string)
	return k, ok
}

// WithPreferredInstance returns a context whose requests the Sticky policy
// sends to the named instance while it is available, whatever the sticky key
// says.
func WithPreferredInstance(ctx context.Context, instance string) context.Context {
	return context.WithValue(ctx, preferredCtx, instance)
}

// PreferredInstance returns the instance set by WithPreferredInstance.
func PreferredInstance(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(preferredCtx).(string)
	return k, ok
}

package natskv

import "github.com/aegis-sdk/kitnats/internal/registry"

// ChangeKind says what happened to an instance's entry.
type ChangeKind int

const (
	ChangeAdded   = ChangeKind(registry.ChangeAdded)   // a record appeared
	ChangeUpdated = ChangeKind(registry.ChangeUpdated) // a record was rewritten (heartbeat, status)
	ChangeDeleted = ChangeKind(registry.ChangeDeleted) // removed cleanly (Deregister)
	ChangePurged  = ChangeKind(registry.ChangePurged)  // purged (by an operator, or a rollup)
	ChangeExpired = ChangeKind(registry.ChangeExpired) // expired on the server: a crash, on a bucket with markers
	ChangeStale   = ChangeKind(registry.ChangeStale)   // heartbeat too old: a crash, noticed by the Instancer's clock
	ChangeSkipped = ChangeKind(registry.ChangeSkipped) // a malformed record for this service, ignored
)

// String is the kind as it appears in the watch-events metric's "kind"
// attribute: added, updated, deleted, purged, expired, stale, skipped.
func (k ChangeKind) String() string { return registry.ChangeKind(k).String() }

// Change is one change to one key, as told to WithChangeFunc: it is how a
// watcher tells a clean deregistration from a crash.
type Change struct {
	Kind     ChangeKind
	Key      string
	Instance Instance // the record; for removals, the last one known
	Revision uint64
	Err      error // why a ChangeSkipped record was refused (ErrInvalidRecord, wire.ErrInvalidName)
}

func changeOf(c *registry.Change) Change {
	return Change{Kind: ChangeKind(c.Kind), Key: c.Key, Instance: instanceOf(&c.Instance), Revision: c.Revision, Err: c.Err}
}

package registry

import (
	"fmt"
	"strings"
)

// ChangeKind says what happened to an instance's entry (natskv.ChangeKind
// is its public twin, with the same values).
type ChangeKind int

const (
	ChangeAdded   ChangeKind = iota // a record appeared
	ChangeUpdated                   // a record was rewritten (heartbeat, status)
	ChangeDeleted                   // removed cleanly (Deregister)
	ChangePurged                    // purged (by an operator, or a rollup)
	ChangeExpired                   // expired on the server: a crash, on a bucket with markers
	ChangeStale                     // heartbeat too old: a crash, noticed by the Instancer's clock
	ChangeSkipped                   // a malformed record for this service, ignored
)

// String is the kind in one word, as metrics and logs name it.
func (k ChangeKind) String() string {
	switch k {
	case ChangeAdded:
		return "added"
	case ChangeUpdated:
		return "updated"
	case ChangeDeleted:
		return "deleted"
	case ChangePurged:
		return "purged"
	case ChangeExpired:
		return "expired"
	case ChangeStale:
		return "stale"
	case ChangeSkipped:
		return "skipped"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// Change is one change to one key.
type Change struct {
	Kind     ChangeKind
	Key      string
	Instance Instance // the record; for removals, the last one known
	Revision uint64
	Err      error // why a ChangeSkipped record was refused
}

func byKey(a, b Change) int { return strings.Compare(a.Key, b.Key) }

package natskv

import (
	"time"

	"github.com/aegis-sdk/kitnats/internal/registry"
)

// Status is an instance's health as its owner declares it. The values are the
// AegisSDK's, so Python and Go peers read each other's records.
type Status string

// The statuses an instance may declare. Balancers prefer ACTIVE to STANDBY;
// UNHEALTHY instances are never offered to clients.
const (
	StatusActive    Status = Status(registry.StatusActive)
	StatusUnhealthy Status = Status(registry.StatusUnhealthy)
	StatusStandby   Status = Status(registry.StatusStandby)
)

// ErrInvalidRecord is matched (errors.Is) by the error for an instance
// record that cannot be written (EncodeInstance, NewRegistrar, SetStatus)
// or read (Change.Err of a skipped record): bad JSON, a missing field, a
// field of the wrong type or value, more than 64 KiB. The message names
// the field.
var ErrInvalidRecord = registry.ErrInvalidRecord

// Instance is one registered instance of a service: the record a Registrar
// writes and an Instancer reads. Its wire form (EncodeInstance) is the
// AegisSDK's ServiceInstance, so a bucket can be shared with Python services.
type Instance struct {
	ServiceName string
	InstanceID  string
	// Version is MAJOR.MINOR.PATCH; AegisSDK readers drop anything else.
	Version string
	Status  Status
	// LastHeartbeat is when the owner last rewrote the record, in UTC.
	LastHeartbeat time.Time
	// StickyActiveGroup names the single-active group the instance belongs
	// to; empty is written as JSON null.
	StickyActiveGroup string
	// Metadata carries everything else (addresses, zones, weights; keys in
	// package wire). Written as a JSON object, never null; non-string values
	// written by other peers are read as their JSON text. Like the version
	// and the group, keys and values are any text a peer wrote: escape them
	// before they reach a terminal.
	Metadata map[string]string
}

// EncodeInstance validates i and returns its wire form: compact camelCase
// JSON with exactly the keys serviceName, instanceId, version, status,
// lastHeartbeat, stickyActiveGroup, metadata, in that order, the time as
// 2006-01-02T15:04:05.999999+00:00, as the AegisSDK writes it. Errors
// match ErrInvalidRecord or wire.ErrInvalidName.
func EncodeInstance(i Instance) ([]byte, error) { return registry.Encode(i.record()) }

// record is i as the registry package holds it.
func (i Instance) record() registry.Instance {
	return registry.Instance{ServiceName: i.ServiceName, InstanceID: i.InstanceID, Version: i.Version,
		Status: registry.Status(i.Status), LastHeartbeat: i.LastHeartbeat, StickyActiveGroup: i.StickyActiveGroup,
		Metadata: i.Metadata}
}

// instanceOf is r as the public type; it shares r's metadata map.
func instanceOf(r *registry.Instance) Instance {
	return Instance{ServiceName: r.ServiceName, InstanceID: r.InstanceID, Version: r.Version,
		Status: Status(r.Status), LastHeartbeat: r.LastHeartbeat, StickyActiveGroup: r.StickyActiveGroup,
		Metadata: r.Metadata}
}

// clone returns a copy that shares no map with i.
func (i Instance) clone() Instance {
	r := i.record().Clone()
	return instanceOf(&r)
}

package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/wire"
)

// Status is an instance's health as its owner declares it: the AegisSDK's
// three values.
type Status string

// The statuses an instance may declare.
const (
	StatusActive    Status = "ACTIVE"
	StatusUnhealthy Status = "UNHEALTHY"
	StatusStandby   Status = "STANDBY"
)

// Valid reports whether s is one of the three statuses peers understand.
func (s Status) Valid() bool {
	switch s {
	case StatusActive, StatusUnhealthy, StatusStandby:
		return true
	}
	return false
}

// The limits of a record, checked on write (Validate) and on read (Decode).
const (
	// MaxRecordSize bounds an encoded record: larger values are refused on
	// write and skipped on read before a byte of them is parsed. 64 KiB is
	// a thousand metadata entries of 64 bytes, two hundred times a typical
	// record (≈ 300 bytes), and what CreateBucket tells the server to
	// enforce (MaxValueSize), so a bucket kitnats made never stores more.
	// It bounds what one write can cost a reader (linear decoding: well
	// under a millisecond) and hold in its memory.
	MaxRecordSize = 64 << 10
	// maxMetadataEntries bounds a record's metadata map.
	maxMetadataEntries = 1024
	// maxTimeLen bounds an ISO-8601 time before it is parsed; the longest
	// valid one (nanoseconds and an offset) is 35 bytes.
	maxTimeLen = 64
	// maxDepth bounds the nesting of a record (the record is level 1,
	// metadata 2): Python's json module refuses records nested around a
	// thousand deep (its recursion limit), so peers agree. Nesting is
	// scanned by iteration, so the bound is a sanity limit, not a guard of
	// the goroutine stack.
	maxDepth = 1000
)

// Errors of the registry model. Every error returned for bad input matches
// ErrInvalidRecord or wire.ErrInvalidName under errors.Is, and most one of
// the others too.
var (
	// ErrInvalidRecord: an instance record that is not valid JSON, lacks a
	// field, has a field of the wrong type or value.
	ErrInvalidRecord = errors.New("natskv: invalid instance record")
	// ErrMissingField: a required record field is absent or null.
	ErrMissingField = errors.New("missing field")
	// ErrInvalidStatus: a status other than ACTIVE, UNHEALTHY or STANDBY.
	ErrInvalidStatus = errors.New("unknown status")
	// ErrInvalidVersion: a version that is not MAJOR.MINOR.PATCH, which
	// AegisSDK readers reject.
	ErrInvalidVersion = errors.New("version is not MAJOR.MINOR.PATCH")
	// ErrRecordTooLarge: an encoded record above MaxRecordSize.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrKeyMismatch: a record whose service or instance differs from the
	// key it is stored under, or a key outside the layout.
	ErrKeyMismatch = errors.New("record does not match its key")
	// ErrUnknownField: a top-level record key that strict decoding (the
	// AegisSDK reader's rules) does not know.
	ErrUnknownField = errors.New("unknown field")
	// ErrInvalidJSON: the record is not well-formed JSON, or nests deeper
	// than a record may.
	ErrInvalidJSON = errors.New("invalid JSON")
)

// RecordError says which field of an instance record is wrong. It matches
// ErrInvalidRecord and its cause under errors.Is.
type RecordError struct {
	Field string // JSON field name; empty for the record as a whole
	Err   error
}

// Error names the field and the cause. A field name taken from the record
// (an unknown key) is quoted and cut.
func (e *RecordError) Error() string {
	switch {
	case e.Field == "":
		return ErrInvalidRecord.Error() + ": " + e.Err.Error()
	case knownField(e.Field):
		return ErrInvalidRecord.Error() + ": " + e.Field + ": " + e.Err.Error()
	}
	return ErrInvalidRecord.Error() + ": " + safetext.QuoteN(e.Field, 64) + ": " + e.Err.Error()
}

// Unwrap exposes both ErrInvalidRecord and the cause.
func (e *RecordError) Unwrap() []error { return []error{ErrInvalidRecord, e.Err} }

func fieldError(field string, err error) error { return &RecordError{Field: field, Err: err} }

// Instance is one registered instance of a service, decoded: the record a
// Registrar writes and an Instancer reads (natskv.Instance is its public
// twin).
type Instance struct {
	ServiceName       string
	InstanceID        string
	Version           string
	Status            Status
	LastHeartbeat     time.Time
	StickyActiveGroup string
	Metadata          map[string]string
}

// Clone returns a copy that shares no map with i.
func (i Instance) Clone() Instance {
	if i.Metadata != nil {
		m := make(map[string]string, len(i.Metadata))
		for k, v := range i.Metadata {
			m[k] = v
		}
		i.Metadata = m
	}
	return i
}

// Healthy reports whether the instance's own status allows traffic.
func (i Instance) Healthy() bool { return i.Status != StatusUnhealthy }

// Validate checks everything a peer needs to accept the record: valid
// names, a semantic version, a known status, a heartbeat time, at most
// maxMetadataEntries metadata entries.
func (i Instance) Validate() error {
	if err := wire.ValidateService(i.ServiceName); err != nil {
		return err
	}
	if err := wire.ValidateInstance(i.InstanceID); err != nil {
		return err
	}
	if !semver(i.Version) {
		return fieldError("version", fmt.Errorf("%w: %s", ErrInvalidVersion, safetext.Quote(i.Version)))
	}
	if !i.Status.Valid() {
		return fieldError("status", fmt.Errorf("%w: %s", ErrInvalidStatus, safetext.Quote(string(i.Status))))
	}
	if i.LastHeartbeat.IsZero() {
		return fieldError("lastHeartbeat", ErrMissingField)
	}
	if len(i.Metadata) > maxMetadataEntries {
		return fieldError("metadata", fmt.Errorf("more than %d entries", maxMetadataEntries))
	}
	return nil
}

// wireInstance fixes the field order and names peers expect.
type wireInstance struct {
	ServiceName       string            `json:"serviceName"`
	InstanceID        string            `json:"instanceId"`
	Version           string            `json:"version"`
	Status            Status            `json:"status"`
	LastHeartbeat     isoTime           `json:"lastHeartbeat"`
	StickyActiveGroup *string           `json:"stickyActiveGroup"`
	Metadata          map[string]string `json:"metadata"`
}

// Marshal writes the record exactly as AegisSDK writes it: compact,
// camelCase, keys in the order serviceName, instanceId, version, status,
// lastHeartbeat, stickyActiveGroup, metadata; the time as
// 2006-01-02T15:04:05.999999+00:00 (microseconds dropped when zero);
// stickyActiveGroup null when empty; metadata an object, never null. It
// does not validate; Encode does.
func (i Instance) Marshal() ([]byte, error) {
	w := wireInstance{
		ServiceName:   i.ServiceName,
		InstanceID:    i.InstanceID,
		Version:       i.Version,
		Status:        i.Status,
		LastHeartbeat: isoTime(i.LastHeartbeat),
		Metadata:      i.Metadata,
	}
	if i.StickyActiveGroup != "" {
		g := i.StickyActiveGroup
		w.StickyActiveGroup = &g
	}
	if w.Metadata == nil {
		w.Metadata = map[string]string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Encode validates i and returns its wire form.
func Encode(i Instance) ([]byte, error) {
	if err := i.Validate(); err != nil {
		return nil, err
	}
	b, err := i.Marshal()
	if err != nil {
		return nil, &RecordError{Err: err}
	}
	if len(b) > MaxRecordSize {
		return nil, &RecordError{Err: fmt.Errorf("%w: %d bytes, over %d", ErrRecordTooLarge, len(b), MaxRecordSize)}
	}
	return b, nil
}

// semver reports whether v is MAJOR.MINOR.PATCH (^[0-9]+\.[0-9]+\.[0-9]+$),
// in one pass.
func semver(v string) bool {
	parts, digits := 0, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && digits > 0 && parts < 2:
			parts++
			digits = 0
		default:
			return false
		}
	}
	return parts == 2 && digits > 0
}

// isoTime formats like Python's datetime.isoformat() on an aware UTC time.
type isoTime time.Time

func (t isoTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + FormatTime(time.Time(t)) + `"`), nil
}

// FormatTime writes t as the AegisSDK does: UTC, microseconds (dropped
// when zero), "+00:00".
func FormatTime(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	s := t.Format("2006-01-02T15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		s += "." + fmt.Sprintf("%06d", us)
	}
	return s + "+00:00"
}

// ParseTime accepts RFC 3339 with "Z" or any offset, any number of
// fractional digits, a naive time (taken as UTC, as Python peers mean it),
// and a space for the "T", as Python may write. It refuses anything longer
// than an ISO-8601 time can be before parsing it.
func ParseTime(s string) (time.Time, error) {
	if len(s) > maxTimeLen {
		return time.Time{}, fmt.Errorf("not an ISO-8601 time: %d bytes", len(s))
	}
	if len(s) > 10 && s[10] == ' ' {
		s = s[:10] + "T" + s[11:]
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, errors.New("not an ISO-8601 time: " + strconv.Quote(s))
}

package natskv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/wire"
)

// Status is an instance's health as its owner declares it. The values are the
// AegisSDK's, so Python and Go peers read each other's records.
type Status string

// The statuses an instance may declare. Balancers prefer ACTIVE to STANDBY;
// UNHEALTHY instances are never offered to clients.
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

// MaxRecordSize bounds an encoded instance record. Larger values are refused on
// write and skipped on read, so one bad writer cannot make every watcher hold
// megabytes per instance.
const MaxRecordSize = 64 << 10

// Errors of the registry model. Every error returned for bad input matches one
// of these under errors.Is.
var (
	// ErrInvalidRecord: an instance record that is not valid JSON, lacks a
	// field, has a field of the wrong type or an unknown status.
	ErrInvalidRecord = errors.New("natskv: invalid instance record")
	// ErrMissingField: a required record field is absent or null.
	ErrMissingField = errors.New("missing field")
	// ErrInvalidStatus: a status other than ACTIVE, UNHEALTHY or STANDBY.
	ErrInvalidStatus = errors.New("unknown status")
	// ErrInvalidVersion: a version that is not MAJOR.MINOR.PATCH, which
	// AegisSDK readers would reject.
	ErrInvalidVersion = errors.New("version is not MAJOR.MINOR.PATCH")
	// ErrRecordTooLarge: an encoded record above MaxRecordSize.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrKeyMismatch: a record whose service or instance differs from the key
	// it is stored under.
	ErrKeyMismatch = errors.New("record does not match its key")
	// ErrUnknownField: a top-level record key that strict decoding (the
	// AegisSDK reader's rules, WithStrictRecords) does not know.
	ErrUnknownField = errors.New("unknown field")
)

// RecordError says which field of an instance record is wrong. It matches
// ErrInvalidRecord and its cause under errors.Is.
type RecordError struct {
	Field string // JSON field name (camelCase), empty for the record as a whole
	Err   error
}

// Error names the field and the cause.
func (e *RecordError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%v: %v", ErrInvalidRecord, e.Err)
	}
	return fmt.Sprintf("%v: %s: %v", ErrInvalidRecord, e.Field, e.Err)
}

// Unwrap exposes both ErrInvalidRecord and the cause.
func (e *RecordError) Unwrap() []error { return []error{ErrInvalidRecord, e.Err} }

// Instance is one registered instance of a service: the record a Registrar
// writes and an Instancer reads. Its JSON form is the AegisSDK's
// ServiceInstance, so a bucket can be shared with Python services.
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
	// Metadata carries everything else (addresses, zones, weights). Written as
	// a JSON object, never null; non-string values written by other peers are
	// read as their JSON text.
	Metadata map[string]string
}

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// maxMetadataEntries bounds a record's metadata map.
const maxMetadataEntries = 1024

// Validate checks everything a peer needs to accept the record: valid names,
// a semantic version, a known status, a heartbeat time.
func (i Instance) Validate() error {
	if err := wire.ValidateService(i.ServiceName); err != nil {
		return err
	}
	if err := wire.ValidateInstance(i.InstanceID); err != nil {
		return err
	}
	if !versionRE.MatchString(i.Version) {
		return &RecordError{Field: "version", Err: fmt.Errorf("%w: %q", ErrInvalidVersion, i.Version)}
	}
	if !i.Status.Valid() {
		return &RecordError{Field: "status", Err: fmt.Errorf("%w: %q", ErrInvalidStatus, i.Status)}
	}
	if i.LastHeartbeat.IsZero() {
		return &RecordError{Field: "lastHeartbeat", Err: ErrMissingField}
	}
	if len(i.Metadata) > maxMetadataEntries {
		return &RecordError{Field: "metadata", Err: fmt.Errorf("more than %d entries", maxMetadataEntries)}
	}
	return nil
}

// Healthy reports whether the instance's own status allows traffic (it is not
// UNHEALTHY). Staleness is the Instancer's judgement, not the record's.
func (i Instance) Healthy() bool { return i.Status != StatusUnhealthy }

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

// MarshalJSON writes the record exactly as AegisSDK writes it: compact,
// camelCase, keys in the order serviceName, instanceId, version, status,
// lastHeartbeat, stickyActiveGroup, metadata; the time as
// 2006-01-02T15:04:05.999999+00:00 (microseconds dropped when zero);
// stickyActiveGroup null when empty; metadata an object, never null.
// It does not validate; EncodeInstance does.
func (i Instance) MarshalJSON() ([]byte, error) {
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

// EncodeInstance validates i and returns its wire form.
func EncodeInstance(i Instance) ([]byte, error) {
	if err := i.Validate(); err != nil {
		return nil, err
	}
	b, err := i.MarshalJSON()
	if err != nil {
		return nil, &RecordError{Err: err}
	}
	if len(b) > MaxRecordSize {
		return nil, &RecordError{Err: fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, len(b))}
	}
	return b, nil
}

// wireIn accepts both spellings of every field. (encoding/json matches
// names case-insensitively, so "serviceName" and "service_name" are distinct
// fields here.)
type wireIn struct {
	ServiceName        json.RawMessage `json:"serviceName"`
	ServiceNameS       json.RawMessage `json:"service_name"`
	InstanceID         json.RawMessage `json:"instanceId"`
	InstanceIDS        json.RawMessage `json:"instance_id"`
	Version            json.RawMessage `json:"version"`
	Status             json.RawMessage `json:"status"`
	LastHeartbeat      json.RawMessage `json:"lastHeartbeat"`
	LastHeartbeatS     json.RawMessage `json:"last_heartbeat"`
	StickyActiveGroup  json.RawMessage `json:"stickyActiveGroup"`
	StickyActiveGroupS json.RawMessage `json:"sticky_active_group"`
	Metadata           json.RawMessage `json:"metadata"`
}

// rawString reads a JSON string, fast when it has no escapes.
func rawString(field string, v json.RawMessage, required bool) (string, error) {
	if len(v) == 0 || string(v) == "null" {
		if required {
			return "", &RecordError{Field: field, Err: ErrMissingField}
		}
		return "", nil
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &RecordError{Field: field, Err: errors.New("not a string")}
	}
	return s, nil
}

func either(a, b json.RawMessage) json.RawMessage {
	if len(a) != 0 {
		return a
	}
	return b
}

// UnmarshalJSON reads a record written by any peer: camelCase or snake_case
// names, `Z` or numeric-offset timestamps. Unknown top-level keys are ignored.
// It checks types and required fields but not names; DecodeInstance does both.
func (i *Instance) UnmarshalJSON(data []byte) error {
	if out, ok := decodeFast(data); ok {
		*i = out
		return nil
	}
	return i.unmarshalSlow(data)
}

// wireFast is wireIn for the common record: every field a plain string,
// metadata of strings. Where it decodes, the result is what unmarshalSlow
// gives; anything else (a missing field, another type, snake_case alone, an
// invalid value) goes to unmarshalSlow, which says what is wrong.
type wireFast struct {
	ServiceName        *string           `json:"serviceName"`
	ServiceNameS       *string           `json:"service_name"`
	InstanceID         *string           `json:"instanceId"`
	InstanceIDS        *string           `json:"instance_id"`
	Version            *string           `json:"version"`
	Status             *string           `json:"status"`
	LastHeartbeat      *string           `json:"lastHeartbeat"`
	LastHeartbeatS     *string           `json:"last_heartbeat"`
	StickyActiveGroup  *string           `json:"stickyActiveGroup"`
	StickyActiveGroupS *string           `json:"sticky_active_group"`
	Metadata           map[string]string `json:"metadata"`
}

// decodeFast decodes a record in one pass, or reports that it cannot vouch
// for the result.
func decodeFast(data []byte) (Instance, bool) {
	var w wireFast
	if json.Unmarshal(data, &w) != nil {
		return Instance{}, false
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Instance{}, false
	}
	// A camelCase field present wins over its snake_case spelling in
	// unmarshalSlow too; a null or absent one is left to it.
	if w.ServiceName == nil || w.InstanceID == nil || w.Version == nil || w.Status == nil || w.LastHeartbeat == nil ||
		(w.StickyActiveGroup == nil && w.StickyActiveGroupS != nil) || len(w.Metadata) > maxMetadataEntries {
		return Instance{}, false
	}
	out := Instance{ServiceName: *w.ServiceName, InstanceID: *w.InstanceID, Version: *w.Version, Status: Status(*w.Status)}
	if w.StickyActiveGroup != nil {
		out.StickyActiveGroup = *w.StickyActiveGroup
	}
	// unmarshalSlow keeps the bytes of an unescaped string as they are,
	// where encoding/json replaces invalid UTF-8: leave those to it.
	for _, s := range []string{out.ServiceName, out.InstanceID, out.Version, string(out.Status), *w.LastHeartbeat, out.StickyActiveGroup} {
		if strings.ContainsRune(s, utf8.RuneError) {
			return Instance{}, false
		}
	}
	if !out.Status.Valid() {
		return Instance{}, false
	}
	hb, err := parseISOTime(*w.LastHeartbeat)
	if err != nil {
		return Instance{}, false
	}
	out.LastHeartbeat = hb
	out.Metadata = w.Metadata
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	return out, true
}

// unmarshalSlow reads any record a peer may write, and says what is wrong
// with the rest.
func (i *Instance) unmarshalSlow(data []byte) error {
	var w wireIn
	if err := json.Unmarshal(data, &w); err != nil {
		return &RecordError{Err: err}
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return &RecordError{Err: errors.New("not a JSON object")}
	}
	var out Instance
	var err error
	if out.ServiceName, err = rawString("serviceName", either(w.ServiceName, w.ServiceNameS), true); err != nil {
		return err
	}
	if out.InstanceID, err = rawString("instanceId", either(w.InstanceID, w.InstanceIDS), true); err != nil {
		return err
	}
	if out.Version, err = rawString("version", w.Version, true); err != nil {
		return err
	}
	status, err := rawString("status", w.Status, true)
	if err != nil {
		return err
	}
	out.Status = Status(status)
	if !out.Status.Valid() {
		return &RecordError{Field: "status", Err: fmt.Errorf("%w: %q", ErrInvalidStatus, status)}
	}
	hb, err := rawString("lastHeartbeat", either(w.LastHeartbeat, w.LastHeartbeatS), true)
	if err != nil {
		return err
	}
	if out.LastHeartbeat, err = parseISOTime(hb); err != nil {
		return &RecordError{Field: "lastHeartbeat", Err: err}
	}
	if out.StickyActiveGroup, err = rawString("stickyActiveGroup", either(w.StickyActiveGroup, w.StickyActiveGroupS), false); err != nil {
		return err
	}
	if len(w.Metadata) != 0 && string(w.Metadata) != "null" {
		md, err := decodeMetadata(w.Metadata)
		if err != nil {
			return &RecordError{Field: "metadata", Err: err}
		}
		out.Metadata = md
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	*i = out
	return nil
}

func decodeMetadata(v json.RawMessage) (map[string]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, errors.New("not an object")
	}
	if len(m) > maxMetadataEntries {
		return nil, fmt.Errorf("more than %d entries", maxMetadataEntries)
	}
	md := make(map[string]string, len(m))
	for k, raw := range m {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			md[k] = s
			continue
		}
		// Numbers, booleans, nested objects: keep their JSON text.
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			return nil, err
		}
		md[k] = c.String()
	}
	return md, nil
}

// DecodeInstance reads and validates a record: what a watcher does with every
// value it receives. Errors match ErrInvalidRecord or wire.ErrInvalidName.
func DecodeInstance(data []byte) (Instance, error) {
	if len(data) > MaxRecordSize {
		return Instance{}, &RecordError{Err: fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, len(data))}
	}
	var i Instance
	if err := i.UnmarshalJSON(data); err != nil {
		return Instance{}, err
	}
	if err := wire.ValidateService(i.ServiceName); err != nil {
		return Instance{}, err
	}
	if err := wire.ValidateInstance(i.InstanceID); err != nil {
		return Instance{}, err
	}
	if i.Version == "" {
		return Instance{}, &RecordError{Field: "version", Err: ErrMissingField}
	}
	return i, nil
}

// strictKeys are the top-level keys the AegisSDK reader accepts: each field
// in camelCase or snake_case.
var strictKeys = map[string]bool{
	"serviceName": true, "service_name": true,
	"instanceId": true, "instance_id": true,
	"version":       true,
	"status":        true,
	"lastHeartbeat": true, "last_heartbeat": true,
	"stickyActiveGroup": true, "sticky_active_group": true,
	"metadata": true,
}

// DecodeInstanceStrict is DecodeInstance refusing what the Python AegisSDK
// reader refuses (see WithStrictRecords): an unknown top-level key (names
// are matched exactly, not case-insensitively), a null or non-object
// metadata, a version that is not MAJOR.MINOR.PATCH, a field of the wrong
// type. Errors match ErrInvalidRecord or wire.ErrInvalidName.
func DecodeInstanceStrict(data []byte) (Instance, error) {
	i, err := DecodeInstance(data)
	if err != nil {
		return Instance{}, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return Instance{}, &RecordError{Err: err}
	}
	for k := range top {
		if !strictKeys[k] {
			return Instance{}, &RecordError{Field: k, Err: ErrUnknownField}
		}
	}
	if md, ok := top["metadata"]; ok {
		if t := bytes.TrimLeft(md, " \t\r\n"); len(t) == 0 || t[0] != '{' {
			return Instance{}, &RecordError{Field: "metadata", Err: errors.New("not an object")}
		}
	}
	if !versionRE.MatchString(i.Version) {
		return Instance{}, &RecordError{Field: "version", Err: fmt.Errorf("%w: %q", ErrInvalidVersion, i.Version)}
	}
	return i, nil
}

// decodeInstance is DecodeInstanceStrict or DecodeInstance.
func decodeInstance(data []byte, strict bool) (Instance, error) {
	if strict {
		return DecodeInstanceStrict(data)
	}
	return DecodeInstance(data)
}

// isoTime formats like Python's datetime.isoformat() on an aware UTC time.
type isoTime time.Time

func (t isoTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + formatISOTime(time.Time(t)) + `"`), nil
}

func formatISOTime(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	s := t.Format("2006-01-02T15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		s += "." + fmt.Sprintf("%06d", us)
	}
	return s + "+00:00"
}

// parseISOTime accepts RFC 3339 with `Z` or any offset, any number of
// fractional digits, and a naive time (taken as UTC, as Python peers mean it).
func parseISOTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t.UTC(), nil
	}
	// Python may write a space instead of 'T'.
	if strings.Contains(s, " ") {
		return parseISOTime(strings.Replace(s, " ", "T", 1))
	}
	return time.Time{}, fmt.Errorf("not an ISO-8601 time: %s", strconv.Quote(s))
}

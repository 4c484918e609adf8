package registry

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/wire"
)

// The record decoder. It reads a record in one pass over its bytes, with
// no reflection and no recursion: every byte is looked at a bounded number
// of times, every allocation is a field's own value (at most the bytes it
// was read from) or a metadata entry, nesting is counted, and an error
// quotes at most a bounded prefix of the input. encoding/json reads the
// same records several times over (the metadata values twice more), which
// costs a nested metadata value twenty times a typical record per byte.
//
// It accepts what encoding/json accepted when it was kitnats' reader:
// camelCase or snake_case field names, matched exactly, or (lenient
// records only) as encoding/json matches them, case-insensitively; for a
// key given twice, the last value; a camelCase field present wins over its
// snake_case spelling; metadata values that are not strings read as their
// compact JSON text (null as ""); invalid UTF-8 in a string read as U+FFFD.

// The top-level fields, in the order errors are reported.
const (
	fServiceName = iota
	fServiceNameS
	fInstanceID
	fInstanceIDS
	fVersion
	fStatus
	fLastHeartbeat
	fLastHeartbeatS
	fGroup
	fGroupS
	fMetadata
	nFields
)

var fieldNames = [nFields]string{"serviceName", "service_name", "instanceId", "instance_id", "version", "status",
	"lastHeartbeat", "last_heartbeat", "stickyActiveGroup", "sticky_active_group", "metadata"}

func knownField(name string) bool {
	for _, n := range fieldNames {
		if n == name {
			return true
		}
	}
	return false
}

// slot is what the record holds under one field name.
type slot struct {
	present bool
	kind    byte   // the first byte of the value: '"', '{', 'n' (null), or another
	str     string // the value of a string
	meta    map[string]string
	metaErr error // why the metadata object was refused
}

// Decode reads a record as kitnats' readers do: lenient (unknown top-level
// keys ignored, a null metadata read as empty, any plain-text version) or
// strict, as the Python AegisSDK reader (exact key names, no unknown key,
// metadata an object, a MAJOR.MINOR.PATCH version). Names are validated
// (wire.ValidateService, wire.ValidateInstance). Errors match
// ErrInvalidRecord or wire.ErrInvalidName.
func Decode(data []byte, strict bool) (Instance, error) {
	if len(data) > MaxRecordSize {
		return Instance{}, &RecordError{Err: fmt.Errorf("%w: %d bytes, over %d", ErrRecordTooLarge, len(data), MaxRecordSize)}
	}
	var slots [nFields]slot
	p := parser{data: data}
	if err := p.record(&slots, strict); err != nil {
		return Instance{}, err
	}
	return assemble(&slots, strict)
}

// assemble checks the fields read and makes the instance.
func assemble(s *[nFields]slot, strict bool) (Instance, error) {
	var out Instance
	var err error
	if out.ServiceName, err = requiredString(s, fServiceName, fServiceNameS); err != nil {
		return Instance{}, err
	}
	if out.InstanceID, err = requiredString(s, fInstanceID, fInstanceIDS); err != nil {
		return Instance{}, err
	}
	if out.Version, err = requiredString(s, fVersion, -1); err != nil {
		return Instance{}, err
	}
	status, err := requiredString(s, fStatus, -1)
	if err != nil {
		return Instance{}, err
	}
	out.Status = Status(status)
	if !out.Status.Valid() {
		return Instance{}, fieldError("status", fmt.Errorf("%w: %s", ErrInvalidStatus, safetext.Quote(status)))
	}
	hb, err := requiredString(s, fLastHeartbeat, fLastHeartbeatS)
	if err != nil {
		return Instance{}, err
	}
	if out.LastHeartbeat, err = ParseTime(hb); err != nil {
		return Instance{}, fieldError("lastHeartbeat", err)
	}
	g := pick(s, fGroup, fGroupS)
	switch {
	case g < 0 || s[g].kind == 'n':
	case s[g].kind != '"':
		return Instance{}, fieldError(fieldNames[fGroup], errors.New("not a string"))
	default:
		out.StickyActiveGroup = s[g].str
	}
	switch m := &s[fMetadata]; {
	case !m.present || m.kind == 'n':
		if strict && m.present {
			return Instance{}, fieldError("metadata", errors.New("not an object"))
		}
		out.Metadata = map[string]string{}
	case m.metaErr != nil:
		return Instance{}, fieldError("metadata", m.metaErr)
	default:
		out.Metadata = m.meta
	}
	if err := wire.ValidateService(out.ServiceName); err != nil {
		return Instance{}, err
	}
	if err := wire.ValidateInstance(out.InstanceID); err != nil {
		return Instance{}, err
	}
	switch {
	case out.Version == "":
		return Instance{}, fieldError("version", ErrMissingField)
	case strict && !semver(out.Version):
		return Instance{}, fieldError("version", fmt.Errorf("%w: %s", ErrInvalidVersion, safetext.Quote(out.Version)))
	}
	return out, nil
}

// pick is the slot a field is read from: the camelCase one when present
// (even null), else the snake_case one; -1 when neither is.
func pick(s *[nFields]slot, camel, snake int) int {
	switch {
	case s[camel].present:
		return camel
	case snake >= 0 && s[snake].present:
		return snake
	}
	return -1
}

func requiredString(s *[nFields]slot, camel, snake int) (string, error) {
	n := pick(s, camel, snake)
	switch {
	case n < 0 || s[n].kind == 'n':
		return "", fieldError(fieldNames[camel], ErrMissingField)
	case s[n].kind != '"':
		return "", fieldError(fieldNames[camel], errors.New("not a string"))
	}
	return s[n].str, nil
}

// parser reads JSON from data[pos:].
type parser struct {
	data  []byte
	pos   int
	stack []byte // the containers open while a value is scanned
	buf   []byte // scratch for compact metadata values
	esc   []byte // scratch for unescaping
}

func (p *parser) syntax(what string) error {
	if p.pos >= len(p.data) {
		return &RecordError{Err: fmt.Errorf("%w: unexpected end of input (%s)", ErrInvalidJSON, what)}
	}
	return &RecordError{Err: fmt.Errorf("%w: unexpected %s at byte %d (%s)", ErrInvalidJSON,
		safetext.Quote(string(p.data[p.pos:p.pos+1])), p.pos, what)}
}

func (p *parser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
		default:
			return
		}
	}
}

// record reads the top-level object into slots.
func (p *parser) record(slots *[nFields]slot, strict bool) error {
	p.ws()
	if p.pos >= len(p.data) || p.data[p.pos] != '{' {
		if p.pos < len(p.data) {
			if err := p.value(nil, 0); err == nil {
				p.ws()
				if p.pos == len(p.data) {
					return &RecordError{Err: errors.New("not a JSON object")}
				}
			}
		}
		return p.syntax("want a JSON object")
	}
	p.pos++
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return p.end()
	}
	for {
		p.ws()
		raw, escaped, err := p.scanString()
		if err != nil {
			return err
		}
		key := raw
		if escaped {
			key = p.unescape(raw)
		}
		f := lookupField(key, strict)
		if f < 0 && strict {
			return fieldError(string(key[:min(len(key), 128)]), ErrUnknownField)
		}
		p.ws()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return p.syntax("want ':'")
		}
		p.pos++
		p.ws()
		if err := p.field(slots, f); err != nil {
			return err
		}
		p.ws()
		if p.pos >= len(p.data) {
			return p.syntax("want ',' or '}'")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return p.end()
		default:
			return p.syntax("want ',' or '}'")
		}
	}
}

// end checks that nothing but white space follows the record.
func (p *parser) end() error {
	p.ws()
	if p.pos != len(p.data) {
		return p.syntax("after the record")
	}
	return nil
}

// lookupField is the field a key names, or -1. Lenient records match keys
// as encoding/json does: exactly, or else case-insensitively.
func lookupField(key []byte, strict bool) int {
	for n, name := range fieldNames {
		if string(key) == name {
			return n
		}
	}
	if strict {
		return -1
	}
	for n, name := range fieldNames {
		if len(key) <= 4*len(name) && bytes.EqualFold(key, []byte(name)) {
			return n
		}
	}
	return -1
}

// field reads the value of field f (-1: an unknown key, skipped).
func (p *parser) field(slots *[nFields]slot, f int) error {
	if p.pos >= len(p.data) {
		return p.syntax("want a value")
	}
	if f < 0 {
		return p.value(nil, 1)
	}
	s := &slots[f]
	*s = slot{present: true, kind: p.data[p.pos], meta: s.meta} // a metadata map given twice is reused
	switch {
	case f == fMetadata && s.kind == '{':
		s.meta, s.metaErr = p.metadata(s.meta)
		if s.metaErr != nil && errors.Is(s.metaErr, ErrInvalidJSON) {
			return s.metaErr // the record is not JSON: nothing more to read
		}
		return nil
	case f == fMetadata && s.kind != 'n':
		s.metaErr = errors.New("not an object")
	case s.kind == '"':
		raw, escaped, err := p.scanString()
		if err != nil {
			return err
		}
		if escaped || !utf8.Valid(raw) {
			s.str = string(p.unescape(raw))
		} else {
			s.str = string(raw)
		}
		return nil
	}
	return p.value(nil, 1)
}

// metadata reads the metadata object into md (a new map if nil). Too many
// entries, which leaves the JSON well-formed, is returned after the object
// is read; malformed JSON at once.
func (p *parser) metadata(md map[string]string) (map[string]string, error) {
	p.pos++ // '{'
	if md == nil {
		md = map[string]string{}
	} else {
		clear(md)
	}
	var refused error
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return md, nil
	}
	for {
		p.ws()
		raw, escaped, err := p.scanString()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.syntax("want ':'")
		}
		p.pos++
		p.ws()
		if p.pos >= len(p.data) {
			return nil, p.syntax("want a value")
		}
		var val string
		switch p.data[p.pos] {
		case '"':
			v, vesc, err := p.scanString()
			if err != nil {
				return nil, err
			}
			if refused == nil {
				if vesc || !utf8.Valid(v) {
					val = string(p.unescape(v))
				} else {
					val = string(v)
				}
			}
		case 'n':
			if err := p.value(nil, 2); err != nil {
				return nil, err
			}
		default:
			// Numbers, booleans, objects, arrays: their compact JSON text.
			out := p.buf[:0]
			if err := p.value(&out, 2); err != nil {
				return nil, err
			}
			p.buf = out
			if refused == nil {
				val = string(out)
			}
		}
		if refused == nil {
			key := raw
			if escaped || !utf8.Valid(raw) {
				key = p.unescape(raw)
			}
			if _, dup := md[string(key)]; !dup && len(md) == maxMetadataEntries {
				refused = fmt.Errorf("more than %d entries", maxMetadataEntries)
			} else {
				md[string(key)] = val
			}
		}
		p.ws()
		if p.pos >= len(p.data) {
			return nil, p.syntax("want ',' or '}'")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			if refused != nil {
				return nil, refused
			}
			return md, nil
		default:
			return nil, p.syntax("want ',' or '}'")
		}
	}
}

// value scans one JSON value at depth (the containers around it), by
// iteration; with out, it appends the value's compact text (as
// json.Compact writes it: strings as they are, no white space).
func (p *parser) value(out *[]byte, depth int) error {
	emit := func(b []byte) {
		if out != nil {
			*out = append(*out, b...)
		}
	}
	p.stack = p.stack[:0]
	for {
		// A value.
		p.ws()
		if p.pos >= len(p.data) {
			return p.syntax("want a value")
		}
		start := p.pos
		switch c := p.data[p.pos]; c {
		case '{', '[':
			if depth+len(p.stack)+1 > maxDepth {
				return &RecordError{Err: fmt.Errorf("%w: nested deeper than %d", ErrInvalidJSON, maxDepth)}
			}
			p.pos++
			emit(p.data[start:p.pos])
			p.ws()
			if p.pos < len(p.data) && (c == '{' && p.data[p.pos] == '}' || c == '[' && p.data[p.pos] == ']') {
				p.pos++
				emit(p.data[p.pos-1 : p.pos])
				break // an empty container is a whole value
			}
			p.stack = append(p.stack, c)
			if c == '{' {
				if err := p.member(emit); err != nil {
					return err
				}
			}
			continue // its first element
		case '"':
			if _, _, err := p.scanString(); err != nil {
				return err
			}
			emit(p.data[start:p.pos])
		case 't':
			if err := p.literal("true"); err != nil {
				return err
			}
			emit(p.data[start:p.pos])
		case 'f':
			if err := p.literal("false"); err != nil {
				return err
			}
			emit(p.data[start:p.pos])
		case 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
			emit(p.data[start:p.pos])
		default:
			if err := p.number(); err != nil {
				return err
			}
			emit(p.data[start:p.pos])
		}
		// After a value: close containers, or go on to the next element.
		for {
			if len(p.stack) == 0 {
				return nil
			}
			p.ws()
			if p.pos >= len(p.data) {
				return p.syntax("want ',' or a closing bracket")
			}
			top := p.stack[len(p.stack)-1]
			c := p.data[p.pos]
			if c == ',' {
				p.pos++
				emit(p.data[p.pos-1 : p.pos])
				if top == '{' {
					if err := p.member(emit); err != nil {
						return err
					}
				}
				break
			}
			if top == '{' && c == '}' || top == '[' && c == ']' {
				p.pos++
				emit(p.data[p.pos-1 : p.pos])
				p.stack = p.stack[:len(p.stack)-1]
				continue
			}
			return p.syntax("want ',' or a closing bracket")
		}
	}
}

// member reads an object member's key and colon.
func (p *parser) member(emit func([]byte)) error {
	p.ws()
	start := p.pos
	if _, _, err := p.scanString(); err != nil {
		return err
	}
	emit(p.data[start:p.pos])
	p.ws()
	if p.pos >= len(p.data) || p.data[p.pos] != ':' {
		return p.syntax("want ':'")
	}
	p.pos++
	emit(p.data[p.pos-1 : p.pos])
	return nil
}

func (p *parser) literal(lit string) error {
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return p.syntax("want " + lit)
	}
	p.pos += len(lit)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *parser) number() error {
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return p.syntax("want a value")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return p.syntax("want a digit")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return p.syntax("want a digit")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	p.pos = i
	return nil
}

// scanString reads a string at pos and returns its raw contents (between
// the quotes) and whether they hold escapes.
func (p *parser) scanString() (raw []byte, escaped bool, err error) {
	d := p.data
	if p.pos >= len(d) || d[p.pos] != '"' {
		return nil, false, p.syntax("want a string")
	}
	start := p.pos + 1
	for i := start; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			p.pos = i + 1
			return d[start:i], escaped, nil
		case c == '\\':
			escaped = true
			i++
			if i >= len(d) {
				p.pos = i
				return nil, false, p.syntax("in a string")
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) || !isHex(d[i+1]) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) {
					p.pos = i
					return nil, false, p.syntax("bad \\u escape")
				}
				i += 4
			default:
				p.pos = i
				return nil, false, p.syntax("bad escape")
			}
		case c < 0x20:
			p.pos = i
			return nil, false, p.syntax("control character in a string")
		}
	}
	p.pos = len(d)
	return nil, false, p.syntax("unterminated string")
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func hexVal(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unescape decodes the raw contents of a string scanString accepted, as
// encoding/json does: escapes decoded, surrogate pairs joined, lone
// surrogates and invalid UTF-8 replaced by U+FFFD. The result is in the
// parser's scratch space, valid until the next call.
func (p *parser) unescape(raw []byte) []byte {
	out := p.esc[:0]
	if n := 3 * len(raw); cap(out) < n {
		out = make([]byte, 0, n) // the most it can grow to: an invalid byte becomes U+FFFD
	}
	for i := 0; i < len(raw); {
		c := raw[i]
		if c == '\\' {
			switch e := raw[i+1]; e {
			case 'u':
				r := hexVal(raw[i+2 : i+6])
				i += 6
				if utf16.IsSurrogate(r) {
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if r2 := utf16.DecodeRune(r, hexVal(raw[i+2:i+6])); r2 != utf8.RuneError {
							r = r2
							i += 6
						} else {
							r = utf8.RuneError
						}
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				out = append(out, unescapeByte(e))
				i += 2
			}
			continue
		}
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, raw[i:i+size]...)
		}
		i += size
	}
	p.esc = out[:0]
	return out
}

func unescapeByte(e byte) byte {
	switch e {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return e // '"', '\\', '/'
}

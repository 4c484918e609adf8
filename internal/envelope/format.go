package envelope

import "strconv"

// Format is an envelope's encoding. AegisSDK uses msgpack by default and
// JSON optionally; a receiver tells them apart by the first byte (Detect),
// and an AegisSDK server replies in its own format whatever the request
// used. msgpack strings are str (never bin), map keys strings, and
// timestamps ISO strings, never the timestamp extension.
type Format uint8

const (
	// JSON is AegisSDK's optional format.
	JSON Format = iota + 1
	// Msgpack is AegisSDK's default format.
	Msgpack
)

func (f Format) String() string {
	switch f {
	case JSON:
		return "json"
	case Msgpack:
		return "msgpack"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Valid reports whether f is JSON or Msgpack.
func (f Format) Valid() bool { return f == JSON || f == Msgpack }

// Detect tells an envelope's format by its first byte, as AegisSDK does:
// 0x80–0x9F or 0xC0–0xDF is msgpack (a fixmap, a fixarray, nil, bool, bin,
// ext, a number, str8–32, array16/32 or map16/32), anything else, the empty
// body included, is JSON.
func Detect(data []byte) Format {
	if len(data) > 0 {
		if c := data[0]; c >= 0x80 && c <= 0x9f || c >= 0xc0 && c <= 0xdf {
			return Msgpack
		}
	}
	return JSON
}

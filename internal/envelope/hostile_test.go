package envelope_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/hostile"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
)

// The bounds every decoder of this package keeps, whatever the input:
// bytes allocated per byte of input, and allocations per byte of input
// (beyond a fixed number).
const (
	maxBytesPerByte  = 32
	maxAllocsPerByte = 1.0 / 8
	fixedAllocs      = 64
	maxErrorText     = rpclimit.MaxQuoted + 160
)

// hostileCase is one input and what each reader must make of it.
type hostileCase struct {
	name string
	data []byte
	// ok: the request (or response) decodes; otherwise it is malformed.
	ok bool
}

// mp builds msgpack by hand: the corpus needs shapes no encoder writes.
type mp []byte

func (b mp) mapLen(n int) mp {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
}

func (b mp) arrayLen(n int) mp {
	if n <= math.MaxUint16 {
		return append(b, 0xdc, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

func (b mp) str(s string) mp {
	switch {
	case len(s) < 32:
		b = append(b, 0xa0|byte(len(s)))
	case len(s) <= math.MaxUint16:
		b = append(b, 0xda, byte(len(s)>>8), byte(len(s)))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(len(s)))
	}
	return append(b, s...)
}

func (b mp) raw(v []byte) mp { return append(b, v...) }

// request is a msgpack request with method "m" and the members kv (keys and
// raw values) after it.
func request(kv ...any) []byte {
	b := mp(nil).mapLen(1 + len(kv)/2).str("method").str("m")
	for i := 0; i < len(kv); i += 2 {
		b = b.str(kv[i].(string))
		switch v := kv[i+1].(type) {
		case string:
			b = b.str(v)
		case []byte:
			b = b.raw(v)
		case mp:
			b = b.raw(v)
		}
	}
	return b
}

// response is a msgpack success with result v (raw msgpack).
func response(result []byte) []byte {
	return mp(nil).mapLen(3).str("success").raw([]byte{0xc3}).str("result").raw(result).str("error").raw([]byte{0xc0})
}

const size = hostile.Size

func hostileRequests() []hostileCase {
	long := hostile.Long(size)
	var cases []hostileCase
	// Deep nesting: past the limit, and at it.
	cases = append(cases,
		hostileCase{"msgpack params nested past the limit", request("params", hostile.DeepMsgpack(size/3)), false},
		hostileCase{"msgpack params nested at the limit", request("params", hostile.DeepMsgpack(rpclimit.MaxDepth)), true},
		hostileCase{"msgpack params nested one past the limit", request("params", hostile.DeepMsgpack(rpclimit.MaxDepth+1)), false},
		hostileCase{"msgpack arrays nested past the limit", request("params", append(mp(nil).mapLen(1).str("a"), hostile.DeepMsgpackArray(size)...)), false},
		hostileCase{"JSON params nested past the limit", []byte(`{"method":"m","params":` + string(hostile.DeepJSONObject(size/5)) + `}`), false},
		hostileCase{"JSON arrays nested past the limit", []byte(`{"method":"m","params":{"a":` + string(hostile.DeepJSON(size/2)) + `}}`), false},
		hostileCase{"JSON params nested within the limit", []byte(`{"method":"m","params":` + string(hostile.DeepJSONObject(rpclimit.MaxDepth-2)) + `}`), true},
		hostileCase{"msgpack nesting bomb in an unknown key", request("x", hostile.DeepMsgpack(size/3)), false},
	)
	// Long strings in every field, with control bytes and invalid UTF-8.
	for _, k := range []string{"message_id", "trace_id", "correlation_id", "timestamp", "source", "target", "method"} {
		cases = append(cases, hostileCase{"msgpack long " + k, request(k, long), true})
		js, _ := aegistest.Marshal(aegistest.JSON, map[string]any{"method": "m", k: long})
		cases = append(cases, hostileCase{"JSON long " + k, js, true})
	}
	js, _ := aegistest.Marshal(aegistest.JSON, map[string]any{"method": "m", "params": map[string]any{long: long}})
	cases = append(cases,
		hostileCase{"msgpack long key", request(long, "x"), false},
		hostileCase{"JSON long key", []byte(`{"method":"m",` + string(mustJSON(long)) + `:1}`), false},
		hostileCase{"msgpack long params", request("params", mp(nil).mapLen(1).str(long).str(long)), true},
		hostileCase{"JSON long params", js, true},
		hostileCase{"msgpack invalid UTF-8", request("source", hostile.InvalidUTF8), true},
		hostileCase{"JSON invalid UTF-8", []byte(`{"method":"m","source":"` + hostile.InvalidUTF8 + `"}`), true},
		hostileCase{"msgpack control bytes", request("source", hostile.Controls), true},
		hostileCase{"msgpack bin params", request("params", append(mp(nil).mapLen(1).str("b"), binary.BigEndian.AppendUint32([]byte{0xc6}, size)...)), false},
	)
	// Huge and negative numbers.
	for _, n := range hostile.Numbers {
		// A timeout is a JSON number, positive and finite as a float64.
		t, err := strconv.ParseFloat(n, 64)
		ok := json.Valid([]byte(n)) && err == nil && t > 0 && !math.IsInf(t, 0)
		cases = append(cases, hostileCase{"JSON timeout " + rpclimit.Quote([]byte(n)), []byte(`{"method":"m","timeout":` + n + `}`), ok})
	}
	for name, v := range map[string][]byte{
		"max uint64": {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"min int64":  {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0},
		"-1":         {0xff},
		"NaN":        binary.BigEndian.AppendUint64([]byte{0xcb}, math.Float64bits(math.NaN())),
		"+Inf":       binary.BigEndian.AppendUint64([]byte{0xcb}, math.Float64bits(math.Inf(1))),
		"tiny":       binary.BigEndian.AppendUint64([]byte{0xcb}, math.Float64bits(5e-324)),
	} {
		cases = append(cases, hostileCase{"msgpack timeout " + name, request("timeout", v), name == "max uint64" || name == "tiny"})
	}
	cases = append(cases,
		hostileCase{"msgpack params of huge numbers", request("params", func() []byte {
			b := mp(nil).mapLen(1).str("n").arrayLen(size / 9)
			for range size / 9 {
				b = append(b, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			}
			return b
		}()), true},
		hostileCase{"JSON params of huge numbers", []byte(`{"method":"m","params":{"n":[` + strings.Repeat("1e308,", size/6) + `1]}}`), true},
	)
	// Duplicate keys, many of them.
	dup := mp(nil).mapLen(size / 10)
	for range size / 10 {
		dup = dup.str("method").str("m")
	}
	dupParams := mp(nil).mapLen(size / 8)
	for range size / 8 {
		dupParams = dupParams.str("params").raw([]byte{0x81, 0xa1, 'a', 0x01})
	}
	cases = append(cases,
		hostileCase{"msgpack duplicate keys", dup, true},
		hostileCase{"msgpack duplicate params", dupParams[:len(dupParams)-3], false}, // no method: malformed, after reading them all
		hostileCase{"JSON duplicate keys", []byte(`{` + strings.Repeat(`"method":"m",`, size/13) + `"method":"m"}`), true},
		hostileCase{"JSON duplicate escaped keys", []byte(`{` + strings.Repeat(`"\u006dethod":"m",`, size/18) + `"method":"m"}`), true},
	)
	// Lengths that lie.
	cases = append(cases,
		hostileCase{"msgpack map32 of 4G entries", binary.BigEndian.AppendUint32([]byte{0xdf}, math.MaxUint32), false},
		hostileCase{"msgpack str32 of 4 GB", request("source", binary.BigEndian.AppendUint32([]byte{0xdb}, math.MaxUint32)), false},
		hostileCase{"msgpack array32 of 4G in params", request("params", binary.BigEndian.AppendUint32(mp(nil).mapLen(1).str("a").raw([]byte{0xdd}), math.MaxUint32)), false},
	)
	return cases
}

func mustJSON(s string) []byte {
	b, _ := aegistest.Marshal(aegistest.JSON, s)
	return b
}

func hostileResponses() []hostileCase {
	long := hostile.Long(size)
	nils := mp(nil).arrayLen(size)
	nils = append(nils, bytes.Repeat([]byte{0xc0}, size)...)
	ctl := mp(nil).str(strings.Repeat("\x01", size))
	return []hostileCase{
		{"msgpack result nested past the limit", response(hostile.DeepMsgpack(size / 3)), false},
		{"msgpack result of arrays nested past the limit", response(hostile.DeepMsgpackArray(size)), false},
		{"msgpack result nested at the limit", response(hostile.DeepMsgpackArray(rpclimit.MaxDepth)), true},
		{"JSON result nested past the limit", []byte(`{"success":true,"result":` + string(hostile.DeepJSON(size/2)) + `,"error":null}`), false},
		{"msgpack result of a million nils", response(nils), true},
		{"msgpack result of control bytes", response(ctl), true},
		{"msgpack result with a long key", response(mp(nil).mapLen(1).str(long).raw([]byte{0xc0})), true},
		{"msgpack long error", mp(nil).mapLen(2).str("success").raw([]byte{0xc2}).str("error").str(long), true},
		{"JSON long error", []byte(`{"success":false,"error":` + string(mustJSON(long)) + `}`), true},
		{"msgpack non-str key in the result", response(mp(nil).mapLen(1).raw([]byte{0x01, 0x02})), false},
		{"msgpack extension in the result", response([]byte{0xd4, 0x01, 0x02}), false},
	}
}

// check asserts the outcome and the cost of one reader on one input.
func check(t *testing.T, what string, c hostileCase, read func() error) {
	t.Helper()
	err := read()
	switch {
	case c.ok && err != nil:
		t.Errorf("%s: %s: %v", what, c.name, err)
	case !c.ok && !errors.Is(err, envelope.ErrMalformed):
		t.Errorf("%s: %s: want ErrMalformed, have %v", what, c.name, err)
	case err != nil && len(err.Error()) > maxErrorText:
		t.Errorf("%s: %s: error text of %d bytes", what, c.name, len(err.Error()))
	}
	hostile.Linear(t, what+": "+c.name, c.data, maxBytesPerByte, fixedAllocs+maxAllocsPerByte*float64(len(c.data)), func() { _ = read() })
}

func TestHostileRequests(t *testing.T) {
	before := hostile.StackInUse()
	for _, c := range hostileRequests() {
		check(t, "DecodeRequest", c, func() error {
			_, _, err := envelope.DecodeRequest(c.data)
			return err
		})
		// The Service's sniffer takes every one of them for an envelope or
		// not, at the same cost.
		hostile.Linear(t, "SniffRequest: "+c.name, c.data, maxBytesPerByte, fixedAllocs+maxAllocsPerByte*float64(len(c.data)), func() {
			_, _, _, _ = envelope.SniffRequest(c.data)
		})
		// What decodes writes back in both formats, at the same cost.
		if r, _, err := envelope.DecodeRequest(c.data); err == nil {
			for _, f := range []envelope.Format{envelope.JSON, envelope.Msgpack} {
				hostile.Linear(t, "Encode "+f.String()+": "+c.name, c.data, 2*maxBytesPerByte, fixedAllocs, func() { _, _ = r.Encode(f) })
			}
		}
	}
	if after := hostile.StackInUse(); after > before+1<<20 {
		t.Errorf("goroutine stacks grew from %d to %d bytes", before, after)
	}
}

func TestHostileResponses(t *testing.T) {
	for _, c := range hostileResponses() {
		check(t, "DecodeResponse", c, func() error {
			_, _, err := envelope.DecodeResponse(c.data)
			return err
		})
		if r, _, err := envelope.DecodeResponse(c.data); err == nil {
			for _, f := range []envelope.Format{envelope.JSON, envelope.Msgpack} {
				hostile.Linear(t, "Encode "+f.String()+": "+c.name, c.data, 2*maxBytesPerByte, fixedAllocs, func() { _, _ = r.Encode(f) })
			}
		}
	}
}

// The JSON → msgpack conversion of a deep result, the quadratic case of
// issue 16 (900 KB nested 9,990 deep took 4.5 s): linear now, at most as
// deep as encoding/json reads, and nothing deeper is written.
func TestDeepResultToMsgpack(t *testing.T) {
	deep := string(hostile.DeepJSON(rpclimit.MaxDepth - 10))
	result := []byte(`[` + strings.Repeat(`"`+strings.Repeat("x", 80)+`",`, (size-len(deep))/83) + deep + `]`)
	r := envelope.Response{Success: true, Result: result}
	b, err := r.Encode(envelope.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := envelope.DecodeResponse(b)
	if err != nil || !bytes.Equal(back.Result, result) {
		t.Fatalf("round trip: %v", err)
	}
	hostile.Linear(t, "Encode msgpack", result, 4, fixedAllocs, func() { _, _ = r.Encode(envelope.Msgpack) })
	r.Result = hostile.DeepJSON(rpclimit.MaxDepth + 1)
	if _, err := r.Encode(envelope.Msgpack); err == nil {
		t.Error("a result deeper than encoding/json reads was written")
	}
}

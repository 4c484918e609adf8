// Package aegistest stands in for the Python AegisSDK's RPC in kitnats'
// tests: a server that answers as AegisSDK's does and a client that calls
// and reads replies as strictly as AegisSDK's reader. It is written from
// AegisSDK's wire format, not from transport/natsrpc, so that the tests
// which pit one against the other are evidence.
//
// The format, as AegisSDK's code writes and reads it:
//
//   - Core NATS request-reply on rpc.{service}.{method}, servers in queue
//     group rpc.{service}; no instance subject, no headers.
//   - Envelopes in msgpack (the default) or JSON. A receiver tells them
//     apart by the first byte: 0x80–0x9F or 0xC0–0xDF is msgpack, anything
//     else JSON. A server replies in its own format whatever the request
//     used. msgpack strings are str, map keys strings, no extensions
//     (timestamps are ISO strings).
//   - Request keys: message_id (UUID), trace_id (UUID), correlation_id
//     (string|null), timestamp (ISO-8601 UTC), source (string|null), target
//     (string|null), method (string, required), params (map, never null),
//     timeout (number > 0, seconds, default 5.0). No other key; no null
//     where a string is required.
//   - Response keys: the first six (new message_id and trace_id,
//     correlation_id = the request's message_id, source and target null),
//     then success (bool), result (any), error (null when success, a
//     string otherwise).
//   - A server replies success=false, error=str(exc) on any exception,
//     an undecodable request included, and ignores timeout.
//   - A standby answers NOT_ACTIVE in one of two shapes: success=true with
//     result {"success": false, "error": "NOT_ACTIVE", "message": "…",
//     "result": null}, or success=false with an error containing
//     NOT_ACTIVE.
package aegistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Format is an envelope encoding.
type Format int

const (
	Msgpack Format = iota // AegisSDK's default
	JSON
)

func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "msgpack"
}

// Detect tells the format by the first byte, as AegisSDK does.
func Detect(data []byte) Format {
	if len(data) > 0 && (data[0] >= 0x80 && data[0] <= 0x9f || data[0] >= 0xc0 && data[0] <= 0xdf) {
		return Msgpack
	}
	return JSON
}

// Marshal encodes v (maps, slices, strings, numbers, bools, nil) in f.
// msgpack strings are str; maps are written with their keys sorted.
func Marshal(f Format, v any) ([]byte, error) {
	if f == JSON {
		return json.Marshal(v)
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes data in the format its first byte tells, as Python's
// json.loads or msgpack.unpackb(raw=False, strict_map_key=True) would:
// JSON numbers are json.Number; msgpack str is string, bin is []byte, an
// extension (the timestamp one included) is whatever the library makes of
// it, so that checks on types catch it; a map key that is not str is an
// error.
func Unmarshal(data []byte) (any, Format, error) {
	f := Detect(data)
	if f == JSON {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, f, err
		}
		if d.More() {
			return nil, f, errors.New("data after the JSON value")
		}
		return v, f, nil
	}
	rd := bytes.NewReader(data)
	d := msgpack.NewDecoder(rd)
	d.SetMapDecoder(func(d *msgpack.Decoder) (any, error) {
		n, err := d.DecodeMapLen()
		if err != nil || n < 0 {
			return nil, err
		}
		m := make(map[string]any, n)
		for range n {
			c, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsString(c) {
				return nil, fmt.Errorf("map key of code 0x%x is not str", c)
			}
			k, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			if m[k], err = d.DecodeInterface(); err != nil {
				return nil, err
			}
		}
		return m, nil
	})
	v, err := d.DecodeInterface()
	if err != nil {
		return nil, f, err
	}
	if rd.Len() != 0 {
		return nil, f, errors.New("data after the msgpack value")
	}
	return v, f, nil
}

// NewUUID is a version 4 UUID, as Python's str(uuid.uuid4()).
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Now is datetime.now(timezone.utc).isoformat().
func Now() string {
	t := time.Now().UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05+00:00")
	}
	return t.Format("2006-01-02T15:04:05.000000+00:00")
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	isoRE  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(\+00:00|Z)$`)
)

var requestKeys = []string{"message_id", "trace_id", "correlation_id", "timestamp", "source", "target", "method", "params", "timeout"}
var responseKeys = []string{"message_id", "trace_id", "correlation_id", "timestamp", "source", "target", "success", "result", "error"}

// CheckRequest applies AegisSDK's request rules to a decoded envelope, and
// complete, the rules of a writer that writes every key (as kitnats does):
// every key present, IDs UUIDs, the timestamp ISO-8601 UTC with +00:00.
func CheckRequest(v any, complete bool) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("request is %T, not a map", v)
	}
	if err := checkKeys(m, requestKeys, complete); err != nil {
		return nil, err
	}
	for _, k := range []string{"message_id", "trace_id", "timestamp", "method"} {
		if err := checkString(m, k, false, complete || k == "method"); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"correlation_id", "source", "target"} {
		if err := checkString(m, k, true, complete); err != nil {
			return nil, err
		}
	}
	if p, ok := m["params"]; ok || complete {
		if _, isMap := p.(map[string]any); !isMap {
			return nil, fmt.Errorf("params is %T, not a map", p)
		}
		if err := checkValue(p); err != nil {
			return nil, fmt.Errorf("params: %w", err)
		}
	}
	if t, ok := m["timeout"]; ok || complete {
		f, isNum := number(t)
		if !isNum || !(f > 0) {
			return nil, fmt.Errorf("timeout %v (%T) is not a number > 0", t, t)
		}
	}
	if complete {
		if err := checkIDs(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// CheckResponse applies AegisSDK's response rules to a decoded envelope,
// and complete, those of a writer that writes every key: every key present,
// IDs UUIDs, the timestamp ISO-8601 UTC with +00:00, source and target null.
func CheckResponse(v any, complete bool) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("response is %T, not a map", v)
	}
	if err := checkKeys(m, responseKeys, complete); err != nil {
		return nil, err
	}
	for _, k := range []string{"message_id", "trace_id", "timestamp"} {
		if err := checkString(m, k, false, complete); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"correlation_id", "source", "target"} {
		if err := checkString(m, k, true, complete); err != nil {
			return nil, err
		}
	}
	success, ok := m["success"].(bool)
	if !ok {
		return nil, fmt.Errorf("success is %T, not a bool", m["success"])
	}
	e, hasErr := m["error"]
	switch {
	case success && hasErr && e != nil:
		return nil, fmt.Errorf("error %v in a success", e)
	case !success:
		if _, isStr := e.(string); !isStr {
			return nil, fmt.Errorf("error is %T in a failure, not a string", e)
		}
	}
	if err := checkValue(m["result"]); err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	if complete {
		if err := checkIDs(m); err != nil {
			return nil, err
		}
		if m["source"] != nil || m["target"] != nil {
			return nil, errors.New("source or target not null in a response")
		}
	}
	return m, nil
}

func checkKeys(m map[string]any, allowed []string, complete bool) error {
	for k := range m {
		if !contains(allowed, k) {
			return fmt.Errorf("unknown key %q", k)
		}
	}
	if complete {
		for _, k := range allowed {
			if _, ok := m[k]; !ok {
				return fmt.Errorf("key %q missing", k)
			}
		}
	}
	return nil
}

func checkString(m map[string]any, k string, nullable, required bool) error {
	v, ok := m[k]
	if !ok {
		if required {
			return fmt.Errorf("%s missing", k)
		}
		return nil
	}
	if v == nil && nullable {
		return nil
	}
	if _, isStr := v.(string); !isStr {
		return fmt.Errorf("%s is %T, not a string", k, v)
	}
	return nil
}

func checkIDs(m map[string]any) error {
	for _, k := range []string{"message_id", "trace_id"} {
		if s, _ := m[k].(string); !uuidRE.MatchString(s) {
			return fmt.Errorf("%s %q is not a UUID", k, s)
		}
	}
	if s, _ := m["timestamp"].(string); !isoRE.MatchString(s) || !bytes.HasSuffix([]byte(s), []byte("+00:00")) {
		return fmt.Errorf("timestamp %q is not ISO-8601 UTC with +00:00", s)
	}
	return nil
}

// checkValue refuses what JSON cannot carry and Python would not get from a
// kitnats writer: bin, extensions (time.Time among them), non-string keys.
func checkValue(v any) error {
	switch v := v.(type) {
	case nil, bool, string, json.Number, float64, float32,
		int8, int16, int32, int64, uint8, uint16, uint32, uint64:
		return nil
	case []byte:
		return errors.New("bin where str is expected")
	case []any:
		for _, e := range v {
			if err := checkValue(e); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for _, e := range v {
			if err := checkValue(e); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("value of type %T", v)
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	case float64:
		return v, true
	case float32:
		return float64(v), true
	case int8:
		return float64(v), true
	case int16:
		return float64(v), true
	case int32:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint8:
		return float64(v), true
	case uint16:
		return float64(v), true
	case uint32:
		return float64(v), true
	case uint64:
		return float64(v), true
	}
	return 0, false
}

func contains(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

// ---- server ----

// Handler is a method: it gets the params and returns a result, or fails.
type Handler func(params map[string]any) (any, error)

// Mode is what a server answers.
type Mode int32

const (
	// Active serves.
	Active Mode = iota
	// NotActiveResult answers success=true, result {"success": false,
	// "error": "NOT_ACTIVE", …}: AegisSDK's first standby shape.
	NotActiveResult
	// NotActiveError answers success=false, error "NOT_ACTIVE: …": the
	// second.
	NotActiveError
)

// Server is an AegisSDK-style service instance.
type Server struct {
	nc       *nats.Conn
	instance string
	format   Format
	methods  map[string]Handler
	mode     atomic.Int32
	subs     []*nats.Subscription

	mu         sync.Mutex
	requests   []map[string]any // every valid request, as decoded
	violations []string         // every request AegisSDK's reader would refuse
	served     atomic.Int64     // requests a handler ran for
}

// NewServer subscribes every method on rpc.{service}.{method} in queue group
// rpc.{service}, and replies in format f.
func NewServer(nc *nats.Conn, service, instance string, f Format, methods map[string]Handler) (*Server, error) {
	s := &Server{nc: nc, instance: instance, format: f, methods: methods}
	for m := range methods {
		sub, err := nc.QueueSubscribe("rpc."+service+"."+m, "rpc."+service, s.handle)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.subs = append(s.subs, sub)
	}
	return s, nc.Flush()
}

// SetMode switches what the server answers.
func (s *Server) SetMode(m Mode) { s.mode.Store(int32(m)) }

// Served is how many requests a handler ran for.
func (s *Server) Served() int64 { return s.served.Load() }

// Requests returns the valid requests received, as decoded.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

// Violations returns why requests were refused by the strict rules (a
// kitnats client must cause none).
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Close unsubscribes.
func (s *Server) Close() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
}

func (s *Server) handle(msg *nats.Msg) {
	reply := map[string]any{
		"message_id": NewUUID(), "trace_id": NewUUID(), "correlation_id": nil,
		"timestamp": Now(), "source": nil, "target": nil,
		"success": false, "result": nil, "error": nil,
	}
	result, err := s.serve(msg, reply)
	if err != nil {
		reply["error"] = err.Error()
	} else {
		reply["success"], reply["result"] = true, result
	}
	data, merr := Marshal(s.format, reply)
	if merr != nil {
		data, _ = Marshal(s.format, map[string]any{
			"message_id": NewUUID(), "trace_id": NewUUID(), "correlation_id": nil,
			"timestamp": Now(), "source": nil, "target": nil,
			"success": false, "result": nil, "error": merr.Error(),
		})
	}
	_ = msg.Respond(data)
}

func (s *Server) serve(msg *nats.Msg, reply map[string]any) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	v, _, err := Unmarshal(msg.Data)
	if err == nil {
		var req map[string]any
		if req, err = CheckRequest(v, true); err == nil {
			reply["correlation_id"] = req["message_id"]
			s.mu.Lock()
			s.requests = append(s.requests, req)
			s.mu.Unlock()
			switch Mode(s.mode.Load()) {
			case NotActiveResult:
				return map[string]any{"success": false, "error": "NOT_ACTIVE",
					"message": "Instance " + s.instance + " is not active", "result": nil}, nil
			case NotActiveError:
				return nil, errors.New("NOT_ACTIVE: instance " + s.instance + " is standby")
			}
			h, ok := s.methods[req["method"].(string)]
			if !ok {
				return nil, fmt.Errorf("method %v not found", req["method"])
			}
			s.served.Add(1)
			return h(req["params"].(map[string]any))
		}
	}
	s.mu.Lock()
	s.violations = append(s.violations, err.Error())
	s.mu.Unlock()
	return nil, err
}

// ---- client ----

// Client is an AegisSDK-style caller.
type Client struct {
	NC     *nats.Conn
	Format Format
	Source string // caller instance ID; "" for null
}

// Reply is a reply that passed the strict rules.
type Reply struct {
	Format   Format
	Envelope map[string]any
	Success  bool
	Result   any
	Error    string
}

// Call sends a request envelope to rpc.{service}.{method}, without headers,
// and checks the reply.
func (c *Client) Call(ctx context.Context, service, method string, params map[string]any, timeout float64) (*Reply, map[string]any, error) {
	req := map[string]any{
		"message_id": NewUUID(), "trace_id": NewUUID(), "correlation_id": nil,
		"timestamp": Now(), "source": nil, "target": service, "method": method,
		"params": params, "timeout": timeout,
	}
	if c.Source != "" {
		req["source"] = c.Source
	}
	data, err := Marshal(c.Format, req)
	if err != nil {
		return nil, req, err
	}
	r, err := c.Send(ctx, "rpc."+service+"."+method, data)
	if err == nil && r.Envelope["correlation_id"] != req["message_id"] {
		err = fmt.Errorf("correlation_id %v, want the request's message_id %v", r.Envelope["correlation_id"], req["message_id"])
	}
	return r, req, err
}

// Send sends data as a request to subject, without headers, and decodes
// and checks the reply under the strict rules, as a writer that writes
// every key.
func (c *Client) Send(ctx context.Context, subject string, data []byte) (*Reply, error) {
	msg, err := c.NC.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, err
	}
	return DecodeReply(msg.Data)
}

// DecodeReply decodes and checks a reply.
func DecodeReply(data []byte) (*Reply, error) {
	v, f, err := Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("undecodable %s reply %q: %w", Detect(data), data, err)
	}
	m, err := CheckResponse(v, true)
	if err != nil {
		return nil, fmt.Errorf("%s reply %q: %w", f, data, err)
	}
	r := &Reply{Format: f, Envelope: m, Success: m["success"].(bool), Result: m["result"]}
	if !r.Success {
		r.Error = m["error"].(string)
	}
	return r, nil
}

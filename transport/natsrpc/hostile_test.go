package natsrpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/hostile"
	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/internal/rpclimit"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// msgpackRequest is an AegisSDK request envelope in msgpack, method "say",
// whose params are the raw msgpack value params.
func msgpackRequest(params []byte) []byte {
	b := []byte{0x83, 0xaa}
	b = append(b, "message_id"...)
	b = append(b, 0xa1, 'x', 0xa6)
	b = append(b, "method"...)
	b = append(b, 0xa3)
	b = append(b, "say"...)
	b = append(b, 0xa6)
	b = append(b, "params"...)
	return append(b, params...)
}

// The nesting bomb of issue 16: msgpack maps nested millions deep, at the
// server's max payload (8 MB), in a request the Service sniffs on its
// reader before admission. The Service answers each with a success:false
// envelope, stays up, and no goroutine stack grows with the nesting.
func TestNestingBombAtMaxPayload(t *testing.T) {
	const maxPayload = 8 << 20
	srv := natstest.StartConfig(t, fmt.Sprintf("max_payload: %d\n", maxPayload))
	snc := natstest.Connect(t, srv.URL())
	cnc := natstest.Connect(t, srv.URL())
	e := &env{srv: srv, snc: snc, cnc: cnc}
	e.echoService(t, "a", nil)

	bombs := map[string][]byte{
		"msgpack map": msgpackRequest(hostile.DeepMsgpack((maxPayload - 1024) / 3)),
		"msgpack array": msgpackRequest(append([]byte{0x81, 0xa1, 'a'},
			hostile.DeepMsgpackArray(maxPayload-1024)...)),
		"JSON": []byte(`{"message_id":"x","method":"say","params":` +
			string(hostile.DeepJSONObject((maxPayload-1024)/6)) + `}`),
		"plain msgpack": hostile.DeepMsgpack((maxPayload - 1024) / 3),
	}
	// Without collections, no stack shrinks between the bombs and the
	// measure: a stack grown by the nesting would show.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	before := hostile.StackInUse()
	// Generous: 8 MB bombs under the race detector on a shared machine.
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	var wg sync.WaitGroup
	for name, bomb := range bombs {
		if len(bomb) > maxPayload {
			t.Fatalf("%s: %d bytes", name, len(bomb))
		}
		for range 2 {
			wg.Go(func() {
				m, err := cnc.RequestWithContext(ctx, "rpc.echo.say", bomb)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if name == "plain msgpack" || name == "JSON" {
					// Not an envelope (JSON nested past encoding/json's limit
					// is not JSON): the JSON decoder refuses it.
					if re, _ := decodeError(m.Header); re == nil || re.Code != natsrpc.CodeBadRequest {
						t.Errorf("%s: want a 400, have %+v", name, re)
					}
					return
				}
				r, _, err := envelope.DecodeResponse(m.Data)
				if err != nil || r.Success || !strings.Contains(r.Error, "nested") && !strings.Contains(r.Error, "JSON") {
					t.Errorf("%s: reply %+v, %v", name, r, err)
				}
			})
		}
	}
	wg.Wait()
	if after := hostile.StackInUse(); after > before+4<<20 {
		// (The old recursive sniffer took 1 GB of stack at this size, then
		// the process.)
		t.Errorf("goroutine stacks grew from %d to %d bytes", before, after)
	}
	// Still serving.
	if _, err := natsrpc.Call[echoResp](ctx, sayClient(t, cnc, ""), echoReq{Msg: "after"}); err != nil {
		t.Fatalf("after the bombs: %v", err)
	}
}

// One huge hostile request whose error quotes it — a handler that quotes
// its input, an envelope with a 900 KB unknown key — leaves $SRV.STATS
// answering, with a bounded last error.
func TestStatsAfterHugeHostileRequest(t *testing.T) {
	e := newEnv(t)
	say := natsrpc.NewJSONServer(func(_ context.Context, r echoReq) (echoResp, error) {
		return echoResp{}, fmt.Errorf("no such user %q", r.Msg)
	})
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "a", map[string]*natsrpc.Server{"say": say})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	ctx := ctxWait(t)
	long := hostile.Long(900_000)

	quoting, _ := json.Marshal(echoReq{Msg: strings.Repeat("x", 900_000)})
	unknownKey := append([]byte{0x83, 0xaa}, "message_id"...)
	unknownKey = append(unknownKey, 0xa1, 'x', 0xa6)
	unknownKey = append(unknownKey, "method"...)
	unknownKey = append(unknownKey, 0xa3, 's', 'a', 'y', 0xdb, 0, 0x0d, 0xbb, 0xa0) // str32 of 900,000 bytes
	unknownKey = append(unknownKey, long...)
	unknownKey = append(unknownKey, 0xc0)
	for name, body := range map[string][]byte{"quoting handler": quoting, "envelope with a long key": unknownKey} {
		m, err := e.cnc.RequestWithContext(ctx, "rpc.echo.say", body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m.Data)+len(m.Header.Get(rpcheader.Error)) > 4*rpclimit.MaxErrorMessage {
			t.Errorf("%s: a reply of %d bytes", name, len(m.Data))
		}
		st, err := e.cnc.RequestWithContext(ctx, "$SRV.STATS.echo", nil)
		if err != nil {
			t.Fatalf("%s: $SRV.STATS: %v", name, err)
		}
		var stats micro.Stats
		if err := json.Unmarshal(st.Data, &stats); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ep := range stats.Endpoints {
			if ep.LastError != "" {
				found = true
				if len(ep.LastError) > rpclimit.MaxErrorMessage {
					t.Errorf("%s: last error of %d bytes", name, len(ep.LastError))
				}
			}
		}
		if !found {
			t.Errorf("%s: no last error in %s", name, st.Data[:min(len(st.Data), 300)])
		}
	}
}

// A Service replies only to inbox-shaped subjects: a caller cannot have
// it publish onto another service's RPC subject (or anywhere else), and a
// client whose inbox prefix the Service was given is answered.
func TestRepliesOnlyToInboxes(t *testing.T) {
	e := newEnv(t)
	svc := e.echoService(t, "a", nil)
	stolen := make(chan *nats.Msg, 16)
	sub, err := e.cnc.ChanSubscribe("rpc.other.>", stolen)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.cnc.Flush(); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(echoReq{Msg: "steal"})
	for _, reply := range []string{"rpc.other.steal", "rpc.other.steal.b", "_INBOX", "$KV.registry.service-instances.echo.a", "elsewhere"} {
		if err := e.cnc.PublishRequest("rpc.echo.say", reply, data); err != nil {
			t.Fatal(err)
		}
	}
	// A call after them: the Service publishes in order, so anything it
	// sent to rpc.other.> reached this connection before this reply.
	if _, err := natsrpc.Call[echoResp](ctxWait(t), sayClient(t, e.cnc, ""), echoReq{Msg: "after"}); err != nil {
		t.Fatal(err)
	}
	if len(stolen) != 0 {
		t.Fatalf("the Service replied onto %q", (<-stolen).Subject)
	}
	if n := statSum(t, svc, "rejected"); n != 5 {
		t.Errorf("rejected %d, want 5", n)
	}

	// A client with its own inbox prefix outside _INBOX.
	custom := natstest.Connect(t, e.srv.URL(), nats.CustomInboxPrefix("replies.billing"))
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := natsrpc.Call[echoResp](short, sayClient(t, custom, ""), echoReq{Msg: "x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a reply to replies.billing without WithReplyPrefixes: %v", err)
	}
	if _, err := custom.RequestWithContext(short, "$SRV.PING.echo", nil); err == nil {
		t.Error("discovery answered replies.billing without WithReplyPrefixes")
	}
	e.echoService(t, "b", nil, natsrpc.WithReplyPrefixes("_INBOX", "replies."))
	for range 4 { // both instances share the queue group; b answers
		r, err := natsrpc.Call[echoResp](ctxWait(t), sayClient(t, custom, "b"), echoReq{Msg: "x"})
		if err != nil || r.Instance != "b" {
			t.Fatalf("WithReplyPrefixes(replies.): %+v, %v", r, err)
		}
	}
	m, err := custom.RequestWithContext(ctxWait(t), "$SRV.PING.echo", nil)
	if err != nil || !bytes.Contains(m.Data, []byte(`"echo"`)) {
		t.Errorf("discovery with WithReplyPrefixes(replies.): %v", err)
	}

	for _, bad := range [][]string{{}, {""}, {"$KV"}, {"a.*"}, {"a..b"}, {">"}, {"a b"}, {strings.Repeat("a", 300)}} {
		_, err := natsrpc.NewService(ctxWait(t), e.snc, "echo", "c", map[string]*natsrpc.Server{"say": natsrpc.NewJSONServer(echoHandler)},
			natsrpc.WithReplyPrefixes(bad...))
		if !errors.Is(err, natsrpc.ErrInvalidOption) {
			t.Errorf("WithReplyPrefixes(%q): %v", bad, err)
		}
	}
}

func echoHandler(_ context.Context, r echoReq) (echoResp, error) { return echoResp{Msg: r.Msg}, nil }

// A hostile server's replies: a deep msgpack result, a huge error header,
// a deep go-kit body. The client returns an error or a value, with bounded
// error text, and its stacks stay small.
func TestHostileReplies(t *testing.T) {
	e := newEnv(t)
	long := hostile.Long(900_000)
	replies := map[string]*nats.Msg{
		"deep envelope": {Data: append([]byte{0x83, 0xa7, 's', 'u', 'c', 'c', 'e', 's', 's', 0xc3, 0xa5, 'e', 'r', 'r', 'o', 'r', 0xc0, 0xa6, 'r', 'e', 's', 'u', 'l', 't'},
			hostile.DeepMsgpack(300_000)...)},
		"huge error header": {Header: nats.Header{rpcheader.Error: {long}, rpcheader.ErrorCode: {long[:100]}}},
		"deep go-kit body":  {Data: append(append([]byte(`{"err":"x","a":`), hostile.DeepJSON(400_000)...), '}')},
		"huge go-kit error": {Data: rpcheader.GoKitErrorBody(hostile.Long(150_000))},
		"deep JSON result":  {Data: hostile.DeepJSON(450_000)},
	}
	for name, reply := range replies {
		sub, err := e.snc.Subscribe("rpc.evil."+strings.ReplaceAll(name, " ", "-"), func(m *nats.Msg) {
			r := *reply
			r.Subject = m.Reply
			_ = e.snc.PublishMsg(&r)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := e.snc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := hostile.StackInUse()
	for name := range replies {
		method := strings.ReplaceAll(name, " ", "-")
		for _, opts := range [][]natsrpc.ClientOption{nil, {natsrpc.WithEnvelope(natsrpc.EnvelopeMsgpack)}} {
			c, err := natsrpc.NewServiceClient(e.cnc, "evil", method, natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp], opts...)
			if err != nil {
				t.Fatal(err)
			}
			v, err := c.Endpoint()(ctxWait(t), map[string]any{"x": 1})
			if err == nil {
				t.Errorf("%s (%d options): a value %.40v", name, len(opts), v)
				continue
			}
			if len(err.Error()) > rpclimit.MaxErrorMessage+rpclimit.MaxQuoted+256 {
				t.Errorf("%s: error text of %d bytes", name, len(err.Error()))
			}
		}
	}
	if after := hostile.StackInUse(); after > before+4<<20 {
		t.Errorf("goroutine stacks grew from %d to %d bytes", before, after)
	}
}

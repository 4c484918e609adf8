package natsrpc

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/envelope"
	"github.com/aegis-sdk/kitnats/internal/hostile"
)

// What the Service makes of a request without kitnats headers: an
// envelope exactly when envelope.DecodeRequest would read it and it names
// message_id and method; a broken envelope is still an envelope (its
// caller gets a success:false envelope); anything else is plain.
func FuzzSniffForeign(f *testing.F) {
	f.Add([]byte(`{"message_id":"a","method":"m","params":{}}`))
	f.Add([]byte(`{"message_id":"a","method":"m","params":null}`))
	f.Add([]byte(`{"message_id":"a"}`))
	f.Add([]byte(`{"a":1,"b":"\"message_id\" \"method\""}`))
	f.Add([]byte("\x82\xaamessage_id\xa1a\xa6method\xa1m"))
	f.Add([]byte("\x82\xaamessage_id\xa1a\xa6method\x01"))
	f.Add([]byte("\x82\x01\xa1a\xa6method\xa1m"))
	f.Add([]byte(`not json`))
	f.Add(hostile.DeepMsgpack(300))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The reader's walk: linear in the body, whatever its shape.
		hostile.Linear(t, "sniffForeign", data, 16, 64+float64(len(data))/8, func() { _ = sniffForeign(data) })
		fr := sniffForeign(data)
		r, format, err := envelope.DecodeRequest(data)
		switch {
		case !fr.envelope:
			if fr != plainRequest {
				t.Fatal("plain request not shared")
			}
			if err == nil && r.MessageID != "" && format == envelope.JSON {
				t.Fatalf("%q: an envelope with message_id taken for plain", data)
			}
		case fr.err != nil:
			if err == nil || fr.req != nil || !errors.Is(fr.err, ErrMalformedEnvelope) || fr.format != format {
				t.Fatalf("%q: sniffed %v, decoded %v", data, fr.err, err)
			}
		default:
			if err != nil || !reflect.DeepEqual(fr.req, r) || fr.format != format {
				t.Fatalf("%q: sniffed %+v, decoded %+v %v", data, fr.req, r, err)
			}
		}
	})
}

// The client's reading of a reply: a success hands the result to the
// response decoder; anything else is an error, never a success with
// nothing in it.
func FuzzEnvelopeReply(f *testing.F) {
	f.Add([]byte(`{"success":true,"result":{"a":1},"error":null}`))
	f.Add([]byte(`{"success":true,"result":{"success":false,"error":"NOT_ACTIVE","message":"m","result":null},"error":null}`))
	f.Add([]byte(`{"success":false,"result":null,"error":"NOT_ACTIVE: x"}`))
	f.Add([]byte(`{"success":false,"result":null,"error":"boom"}`))
	f.Add([]byte("\x83\xa7success\xc3\xa6result\x81\xa1a\x01\xa5error\xc0"))
	dec := envelopeDecoder(DecodeJSONResponse[map[string]any])
	f.Add(append([]byte("\x83\xa7success\xc3\xa5error\xc0\xa6result"), hostile.DeepMsgpackArray(300)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		hostile.Linear(t, "envelope reply", data, 16, 64+float64(len(data))/8, func() {
			_, _ = dec(context.Background(), &nats.Msg{Data: data})
		})
		resp, err := dec(context.Background(), &nats.Msg{Data: data})
		env, _, derr := envelope.DecodeResponse(data)
		switch {
		case derr != nil:
			if err == nil || !errors.Is(err, ErrMalformedEnvelope) {
				t.Fatalf("%q: undecodable reply gave %v, %v", data, resp, err)
			}
		case err == nil:
			if !env.Success {
				t.Fatalf("%q: failure read as success", data)
			}
			if _, na := notActive(env); na {
				t.Fatalf("%q: NOT_ACTIVE read as success", data)
			}
			var want map[string]any
			if json.Unmarshal(env.Result, &want) == nil && !reflect.DeepEqual(resp, want) {
				t.Fatalf("%q: result %v, want %v", data, resp, want)
			}
		default:
			var ee *EnvelopeError
			if errors.As(err, &ee) && ee.Retryable() != errors.Is(err, ErrNotActive) {
				t.Fatalf("%q: %v", data, err)
			}
		}
	})
}

func TestNotActiveShapes(t *testing.T) {
	for _, tc := range []struct {
		env  envelope.Response
		msg  string
		want bool
	}{
		{envelope.Response{Success: false, Error: "NOT_ACTIVE"}, "NOT_ACTIVE", true},
		{envelope.Response{Success: false, Error: "Service is NOT_ACTIVE (standby)"}, "Service is NOT_ACTIVE (standby)", true},
		{envelope.Response{Success: false, Error: "not active"}, "", false},
		{envelope.Response{Success: true, Result: json.RawMessage(`{"success":false,"error":"NOT_ACTIVE","message":"standby b","result":null}`)}, "standby b", true},
		{envelope.Response{Success: true, Result: json.RawMessage(`{"success":false,"error":"NOT_ACTIVE"}`)}, "NOT_ACTIVE", true},
		{envelope.Response{Success: true, Result: json.RawMessage(`{"success":true,"error":"NOT_ACTIVE"}`)}, "", false},
		{envelope.Response{Success: true, Result: json.RawMessage(`{"error":"NOT_ACTIVE"}`)}, "", false},
		{envelope.Response{Success: true, Result: json.RawMessage(`{"success":false,"error":"NOT_ACTIVE_X"}`)}, "", false},
		{envelope.Response{Success: true, Result: json.RawMessage(`"NOT_ACTIVE"`)}, "", false},
		{envelope.Response{Success: true, Result: json.RawMessage(`["NOT_ACTIVE"]`)}, "", false},
	} {
		msg, ok := notActive(&tc.env)
		if ok != tc.want || msg != tc.msg {
			t.Errorf("%+v: %q %v, want %q %v", tc.env, msg, ok, tc.msg, tc.want)
		}
	}
}

func TestHoldsErr(t *testing.T) {
	type plain struct{ V int }
	type tagged struct {
		E string `json:"err"`
	}
	type named struct{ Err error }
	type skipped struct {
		Err string `json:"-"`
	}
	type embedded struct{ tagged }
	for typ, want := range map[reflect.Type]bool{
		reflect.TypeFor[plain]():            false,
		reflect.TypeFor[*plain]():           false,
		reflect.TypeFor[string]():           false,
		reflect.TypeFor[[]int]():            false,
		reflect.TypeFor[tagged]():           true,
		reflect.TypeFor[named]():            true,
		reflect.TypeFor[skipped]():          false,
		reflect.TypeFor[embedded]():         true, // encoding/json promotes an embedded struct's fields
		reflect.TypeFor[map[string]any]():   true,
		reflect.TypeFor[any]():              true,
		reflect.TypeFor[json.RawMessage]():  true,
		reflect.TypeFor[*json.RawMessage](): true,
	} {
		if have := holdsErr(typ); have != want {
			t.Errorf("%v: %v, want %v", typ, have, want)
		}
	}
}

package natsrpc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/rpcheader"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// decodeError reads a reply's status as a Client does: nil for a
// success, the *Error of a failure, and the decoder's error for a garbled
// status.
func decodeError(h nats.Header) (*natsrpc.Error, error) {
	st, failed, err := rpcheader.DecodeStatus(h)
	if !failed {
		return nil, err
	}
	return &natsrpc.Error{Code: st.Code, Message: st.Message, Business: st.Business}, err
}

func TestErrorSentinels(t *testing.T) {
	var r interface{ Retryable() bool }
	for _, tc := range []struct {
		err       error
		retryable bool
		is        []error
	}{
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrNoResponders}, true, []error{natsrpc.ErrNoResponders, nats.ErrNoResponders}},
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrConnClosed, Cause: nats.ErrConnectionDraining}, true, []error{natsrpc.ErrConnClosed, nats.ErrConnectionDraining}},
		{&natsrpc.CallError{Subject: "s", Err: natsrpc.ErrClientClosed}, true, []error{natsrpc.ErrClientClosed}},
		{&natsrpc.CallError{Subject: "s", Err: context.DeadlineExceeded}, false, []error{context.DeadlineExceeded}},
		{&natsrpc.Error{Code: 503}, true, []error{natsrpc.ErrRemote}},
		{&natsrpc.Error{Code: 503, Business: true}, false, []error{natsrpc.ErrRemote, natsrpc.ErrBusiness}},
		{&natsrpc.Error{Code: 500}, false, []error{natsrpc.ErrRemote}},
		{&natsrpc.PayloadError{Size: 2, Max: 1}, false, []error{natsrpc.ErrPayloadTooLarge}},
	} {
		if !errors.As(tc.err, &r) {
			t.Errorf("%v: does not implement Retryable", tc.err)
			continue
		}
		if have := r.Retryable(); have != tc.retryable {
			t.Errorf("%v: Retryable want %v, have %v", tc.err, tc.retryable, have)
		}
		for _, target := range tc.is {
			if !errors.Is(tc.err, target) {
				t.Errorf("%v: want errors.Is %v", tc.err, target)
			}
		}
	}
}

// FuzzDecodeJSONRequest: the JSON request decoder rejects garbage with an
// error, never a panic.
func FuzzDecodeJSONRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"body":"x"}`))
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte{0x81, 0xa1, 'a', 0x01}) // msgpack, as an AegisSDK peer may send
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := natsrpc.DecodeJSONRequest[benchMsg](context.Background(), &nats.Msg{Data: data})
		if err == nil {
			if _, ok := v.(benchMsg); !ok {
				t.Fatalf("decoded %T, want benchMsg", v)
			}
		}
	})
}

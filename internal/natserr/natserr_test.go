package natserr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	cases := []struct {
		err                error
		op, subject, queue string
		isNATS             bool
	}{
		{fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "$KV.reg.a.b"`), natserr.OpPublish, "$KV.reg.a.b", "", true},
		{fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Subscription to "rpc.greeter.*" using queue "rpc.greeter"`), natserr.OpSubscribe, "rpc.greeter.*", "rpc.greeter", true},
		{fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Subscription to "_INBOX.x.*" (sid "3")`), natserr.OpSubscribe, "_INBOX.x.*", "", true},
		{fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish with Reply of "_R_.x"`), natserr.OpReply, "_R_.x", "", true},
		{errors.New(`nats: permissions violation for publish to "a.b"`), natserr.OpPublish, "a.b", "", false},
		{fmt.Errorf("natskv: write: %w", &jetstream.APIError{Code: 403, Description: "forbidden"}), natserr.OpJetStream, "forbidden", "", false},
	}
	for _, c := range cases {
		pe := natserr.Parse(c.err)
		if pe == nil {
			t.Fatalf("%v: not recognised", c.err)
		}
		if pe.Op != c.op || pe.Subject != c.subject || pe.Queue != c.queue {
			t.Errorf("%v: got %+v", c.err, pe)
		}
		if !errors.Is(pe, natserr.ErrPermission) {
			t.Errorf("%v: does not match ErrPermission", pe)
		}
		if errors.Is(pe, nats.ErrPermissionViolation) != c.isNATS {
			t.Errorf("%v: errors.Is(nats.ErrPermissionViolation) = %v", pe, !c.isNATS)
		}
		wrapped := fmt.Errorf("outer: %w", pe)
		if natserr.Parse(wrapped) != pe {
			t.Errorf("a wrapped *PermissionError is not returned as is")
		}
	}
	for _, err := range []error{nil, nats.ErrTimeout, context.DeadlineExceeded, &jetstream.APIError{Code: 503}} {
		if pe := natserr.Parse(err); pe != nil {
			t.Errorf("%v: recognised as %v", err, pe)
		}
	}
}

func TestErrorText(t *testing.T) {
	pe := &natserr.PermissionError{Op: natserr.OpSubscribe, Subject: "rpc.greeter.*", Queue: "rpc.greeter"}
	want := `kitnats: permission denied: the NATS user may not subscribe to "rpc.greeter.*" in queue group "rpc.greeter"`
	if pe.Error() != want {
		t.Errorf("got %q\nwant %q", pe.Error(), want)
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"$JS.API.CONSUMER.CREATE.KV_r.>", "$JS.API.CONSUMER.CREATE.KV_r.abc", true},
		{"$JS.API.CONSUMER.CREATE.KV_r.>", "$JS.API.CONSUMER.CREATE.KV_r2.abc", false},
		{"_INBOX.>", "_INBOX.abc.*", true},
		{"rpc.greeter.*", "rpc.greeter.>", true},
		{"a.*.c", "a.b", false},
		{">", "a", true},
	}
	for _, c := range cases {
		if got := natserr.Match(c.pattern, c.subject); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.pattern, c.subject, got)
		}
	}
}

func TestInboxPattern(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s.URL())
	if got := natserr.InboxPattern(nc); got != "_INBOX.>" {
		t.Errorf("default: %q", got)
	}
	nc2 := natstest.Connect(t, s.URL(), nats.CustomInboxPrefix("_INBOX.billing"))
	if got := natserr.InboxPattern(nc2); got != "_INBOX.billing.>" {
		t.Errorf("custom: %q", got)
	}
}

// quiet keeps nats.go from printing the violations the tests cause.
var quiet = nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})

const conf = `accounts: { APP: { jetstream: enabled, users: [
  { user: limited, password: pw, permissions: {
      publish: { allow: ["allowed.>", "_INBOX.>", "$JS.API.STREAM.INFO.>"] }
      subscribe: { allow: ["_INBOX.>", "allowed.>"] }
  } }
  { user: noinbox, password: pw, permissions: {
      publish: { allow: [">"] }
      subscribe: { allow: ["other.>"] }
  } }
] } }
`

// TestDoAgainstServer: a request the server refuses ends with the
// *PermissionError as soon as it is reported, not at its timeout; a refused
// subscription is found by a probe after a flush; an allowed request is not
// touched.
func TestDoAgainstServer(t *testing.T) {
	s := natstest.StartConfig(t, conf)
	nc := natstest.Connect(t, s.URL(), nats.UserInfo("limited", "pw"), quiet)
	sub, err := nc.Subscribe("allowed.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// Refused publish: the request would wait its full minute.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = natserr.Do(ctx, nc, []string{"denied.>"}, func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "denied.x", nil)
		return err
	})
	var pe *natserr.PermissionError
	if !errors.As(err, &pe) || pe.Op != natserr.OpPublish || pe.Subject != "denied.x" {
		t.Fatalf("refused request: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Do waited for the request's own timeout")
	}

	// A violation of another subject is not this operation's.
	err = natserr.Do(ctx, nc, []string{"allowed.>"}, func(ctx context.Context) error {
		_ = nc.Publish("denied.y", nil)
		_ = nc.Flush()
		rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer rcancel()
		_, err := nc.RequestWithContext(rctx, "allowed.nobody", nil)
		return err
	})
	if errors.Is(err, natserr.ErrPermission) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("unrelated violation: %v", err)
	}

	// Allowed: the reply comes back.
	err = natserr.Do(ctx, nc, []string{"allowed.>"}, func(ctx context.Context) error {
		m, err := nc.RequestWithContext(ctx, "allowed.echo", []byte("hi"))
		if err == nil && string(m.Data) != "hi" {
			err = fmt.Errorf("reply %q", m.Data)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// A refused subscription is reported before the flush's PONG.
	p := natserr.NewProbe(nc)
	sub2, err := nc.QueueSubscribe("theirs.x", "q", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pe = p.Check("theirs.>")
	if pe == nil || pe.Op != natserr.OpSubscribe || pe.Subject != "theirs.x" || pe.Queue != "q" {
		t.Fatalf("refused subscription: %+v", pe)
	}
	if natserr.NewProbe(nc).Check() != nil {
		t.Error("a new probe reports an old violation")
	}

	// Refused reads the last error, however old.
	if err := nc.Publish("denied.z", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if pe := natserr.Refused(nc, "denied.>"); pe == nil || pe.Subject != "denied.z" {
		t.Errorf("Refused: %v", pe)
	}
	if pe := natserr.Refused(nc, "allowed.>"); pe != nil {
		t.Errorf("Refused of another subject: %v", pe)
	}

	// JetStream API request without permission for it.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	err = natserr.Do(ctx, nc, []string{"$JS.API.>"}, func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
		return err
	})
	if !errors.As(err, &pe) || pe.Subject != "$JS.API.STREAM.CREATE.S" {
		t.Fatalf("JetStream API: %v", err)
	}
}

// TestDoInbox: a connection that may not subscribe to its inbox gets no
// reply to any request; the refused subscription names the inbox.
func TestDoInbox(t *testing.T) {
	s := natstest.StartConfig(t, conf)
	nc := natstest.Connect(t, s.URL(), nats.UserInfo("noinbox", "pw"), quiet)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := natserr.Do(ctx, nc, []string{natserr.InboxPattern(nc)}, func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "anything", nil)
		return err
	})
	var pe *natserr.PermissionError
	if !errors.As(err, &pe) || pe.Op != natserr.OpSubscribe || !natserr.Match("_INBOX.>", pe.Subject) {
		t.Fatalf("got %v", err)
	}
}

func TestDoNilConn(t *testing.T) {
	want := errors.New("x")
	if err := natserr.Do(context.Background(), nil, nil, func(context.Context) error { return want }); err != want {
		t.Fatal(err)
	}
	if natserr.NewProbe(nil).Check() != nil {
		t.Fatal("nil probe found something")
	}
}

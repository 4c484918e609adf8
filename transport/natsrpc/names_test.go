package natsrpc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/transport/natsrpc"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestValidateNames(t *testing.T) {
	long := strings.Repeat("a", wire.MaxServiceLen+1)
	longInstance := strings.Repeat("i", wire.MaxInstanceLen+1)
	for _, tc := range []struct {
		name     string
		validate func(string) error
		in       string
		wantErr  bool
	}{
		{"service ok", wire.ValidateService, "echo-service_2", false},
		{"service max len", wire.ValidateService, long[1:], false},
		{"service too long", wire.ValidateService, long, true},
		{"service empty", wire.ValidateService, "", true},
		{"service digit first", wire.ValidateService, "1echo", true},
		{"service dot", wire.ValidateService, "echo.x", true},
		{"service star", wire.ValidateService, "echo*", true},
		{"service gt", wire.ValidateService, "echo>", true},
		{"service space", wire.ValidateService, "echo x", true},
		{"service unicode", wire.ValidateService, "échо", true},
		{"method aegis style", wire.ValidateMethod, "get_user_2", false},
		{"method camel", wire.ValidateMethod, "getUser", false},
		{"method wildcard", wire.ValidateMethod, ">", true},
		{"method dot", wire.ValidateMethod, "a.b", true},
		{"method underscore first", wire.ValidateMethod, "_x", true},
		{"method max len", wire.ValidateMethod, long[1:], false},
		{"method too long", wire.ValidateMethod, long, true},
		{"instance digit first", wire.ValidateInstance, "3f9a1c2b", false},
		{"instance aegis id", wire.ValidateInstance, "echo-service-3f9a1c2b", false},
		{"instance dash first", wire.ValidateInstance, "-x", true},
		{"instance tab", wire.ValidateInstance, "a\tb", true},
		{"instance star", wire.ValidateInstance, "*", true},
		{"instance max len", wire.ValidateInstance, longInstance[1:], false},
		{"instance too long", wire.ValidateInstance, longInstance, true},
		{"instance empty", wire.ValidateInstance, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.validate(tc.in)
			if have := err != nil; have != tc.wantErr {
				t.Fatalf("want error %v, have %v", tc.wantErr, err)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, wire.ErrInvalidName) {
				t.Errorf("want errors.Is(err, ErrInvalidName), have %v", err)
			}
			var ne *wire.NameError
			if !errors.As(err, &ne) || ne.Name != tc.in {
				t.Errorf("want *NameError for %q, have %#v", tc.in, err)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s, err := wire.ServiceSubject("echo", "say")
	if want := "rpc.echo.say"; err != nil || s != want {
		t.Errorf("ServiceSubject: want %q, have %q, %v", want, s, err)
	}
	s, err = wire.InstanceSubject("echo", "say", "i-1")
	if want := "rpc.echo.say.i-1"; err != nil || s != want {
		t.Errorf("InstanceSubject: want %q, have %q, %v", want, s, err)
	}
	q, err := wire.QueueGroup("echo")
	if want := "rpc.echo"; err != nil || q != want {
		t.Errorf("QueueGroup: want %q, have %q, %v", want, q, err)
	}
	for _, in := range [][3]string{{"e.x", "say", "i"}, {"echo", "say.*", "i"}, {"echo", "say", "i.>"}} {
		if _, err := wire.InstanceSubject(in[0], in[1], in[2]); !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("InstanceSubject%q: want ErrInvalidName, have %v", in, err)
		}
	}
}

// The registry accepts instance IDs up to wire.MaxInstanceLen bytes; every one
// of them must get a subject and an endpoint, or it would be discovered and
// never callable.
func TestLongestInstanceIsCallable(t *testing.T) {
	longest := strings.Repeat("i", wire.MaxInstanceLen)
	if err := wire.ValidateInstance(longest); err != nil {
		t.Fatalf("the registry refuses %d bytes: %v", len(longest), err)
	}
	s, err := wire.InstanceSubject("echo", "say", longest)
	if want := "rpc.echo.say." + longest; err != nil || s != want {
		t.Errorf("InstanceSubject(%d bytes): want %q, have %q, %v", len(longest), want, s, err)
	}
	// Factory only builds clients: a connection that was never dialled will do.
	factory := natsrpc.Factory(new(nats.Conn), "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
	e, closer, err := factory(longest)
	if err != nil || e == nil || closer == nil {
		t.Fatalf("Factory(%d bytes): have %v", len(longest), err)
	}
	if c, ok := closer.(*natsrpc.Client); !ok || natsrpc.SubjectOf(c) != s {
		t.Errorf("Factory(%d bytes): want a client on %q, have %#v", len(longest), s, closer)
	}

	tooLong := longest + "i"
	if _, err := wire.InstanceSubject("echo", "say", tooLong); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("InstanceSubject(%d bytes): want ErrInvalidName, have %v", len(tooLong), err)
	}
	_, _, err = factory(tooLong)
	var ne *wire.NameError
	if !errors.As(err, &ne) || ne.Kind != "instance" || !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("Factory(%d bytes): want an instance *NameError, have %v", len(tooLong), err)
	}
}

package natsrpc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/names"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestValidateNames(t *testing.T) {
	long := strings.Repeat("a", natsrpc.MaxServiceLen+1)
	longInstance := strings.Repeat("i", natsrpc.MaxInstanceLen+1)
	for _, tc := range []struct {
		name     string
		validate func(string) error
		in       string
		wantErr  bool
	}{
		{"service ok", natsrpc.ValidateService, "echo-service_2", false},
		{"service max len", natsrpc.ValidateService, long[1:], false},
		{"service too long", natsrpc.ValidateService, long, true},
		{"service empty", natsrpc.ValidateService, "", true},
		{"service digit first", natsrpc.ValidateService, "1echo", true},
		{"service dot", natsrpc.ValidateService, "echo.x", true},
		{"service star", natsrpc.ValidateService, "echo*", true},
		{"service gt", natsrpc.ValidateService, "echo>", true},
		{"service space", natsrpc.ValidateService, "echo x", true},
		{"service unicode", natsrpc.ValidateService, "échо", true},
		{"method aegis style", natsrpc.ValidateMethod, "get_user_2", false},
		{"method camel", natsrpc.ValidateMethod, "getUser", false},
		{"method wildcard", natsrpc.ValidateMethod, ">", true},
		{"method dot", natsrpc.ValidateMethod, "a.b", true},
		{"method underscore first", natsrpc.ValidateMethod, "_x", true},
		{"method max len", natsrpc.ValidateMethod, long[1:], false},
		{"method too long", natsrpc.ValidateMethod, long, true},
		{"instance digit first", natsrpc.ValidateInstance, "3f9a1c2b", false},
		{"instance aegis id", natsrpc.ValidateInstance, "echo-service-3f9a1c2b", false},
		{"instance dash first", natsrpc.ValidateInstance, "-x", true},
		{"instance tab", natsrpc.ValidateInstance, "a\tb", true},
		{"instance star", natsrpc.ValidateInstance, "*", true},
		{"instance max len", natsrpc.ValidateInstance, longInstance[1:], false},
		{"instance too long", natsrpc.ValidateInstance, longInstance, true},
		{"instance empty", natsrpc.ValidateInstance, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.validate(tc.in)
			if have := err != nil; have != tc.wantErr {
				t.Fatalf("want error %v, have %v", tc.wantErr, err)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, natsrpc.ErrInvalidName) {
				t.Errorf("want errors.Is(err, ErrInvalidName), have %v", err)
			}
			var ne *natsrpc.NameError
			if !errors.As(err, &ne) || ne.Name != tc.in {
				t.Errorf("want *NameError for %q, have %#v", tc.in, err)
			}
			// One set of rules for kitnats: the registry's type and sentinel.
			var re *names.Error
			if !errors.Is(err, names.ErrInvalid) || !errors.As(err, &re) {
				t.Errorf("want the shared *names.Error matching names.ErrInvalid, have %#v", err)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s, err := natsrpc.ServiceSubject("echo", "say")
	if want := "rpc.echo.say"; err != nil || s != want {
		t.Errorf("ServiceSubject: want %q, have %q, %v", want, s, err)
	}
	s, err = natsrpc.InstanceSubject("echo", "say", "i-1")
	if want := "rpc.echo.say.i-1"; err != nil || s != want {
		t.Errorf("InstanceSubject: want %q, have %q, %v", want, s, err)
	}
	q, err := natsrpc.QueueGroup("echo")
	if want := "rpc.echo"; err != nil || q != want {
		t.Errorf("QueueGroup: want %q, have %q, %v", want, q, err)
	}
	for _, in := range [][3]string{{"e.x", "say", "i"}, {"echo", "say.*", "i"}, {"echo", "say", "i.>"}} {
		if _, err := natsrpc.InstanceSubject(in[0], in[1], in[2]); !errors.Is(err, natsrpc.ErrInvalidName) {
			t.Errorf("InstanceSubject%q: want ErrInvalidName, have %v", in, err)
		}
	}
}

// The registry accepts instance IDs up to names.MaxInstance bytes; every one
// of them must get a subject and an endpoint, or it would be discovered and
// never callable.
func TestLongestInstanceIsCallable(t *testing.T) {
	if natsrpc.MaxInstanceLen != names.MaxInstance {
		t.Fatalf("MaxInstanceLen %d, registry limit %d", natsrpc.MaxInstanceLen, names.MaxInstance)
	}
	longest := strings.Repeat("i", names.MaxInstance)
	if err := names.Validate(names.Instance, longest); err != nil {
		t.Fatalf("the registry refuses %d bytes: %v", len(longest), err)
	}
	s, err := natsrpc.InstanceSubject("echo", "say", longest)
	if want := "rpc.echo.say." + longest; err != nil || s != want {
		t.Errorf("InstanceSubject(%d bytes): want %q, have %q, %v", len(longest), want, s, err)
	}
	// Factory only builds clients: a connection that was never dialled will do.
	factory := natsrpc.Factory(new(nats.Conn), "echo", "say", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[echoResp])
	e, closer, err := factory(longest)
	if err != nil || e == nil || closer == nil {
		t.Fatalf("Factory(%d bytes): have %v", len(longest), err)
	}
	if c, ok := closer.(*natsrpc.Client); !ok || c.Subject() != s {
		t.Errorf("Factory(%d bytes): want a client on %q, have %#v", len(longest), s, closer)
	}

	tooLong := longest + "i"
	if _, err := natsrpc.InstanceSubject("echo", "say", tooLong); !errors.Is(err, natsrpc.ErrInvalidName) {
		t.Errorf("InstanceSubject(%d bytes): want ErrInvalidName, have %v", len(tooLong), err)
	}
	_, _, err = factory(tooLong)
	var ne *natsrpc.NameError
	if !errors.As(err, &ne) || ne.Kind != names.Instance || !errors.Is(err, names.ErrInvalid) {
		t.Errorf("Factory(%d bytes): want an instance *NameError, have %v", len(tooLong), err)
	}
}

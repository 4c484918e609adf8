package natsrpc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

func TestValidateNames(t *testing.T) {
	long := strings.Repeat("a", natsrpc.MaxNameLen+1)
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
		{"instance digit first", natsrpc.ValidateInstance, "3f9a1c2b", false},
		{"instance aegis id", natsrpc.ValidateInstance, "echo-service-3f9a1c2b", false},
		{"instance dash first", natsrpc.ValidateInstance, "-x", true},
		{"instance tab", natsrpc.ValidateInstance, "a\tb", true},
		{"instance star", natsrpc.ValidateInstance, "*", true},
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

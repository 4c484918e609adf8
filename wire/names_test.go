package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aegis-sdk/kitnats/wire"
)

var validators = map[string]func(string) error{
	"service":  wire.ValidateService,
	"method":   wire.ValidateMethod,
	"instance": wire.ValidateInstance,
	"bucket":   wire.ValidateBucket,
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		kind string
		name string
		ok   bool
	}{
		{"service", "echo", true},
		{"service", "Echo_svc-2", true},
		{"service", "2echo", false},
		{"service", strings.Repeat("s", wire.MaxServiceLen), true},
		{"service", strings.Repeat("s", wire.MaxServiceLen+1), false},
		{"method", "say", true},
		{"method", "say.hi", false},
		{"instance", "0a-1", true},
		{"instance", "-x", false},
		{"instance", strings.Repeat("i", wire.MaxInstanceLen), true},
		{"instance", strings.Repeat("i", wire.MaxInstanceLen+1), false},
		{"bucket", "_registry-1", true},
		{"bucket", "a.b", false},
		{"service", "", false},
		{"service", "a*", false},
		{"service", "a>", false},
		{"service", "a b", false},
		{"service", "é", false},
	} {
		err := validators[tc.kind](tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("Validate %s %q = %v, want ok=%v", tc.kind, tc.name, err, tc.ok)
		}
		if err == nil {
			continue
		}
		var ne *wire.NameError
		if !errors.As(err, &ne) || ne.Kind != tc.kind || ne.Name != tc.name || !errors.Is(err, wire.ErrInvalidName) {
			t.Errorf("Validate %s %q = %#v: want a *wire.NameError matching ErrInvalidName", tc.kind, tc.name, err)
		}
	}
}

// A refused name is quoted in the error, and a hostile one is long: the
// error stays short.
func TestNameErrorBounded(t *testing.T) {
	err := wire.ValidateService(strings.Repeat("\x1b", 1<<20))
	if err == nil || len(err.Error()) > 1024 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
	if strings.ContainsRune(err.Error(), 0x1b) {
		t.Fatal("the error carries a raw escape byte")
	}
}

func TestSubjects(t *testing.T) {
	s, err := wire.ServiceSubject("greeter", "hello")
	if err != nil || s != "rpc.greeter.hello" {
		t.Fatalf("ServiceSubject = %q, %v", s, err)
	}
	s, err = wire.InstanceSubject("greeter", "hello", "greeter-1")
	if err != nil || s != "rpc.greeter.hello.greeter-1" {
		t.Fatalf("InstanceSubject = %q, %v", s, err)
	}
	s, err = wire.QueueGroup("greeter")
	if err != nil || s != "rpc.greeter" {
		t.Fatalf("QueueGroup = %q, %v", s, err)
	}
	for _, f := range []func() (string, error){
		func() (string, error) { return wire.ServiceSubject("greeter", "a.b") },
		func() (string, error) { return wire.ServiceSubject("*", "hello") },
		func() (string, error) { return wire.InstanceSubject("greeter", "hello", ">") },
		func() (string, error) { return wire.QueueGroup("") },
	} {
		if s, err := f(); !errors.Is(err, wire.ErrInvalidName) || s != "" {
			t.Errorf("a bad name gave %q, %v", s, err)
		}
	}
	if k := wire.AddressKey("http"); k != "kitnats.addr.http" {
		t.Fatalf("AddressKey = %q", k)
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"echo", "a.b", ">", "x y", "0", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for k, v := range validators {
			if v(s) == nil && strings.ContainsAny(s, ".*> \t\r\n") {
				t.Fatalf("%s %q accepted, yet it could split or widen a subject", k, s)
			}
		}
	})
}

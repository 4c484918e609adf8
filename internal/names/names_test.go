package names_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/names"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		kind names.Kind
		name string
		ok   bool
	}{
		{names.Service, "echo", true},
		{names.Service, "Echo_svc-2", true},
		{names.Service, "2echo", false},
		{names.Service, strings.Repeat("s", names.MaxService), true},
		{names.Service, strings.Repeat("s", names.MaxService+1), false},
		{names.Method, "say", true},
		{names.Method, "say.hi", false},
		{names.Instance, "0a-1", true},
		{names.Instance, "-x", false},
		{names.Instance, strings.Repeat("i", names.MaxInstance), true},
		{names.Instance, strings.Repeat("i", names.MaxInstance+1), false},
		{names.Bucket, "_registry-1", true},
		{names.Bucket, "a.b", false},
		{names.Service, "", false},
		{names.Service, "a*", false},
		{names.Service, "a>", false},
		{names.Service, "a b", false},
		{names.Service, "é", false},
	} {
		err := names.Validate(tc.kind, tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%s, %q) = %v, want ok=%v", tc.kind, tc.name, err, tc.ok)
		}
		if err == nil {
			continue
		}
		var ne *names.Error
		if !errors.As(err, &ne) || ne.Kind != tc.kind || ne.Name != tc.name || !errors.Is(err, names.ErrInvalid) {
			t.Errorf("Validate(%s, %q) = %#v: want a *names.Error matching ErrInvalid", tc.kind, tc.name, err)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"echo", "a.b", ">", "x y", "0", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range []names.Kind{names.Service, names.Method, names.Instance, names.Bucket} {
			if names.Validate(k, s) == nil && strings.ContainsAny(s, ".*> \t\r\n") {
				t.Fatalf("%s %q accepted, yet it could split or widen a subject", k, s)
			}
		}
	})
}

package unsent_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aegis-sdk/kitnats/internal/unsent"
)

type rejected struct{ yes bool }

func (e rejected) Error() string  { return "rejected" }
func (e rejected) Rejected() bool { return e.yes }

type gone struct{}

func (gone) Error() string { return "gone" }
func (gone) Gone() bool    { return true }

// loop is an error whose chain never ends.
type loop struct{}

func (loop) Error() string   { return "loop" }
func (e loop) Unwrap() error { return e }

func TestIs(t *testing.T) {
	sent := errors.New("timeout")
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{sent, false},
		{rejected{true}, true},
		{rejected{false}, false},
		{gone{}, true},
		{fmt.Errorf("attempt: %w", gone{}), true},
		{errors.Join(gone{}, rejected{true}), true},
		{errors.Join(gone{}, sent), false}, // a hedged backup was sent
		{errors.Join(), false},
		{loop{}, false},
	} {
		if have := unsent.Is(tc.err); have != tc.want {
			t.Errorf("Is(%v): want %v, have %v", tc.err, tc.want, have)
		}
	}
}

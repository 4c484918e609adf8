package lb_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/lb"
)

// panicsNaming reports whether f panics with a message that names option.
func panicsNaming(f func(), option string) (ok bool, msg string) {
	defer func() {
		r := recover()
		msg = fmt.Sprint(r)
		ok = r != nil && strings.Contains(msg, option)
	}()
	f()
	return false, ""
}

// TestBadOptionsPanic: an option value the constructors cannot use is a
// programming error, refused at once with the option's name, never clamped
// into something else.
func TestBadOptionsPanic(t *testing.T) {
	newSet := func(o lb.EndpointSetOption) func() {
		return func() { lb.NewEndpointSet(sd.FixedInstancer{"a"}, newFakeFactory().Factory, nil, o).Close() }
	}
	for _, tc := range []struct {
		option string
		f      func()
	}{
		{"WithAttributes", newSet(lb.WithAttributes(nil))},
		{"WithInvalidateOnError", newSet(lb.WithInvalidateOnError(-time.Second))},
		{"WithFactoryRetry", newSet(lb.WithFactoryRetry(0, time.Second))},
		{"WithFactoryRetry", newSet(lb.WithFactoryRetry(time.Second, time.Millisecond))},
		{"WithPanicThreshold", newSet(lb.WithPanicThreshold(-0.1))},
		{"WithPanicThreshold", newSet(lb.WithPanicThreshold(math.NaN()))},
		{"WithMeterProvider", newSet(lb.WithMeterProvider(nil))},
		{"WithVirtualNodes", func() { lb.Sticky(lb.WithVirtualNodes(0)) }},
	} {
		if ok, msg := panicsNaming(tc.f, tc.option); !ok {
			t.Errorf("%s: want a panic naming it, have %q", tc.option, msg)
		}
	}
}

// TestGoodOptionsAccepted: the edges of every range are values, not errors.
func TestGoodOptionsAccepted(t *testing.T) {
	set := lb.NewEndpointSet(sd.FixedInstancer{"a"}, newFakeFactory().Factory, nil,
		lb.WithInvalidateOnError(0), lb.WithFactoryRetry(time.Millisecond, time.Millisecond),
		lb.WithPanicThreshold(0), lb.WithPanicThreshold(1.5), nil)
	defer set.Close()
	if _, err := lb.New(set, lb.Sticky(lb.WithVirtualNodes(1))).Pick(t.Context(), nil); err != nil {
		t.Error(err)
	}
}

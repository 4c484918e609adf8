package lb

import (
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
)

func (s *EndpointSet) subscriberCount() int {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return len(s.subscribers)
}

// TestBalancerUnsubscribesWhenCollected: a balancer nobody holds any more
// stops being built for, then leaves the set's subscribers, with no Close.
func TestBalancerUnsubscribesWhenCollected(t *testing.T) {
	set := NewEndpointSet(sd.FixedInstancer{"a", "b"}, func(string) (endpoint.Endpoint, io.Closer, error) {
		return endpoint.Nop, nil, nil
	}, nil)
	defer set.Close()

	kept := New(set, RoundRobin())
	for range 10 {
		New(set, Sticky())
	}
	if want, have := 11, set.subscriberCount(); want != have {
		t.Fatalf("subscribers: want %d, have %d", want, have)
	}
	deadline := time.Now().Add(10 * time.Second)
	for set.subscriberCount() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("subscribers after the sticky balancers were dropped: want 1, have %d", set.subscriberCount())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if _, err := kept.Pick(t.Context(), nil); err != nil {
		t.Errorf("the balancer still held: %v", err)
	}
	set.Refresh()
	if want, have := 1, set.subscriberCount(); want != have {
		t.Errorf("subscribers after Refresh: want %d, have %d", want, have)
	}
}

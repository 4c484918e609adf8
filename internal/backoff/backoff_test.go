package backoff_test

import (
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/backoff"
)

func TestCeiling(t *testing.T) {
	p := backoff.Policy{Base: 10 * time.Millisecond, Cap: time.Second}
	for step, want := range map[int]time.Duration{
		-1: 10 * time.Millisecond, 0: 10 * time.Millisecond, 1: 20 * time.Millisecond,
		6: 640 * time.Millisecond, 7: time.Second, 63: time.Second, 1000: time.Second,
	} {
		if have := p.Ceiling(step); have != want {
			t.Errorf("Ceiling(%d) = %v, want %v", step, have, want)
		}
	}
	if have := (backoff.Policy{Base: time.Second}).Ceiling(5); have != time.Second {
		t.Errorf("no cap: Ceiling(5) = %v, want the base", have)
	}
	if have := (backoff.Policy{Cap: time.Second}).Ceiling(5); have != 0 {
		t.Errorf("no base: Ceiling(5) = %v, want 0", have)
	}
}

func TestJitterBounds(t *testing.T) {
	p := backoff.Policy{Base: 8 * time.Millisecond, Cap: 100 * time.Millisecond}
	for step := range 10 {
		c := p.Ceiling(step)
		for range 200 {
			if d := p.Full(step); d < 0 || d >= c {
				t.Fatalf("Full(%d) = %v outside [0, %v)", step, d, c)
			}
			if d := p.Equal(step); d < c/2 || d >= c/2+c {
				t.Fatalf("Equal(%d) = %v outside [%v, %v)", step, d, c/2, c/2+c)
			}
		}
	}
	if d := (backoff.Policy{}).Full(3) + (backoff.Policy{}).Equal(3); d != 0 {
		t.Fatalf("zero policy waited %v", d)
	}
}

package retry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/go-kit/kit/endpoint"

	"github.com/aegis-sdk/kitnats/middleware/breaker"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// gone is a transport's "no responders on the instance's own subject".
type gone struct{ name string }

func (e *gone) Error() string   { return "no responders: " + e.name }
func (e *gone) Gone() bool      { return true }
func (e *gone) Retryable() bool { return true }

// both is a hedged attempt's error when the first request and the backup
// failed: it unwraps to both.
type both struct{ a, b error }

func (e *both) Error() string   { return "both failed" }
func (e *both) Unwrap() []error { return []error{e.a, e.b} }

// TestFreeAttempts: attempts that cost no instance anything — refused by an
// open breaker, or finding no process on an instance's subject — count
// against neither WithMaxAttempts nor the budget, so a call reaches the
// healthy instance behind however many dead or ejected ones come first.
func TestFreeAttempts(t *testing.T) {
	budget, err := retry.NewBudget(0, 0, 1e9)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []any
	for i := range 6 {
		name := fmt.Sprintf("dead-%d", i)
		pairs = append(pairs, name, fails(&gone{name}))
	}
	for i := range 6 {
		name := fmt.Sprintf("open-%d", i)
		pairs = append(pairs, name, fails(fmt.Errorf("wrapped: %w", &breaker.RejectedError{Name: name, Err: errOpen})))
	}
	pairs = append(pairs, "healthy", answers("ok"))
	rec := &recorder{}
	e := mustNew(t, newFake(pairs...), retry.WithMaxAttempts(2), retry.WithBudget(budget), retry.WithObserver(rec.observe))
	resp, err := e(context.Background(), nil)
	if err != nil || resp != "ok" {
		t.Fatalf("want the healthy instance's answer, have %v, %v", resp, err)
	}
	if n := len(rec.attempts); n != 13 {
		t.Errorf("attempts: want 13, have %d", n)
	}
}

// TestFreeAttemptsBounded: an attempt is free only on an instance not
// tried yet, and only when every error it holds is free; the rest count.
func TestFreeAttemptsBounded(t *testing.T) {
	t.Run("tried again", func(t *testing.T) {
		b := newFake("a", fails(&gone{"a"}))
		rec := &recorder{}
		e := mustNew(t, b, retry.WithMaxAttempts(3), retry.WithBackoff(0, 0), retry.WithObserver(rec.observe))
		_, err := e(context.Background(), nil)
		if !errors.Is(err, retry.ErrMaxAttempts) {
			t.Fatalf("want max attempts, have %v", err)
		}
		if n := len(rec.attempts); n != 4 {
			t.Errorf("attempts on the one dead instance: want 1 free and 3 counted, have %d", n)
		}
	})
	t.Run("hedged backup was sent", func(t *testing.T) {
		var pairs []any
		for i := range 5 {
			name := fmt.Sprintf("i%d", i)
			pairs = append(pairs, name, fails(&both{&gone{name}, &transient{"backup"}}))
		}
		rec := &recorder{}
		e := mustNew(t, newFake(pairs...), retry.WithMaxAttempts(3), retry.WithBackoff(0, 0), retry.WithObserver(rec.observe))
		if _, err := e(context.Background(), nil); !errors.Is(err, retry.ErrMaxAttempts) {
			t.Fatalf("want max attempts, have %v", err)
		}
		if n := len(rec.attempts); n != 3 {
			t.Errorf("attempts whose backup was sent: want 3 counted, have %d", n)
		}
	})
	t.Run("at most maxFree", func(t *testing.T) {
		var pairs []any
		for i := range 200 {
			name := fmt.Sprintf("i%d", i)
			pairs = append(pairs, name, endpoint.Endpoint(fails(&gone{name})))
		}
		rec := &recorder{}
		e := mustNew(t, newFake(pairs...), retry.WithMaxAttempts(2), retry.WithBudget(nil), retry.WithObserver(rec.observe))
		if _, err := e(context.Background(), nil); !errors.Is(err, retry.ErrMaxAttempts) {
			t.Fatalf("want max attempts, have %v", err)
		}
		if want, have := retry.MaxFree+2, len(rec.attempts); want != have {
			t.Errorf("attempts over 200 dead instances: want %d, have %d", want, have)
		}
	})
}

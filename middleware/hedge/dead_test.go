package hedge_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/aegis-sdk/kitnats/middleware/hedge"
	"github.com/aegis-sdk/kitnats/middleware/retry"
)

// refused is a breaker's refusal: the request never left.
type refused struct{}

func (refused) Error() string   { return "circuit breaker is open" }
func (refused) Rejected() bool  { return true }
func (refused) Retryable() bool { return true }

// TestBackupPassesTheDead: the first attempt is stuck on an instance that
// crashed with the request in flight; the backup meets an open breaker,
// then an instance with no process, and goes on to a live one, which
// answers the call.
func TestBackupPassesTheDead(t *testing.T) {
	stuck := endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	b := newFake(
		"crashed", stuck,
		"open", endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, refused{} }),
		"gone", endpoint.Endpoint(func(context.Context, any) (any, error) { return nil, goneErr{} }),
		"live", answers("ok"))
	h, err := hedge.New(b, hedge.WithDelay(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(retry.Idempotent(context.Background()), patience)
	defer cancel()
	p, err := h.Pick(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Endpoint(ctx, nil)
	if err != nil || resp != "ok" {
		t.Fatalf("want the live instance's answer, have %v, %v", resp, err)
	}
	if s := h.Stats(); s.Sent != 1 || s.Won != 1 {
		t.Errorf("stats: want one backup sent and won, have %+v", s)
	}
}

// TestBackupHopsBounded: a backup goes on past instances that cost
// nothing to try, but not for ever; the first attempt's answer stands.
func TestBackupHopsBounded(t *testing.T) {
	release := make(chan struct{})
	var pairs []any
	pairs = append(pairs, "slow", endpoint.Endpoint(func(ctx context.Context, _ any) (any, error) {
		<-release
		return "slow", nil
	}))
	calls := 0
	for _, n := range []string{"d1", "d2", "d3", "d4", "d5", "d6"} {
		pairs = append(pairs, n, endpoint.Endpoint(func(context.Context, any) (any, error) {
			calls++
			if calls == 4 {
				close(release)
			}
			return nil, goneErr{}
		}))
	}
	h, err := hedge.New(newFake(pairs...), hedge.WithDelay(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx := retry.Idempotent(context.Background())
	p, _ := h.Pick(ctx, nil)
	resp, err := p.Endpoint(ctx, nil)
	if err != nil || resp != "slow" {
		t.Fatalf("want the first attempt's answer, have %v, %v", resp, err)
	}
	if calls != 4 {
		t.Errorf("backup hops: want 4, have %d", calls)
	}
}

// goneErr is no responders on an instance's own subject.
type goneErr struct{}

func (goneErr) Error() string   { return "no responders" }
func (goneErr) Gone() bool      { return true }
func (goneErr) Retryable() bool { return true }

package natsrpc

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestLazyDeadline(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	d := time.Now().Add(time.Hour)
	ctx := withLazyDeadline(parent, d)
	if have, ok := ctx.Deadline(); !ok || !have.Equal(d) {
		t.Errorf("Deadline: want %v, have %v %v", d, have, ok)
	}
	if have := ctx.Value(ctxKey{}); have != "v" {
		t.Errorf("Value: want v, have %v", have)
	}
	if err := ctx.Err(); err != nil {
		t.Errorf("Err before deadline: %v", err)
	}
	select {
	case <-ctx.Done():
		t.Error("Done closed before the deadline")
	default:
	}
	ctx.release()
	<-ctx.Done() // released: closed, as a cancel func would
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err after release: want Canceled, have %v", ctx.Err())
	}

	past := withLazyDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	if !errors.Is(past.Err(), context.DeadlineExceeded) {
		t.Errorf("Err past deadline (no Done yet): want DeadlineExceeded, have %v", past.Err())
	}
	<-past.Done()
	if !errors.Is(past.Err(), context.DeadlineExceeded) {
		t.Errorf("Err past deadline: want DeadlineExceeded, have %v", past.Err())
	}
	past.release()

	pctx, cancel := context.WithCancel(context.Background())
	child := withLazyDeadline(pctx, time.Now().Add(time.Hour))
	cancel()
	if !errors.Is(child.Err(), context.Canceled) {
		t.Errorf("parent cancelled: want Canceled, have %v", child.Err())
	}
	<-child.Done()
	child.release()
}

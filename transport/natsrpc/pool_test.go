package natsrpc

import (
	"testing"
	"time"
)

// poolRig is a pool with recorded refusals and drops, and no server.
type poolRig struct {
	*pool
	refused map[int]int
	dropped []*job
}

func newRig(max, pending, methods int) *poolRig {
	r := &poolRig{refused: map[int]int{}}
	r.pool = newPool(max, pending, methods,
		func(_ *job, code int, _ string) { r.refused[code]++ },
		func(j *job) { r.dropped = append(r.dropped, j) })
	return r
}

// req is a request of lane i that arrived at now with budget left (0: no
// deadline).
func (r *poolRig) req(i int, now time.Time, budget time.Duration) *job {
	j := &job{lane: r.lanes[i], recv: now, start: now}
	if budget > 0 {
		j.deadline = now.Add(budget)
	}
	return j
}

func TestReserveFor(t *testing.T) {
	for _, tc := range []struct{ max, methods, want int }{
		{64, 1, 0},  // one method has nobody to be isolated from
		{64, 2, 8},  // a quarter of the pool, shared equally
		{64, 4, 4},  //
		{64, 20, 1}, // at least one each...
		{64, 64, 1}, //
		{4, 2, 1},   //
		{3, 4, 0},   // ...when there are enough tokens for one each
	} {
		if have := reserveFor(tc.max, tc.methods); have != tc.want {
			t.Errorf("reserveFor(%d, %d): want %d, have %d", tc.max, tc.methods, tc.want, have)
		}
	}
}

// A flooded method takes every token but the siblings' reserves; a sibling
// starts its reserve's worth at once and borrows nothing more; tokens come
// back to whoever may use them.
func TestPoolReservesForSiblings(t *testing.T) {
	r := newRig(8, 4, 2) // reserve 1 each
	now := time.Now()
	var running []*job
	for range 7 {
		j := r.req(0, now, 0)
		if !r.admit(j) {
			t.Fatalf("flooded lane: request %d did not start", len(running)+1)
		}
		running = append(running, j)
	}
	if r.admit(r.req(0, now, 0)) {
		t.Fatal("flooded lane took the sibling's reserve")
	}
	sib := r.req(1, now, 0)
	if !r.admit(sib) {
		t.Fatal("sibling could not start within its reserve")
	}
	if r.admit(r.req(1, now, 0)) {
		t.Fatal("sibling borrowed beyond a full pool")
	}
	// Lane 0 has one queued, lane 1 one queued. A token of lane 0 goes round
	// robin to a lane that may borrow; lane 1's token goes back to lane 1
	// only when it falls under its reserve.
	if next := r.done(sib, now); next == nil || next.lane != r.lanes[1] {
		t.Fatalf("sibling's token: want lane 1's queued request, have %+v", next)
	}
	next := r.done(running[0], now)
	if next == nil || next.lane != r.lanes[0] {
		t.Fatalf("flooded lane's token: want lane 0's queued request, have %+v", next)
	}
	if r.running != 8 || r.held.Load() != 8 {
		t.Errorf("want 8 tokens held, have %d (held %d)", r.running, r.held.Load())
	}
}

// Requests over the queue, or whose wait would outlast their deadline at
// the measured service time, are refused at once; requests whose deadline
// passed in the queue are dropped, never returned to run.
func TestPoolAdmission(t *testing.T) {
	r := newRig(1, 2, 1)
	now := time.Now()
	first := r.req(0, now, time.Second)
	if !r.admit(first) {
		t.Fatal("first request did not start")
	}
	// No service time measured yet: the queue takes what fits.
	a, b := r.req(0, now, 10*time.Millisecond), r.req(0, now, time.Hour)
	if r.admit(a) || r.admit(b) {
		t.Fatal("queued requests started past the bound")
	}
	if r.admit(r.req(0, now, time.Hour)); r.refused[CodeUnavailable] != 1 {
		t.Fatalf("full queue: want one 503, have %v", r.refused)
	}
	// first held its token 100 ms; a's deadline passed meanwhile.
	later := now.Add(100 * time.Millisecond)
	if next := r.done(first, later); next != b {
		t.Fatalf("want b next (a expired), have %+v", next)
	}
	if len(r.dropped) != 1 || r.dropped[0] != a {
		t.Fatalf("want a dropped, have %v", r.dropped)
	}
	// Measured: 100 ms per request. With one request queued (c), a
	// newcomer waits two turns of 100 ms and takes 100 ms itself: 350 ms
	// left is enough, 250 ms is not.
	c := r.req(0, later, time.Hour)
	if r.admit(c) {
		t.Fatal("c started past the bound")
	}
	if r.admit(r.req(0, later, 250*time.Millisecond)); r.refused[CodeUnavailable] != 2 {
		t.Fatalf("backlog outlasting the deadline: want a second 503, have %v", r.refused)
	}
	if d := r.req(0, later, 350*time.Millisecond); r.admit(d) || r.refused[CodeUnavailable] != 2 {
		t.Fatalf("a request that fits: want it queued, have %v", r.refused)
	}
	// Shutdown refuses what is queued, and everything after.
	r.stop()
	if r.refused[CodeUnavailable] != 4 {
		t.Fatalf("stop: want the two queued requests refused, have %v", r.refused)
	}
	if r.admit(r.req(0, later, 0)) || r.refused[CodeUnavailable] != 5 {
		t.Fatalf("after stop: want a refusal, have %v", r.refused)
	}
	if next := r.done(b, later); next != nil {
		t.Fatalf("after stop: want nothing to run, have %+v", next)
	}
	if r.held.Load() != 0 || r.running != 0 {
		t.Errorf("want nothing held, have %d (%d running)", r.held.Load(), r.running)
	}
}

// With fewer tokens than methods there is nothing to reserve: lanes share
// the pool in turns.
func TestPoolSharesInTurnsWithoutReserve(t *testing.T) {
	r := newRig(1, 4, 3)
	now := time.Now()
	first := r.req(0, now, 0)
	if !r.admit(first) {
		t.Fatal("first request did not start")
	}
	for i := range 3 {
		r.admit(r.req(i, now, 0))
	}
	var order []*lane
	for j := r.done(first, now); j != nil; j = r.done(j, now) {
		order = append(order, j.lane)
	}
	if len(order) != 3 || order[0] == order[1] || order[1] == order[2] || order[0] == order[2] {
		t.Errorf("want one request of each lane in turn, have %v", order)
	}
}

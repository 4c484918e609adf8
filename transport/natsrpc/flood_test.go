package natsrpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

type floodReq struct {
	// Deadline is the caller's deadline in Unix nanoseconds: the test runs
	// client and server in one process, on one clock.
	Deadline int64  `json:"deadline"`
	Pad      string `json:"pad,omitempty"`
}

type floodResp struct{}

// A flood of a blocking method at 10× the service's concurrency: a sibling
// method on the same Service keeps serving, the server's goroutines and
// heap stay bounded, requests whose deadline passed while they waited are
// dropped unrun and counted, and every caller gets a 503 or a deadline
// error, never a hang. Counts only, no durations: the box is shared.
func TestFloodOfOneMethodSparesItsSibling(t *testing.T) {
	const (
		workers   = 4
		flooders  = 10 * workers
		pending   = 8
		padding   = 16 << 10 // bytes per flood request: a backlog would show in the heap
		pingers   = 2
		pingGoal  = 200 // the sibling's successes after which the flood may stop...
		pingFloor = 100 // ...and the least it must reach
		floodMin  = 1500 * time.Millisecond
		floodMax  = 10 * time.Second
		blockFor  = 500 * time.Millisecond // the flood callers' timeout
	)
	e := newEnv(t)

	var invoked, late, lateCaller atomic.Int64
	release := make(chan struct{})
	// Checked as the request enters the Server, before its body is decoded.
	started := natsrpc.WithBefore(func(ctx context.Context, _ *nats.Msg) context.Context {
		invoked.Add(1)
		if ctx.Err() != nil {
			late.Add(1) // started past the deadline the service knew
		}
		return ctx
	})
	block := natsrpc.NewJSONServer(func(ctx context.Context, r floodReq) (floodResp, error) {
		if time.Now().UnixNano() > r.Deadline {
			lateCaller.Add(1) // run for a caller who had already given up
		}
		select {
		case <-release:
		case <-ctx.Done():
			return floodResp{}, ctx.Err()
		}
		return floodResp{}, nil
	}, started)
	ping := natsrpc.NewJSONServer(func(context.Context, floodReq) (floodResp, error) { return floodResp{}, nil })
	svc, err := natsrpc.NewService(ctxWait(t), e.snc, "flood", "a",
		map[string]*natsrpc.Server{"block": block, "ping": ping},
		natsrpc.WithMaxConcurrent(workers), natsrpc.WithMaxPending(pending))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	blockClient, _ := natsrpc.NewServiceClient(e.cnc, "flood", "block", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[floodResp])
	pingClient, _ := natsrpc.NewServiceClient(e.cnc, "flood", "ping", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[floodResp])

	baseGoroutines := runtime.NumGoroutine()
	baseHeap := liveHeap()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, unavailable, deadline atomic.Int64
	pad := strings.Repeat("x", padding)
	for range flooders {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), blockFor)
				dl, _ := ctx.Deadline()
				sent.Add(1)
				_, err := blockClient.Endpoint()(ctx, floodReq{Deadline: dl.UnixNano(), Pad: pad})
				cancel()
				var re *natsrpc.Error
				switch {
				case errors.As(err, &re) && re.Code == natsrpc.CodeUnavailable && re.Retryable():
					unavailable.Add(1)
					time.Sleep(5 * time.Millisecond) // as a client with nowhere else to go
				case errors.Is(err, context.DeadlineExceeded):
					deadline.Add(1)
				default:
					t.Errorf("flood call: want a 503 or a deadline error, have %v", err)
					return
				}
			}
		})
	}

	var pinged, pingFailed atomic.Int64
	for range pingers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				_, err := pingClient.Endpoint()(ctx, floodReq{Deadline: time.Now().Add(wait).UnixNano()})
				cancel()
				if err != nil {
					pingFailed.Add(1)
					t.Errorf("sibling call during the flood: %v", err)
					return
				}
				pinged.Add(1)
			}
		})
	}

	// Sample goroutines and the live heap while the flood runs.
	var maxGoroutines int
	var maxHeap uint64
	start := time.Now()
	for {
		time.Sleep(100 * time.Millisecond)
		maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
		maxHeap = max(maxHeap, liveHeap())
		since := time.Since(start)
		if since > floodMax || since > floodMin && pinged.Load() >= pingGoal || t.Failed() {
			break
		}
	}
	close(stop)
	joined := make(chan struct{})
	go func() { wg.Wait(); close(joined) }()
	select {
	case <-joined:
	case <-time.After(wait):
		t.Fatal("callers hang")
	}
	close(release)

	// Every flood request the service received was run, refused, or dropped
	// as expired: once the last ones are through, the counts add up. (The
	// callers may have sent more: nats.go drops what a full delivery buffer
	// cannot take, counted as dropped, and a caller whose budget ran out
	// before the send sends nothing.)
	var stats map[string]uint64
	settled := ctxWait(t)
	for {
		stats = methodStats(t, svc, "block")
		if int64(stats["rejected"]+stats["expired"])+invoked.Load() == int64(stats["requests"]) {
			break
		}
		select {
		case <-settled.Done():
			t.Fatalf("received %d ≠ run %d + rejected %d + expired %d",
				stats["requests"], invoked.Load(), stats["rejected"], stats["expired"])
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("flood: sent %d, received %d, run %d (past the deadline: %d by the service's clock, %d by the caller's), rejected %d, expired %d, dropped %d; callers saw %d×503, %d deadline errors",
		sent.Load(), stats["requests"], invoked.Load(), late.Load(), lateCaller.Load(), stats["rejected"], stats["expired"], stats["dropped"], unavailable.Load(), deadline.Load())
	t.Logf("sibling: %d successes, %d failures", pinged.Load(), pingFailed.Load())
	t.Logf("goroutines: %d before, %d at most during; live heap: %d KiB before, %d KiB at most during",
		baseGoroutines, maxGoroutines, baseHeap>>10, maxHeap>>10)

	if have := pinged.Load(); have < pingFloor {
		t.Errorf("sibling method: want ≥ %d successes during the flood, have %d", pingFloor, have)
	}
	// The flood must be shed, not queued without bound: refused at once with
	// 503 (admission saw the backlog would outlast the deadline) and, when a
	// request was admitted and then waited past its deadline, dropped as
	// expired. How the shedding splits between the two depends on timing
	// (on a loaded machine admission may refuse every one of them), so only
	// the refusals are required.
	if unavailable.Load() == 0 {
		t.Errorf("want the flood refused with 503, have %d expired, %d×503", stats["expired"], unavailable.Load())
	}
	// A request starts only while its deadline holds, checked when it takes
	// a worker; one that takes a worker in the last instant may enter the
	// Server just after. By the caller's clock, which started before the
	// request crossed the network, a few more are late; a backlog run for
	// callers who have gone would make nearly all of them late.
	if l, n := late.Load(), invoked.Load(); l*10 > n+10 {
		t.Errorf("%d of %d flood requests ran after their deadline", l, n)
	}
	if l, n := lateCaller.Load(), invoked.Load(); l*2 > n+10 {
		t.Errorf("%d of %d flood requests ran after their caller's deadline", l, n)
	}
	// Our callers, the service's workers, and a margin for nats and the
	// runtime: no goroutine per request.
	if delta := maxGoroutines - baseGoroutines; delta > flooders+pingers+workers+32 {
		t.Errorf("goroutines grew by %d during the flood", delta)
	}
	// The pool holds at most pending requests per method and one per
	// worker; the callers hold one each. Generous: -race and the embedded
	// server's own buffers.
	if growth := int64(maxHeap) - int64(baseHeap); growth > 64<<20 {
		t.Errorf("live heap grew by %d MiB during the flood", growth>>20)
	}
}

// liveHeap is the heap still reachable after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// methodStats adds up the EndpointStats of one method's endpoints, and
// their requests received ("requests").
func methodStats(t *testing.T, svc *natsrpc.Service, method string) map[string]uint64 {
	t.Helper()
	sum := map[string]uint64{}
	for _, ep := range natsrpc.StatsOf(svc).Endpoints {
		if ep.Name != method {
			continue
		}
		var data map[string]uint64
		if err := json.Unmarshal(ep.Data, &data); err != nil {
			t.Fatalf("stats data %s: %v", ep.Data, err)
		}
		for k, v := range data {
			sum[k] += v
		}
		sum["requests"] += uint64(ep.NumRequests)
	}
	return sum
}

package transports

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Step is something that happens to the fleet while the load runs.
type Step struct {
	At   time.Duration // from the start of the load
	Name string
	Do   func(ctx context.Context) error
}

// Report counts the calls of a load.
type Report struct {
	Calls, Failed int64
	ByInstance    map[string]int64 // successful calls by the instance that answered
	Errors        []string         // the first few failures
	Steps         []string         // what happened, in order
}

func (r Report) String() string {
	ids := make([]string, 0, len(r.ByInstance))
	for id := range r.ByInstance {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	fmt.Fprintf(&b, "calls %d, failed %d\n", r.Calls, r.Failed)
	for _, id := range ids {
		fmt.Fprintf(&b, "  %-12s %d\n", id, r.ByInstance[id])
	}
	for _, s := range r.Steps {
		fmt.Fprintf(&b, "  step: %s\n", s)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error: %s\n", e)
	}
	return b.String()
}

// CallTimeout bounds every call of a load.
const CallTimeout = 5 * time.Second

// Run calls call from workers goroutines for d, running the steps at their
// times meanwhile, one after another. The load goes on until d has passed
// and, however long the steps took, for d/5 after the last one, so that
// what a step brought back is called. call returns the ID of the instance
// that answered. It stops early when ctx ends.
func Run(ctx context.Context, d time.Duration, workers int, call func(context.Context) (string, error), steps ...Step) Report {
	load, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu  sync.Mutex
		rep = Report{ByInstance: map[string]int64{}}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for load.Err() == nil {
				// A call started is let finish: the load's end is not a failure.
				cctx, ccancel := context.WithTimeout(context.WithoutCancel(load), CallTimeout)
				id, err := call(cctx)
				ccancel()
				mu.Lock()
				rep.Calls++
				if err != nil {
					rep.Failed++
					if len(rep.Errors) < 10 {
						rep.Errors = append(rep.Errors, err.Error())
					}
				} else {
					rep.ByInstance[id]++
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	wait := func(until time.Time) {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	for _, s := range steps {
		wait(start.Add(s.At))
		if ctx.Err() != nil {
			break
		}
		err := s.Do(context.WithoutCancel(ctx))
		line := fmt.Sprintf("%6.2fs %s", time.Since(start).Seconds(), s.Name)
		if err != nil {
			line += ": " + err.Error()
		}
		mu.Lock()
		rep.Steps = append(rep.Steps, line)
		mu.Unlock()
	}
	wait(time.Now().Add(d / 5))
	wait(start.Add(d))
	stop()
	wg.Wait()
	return rep
}

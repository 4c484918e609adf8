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
// times meanwhile. call returns the ID of the instance that answered.
func Run(ctx context.Context, d time.Duration, workers int, call func(context.Context) (string, error), steps ...Step) Report {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu  sync.Mutex
		rep = Report{ByInstance: map[string]int64{}}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), CallTimeout)
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
	for _, s := range steps {
		select {
		case <-time.After(time.Until(start.Add(s.At))):
		case <-ctx.Done():
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
	wg.Wait()
	return rep
}

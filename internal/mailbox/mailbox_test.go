package mailbox_test

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/aegis-sdk/kitnats/internal/mailbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLatestKeepsNewest(t *testing.T) {
	box := mailbox.NewLatest[int]()
	if _, ok := box.Take(); ok {
		t.Fatal("a new box holds a value")
	}
	box.Put(1)
	box.Put(2)
	<-box.Ready()
	if v, ok := box.Take(); !ok || v != 2 {
		t.Fatalf("Take = %d, %v; want 2, true", v, ok)
	}
	box.Update(func(held int, has bool) int {
		if has {
			t.Errorf("update saw a held value in an emptied box")
		}
		return 5
	})
	box.Update(func(held int, has bool) int { return held + 1 })
	if v, _ := box.Take(); v != 6 {
		t.Fatalf("merged value %d, want 6", v)
	}
}

// A receiver that never reads must not block the producer, and Stop must not
// wait for it.
func TestForwarderNeverBlocks(t *testing.T) {
	ch := make(chan int)
	f := mailbox.Forward[int](ch)
	for i := range 10000 {
		f.Offer(i)
	}
	f.Stop()
	f.Stop()
	f.Offer(1) // after Stop: dropped, not blocked
}

// A slow receiver gets the newest value, and every value it gets is newer
// than the one before.
func TestForwarderDeliversNewest(t *testing.T) {
	ch := make(chan int)
	f := mailbox.Forward[int](ch)
	defer f.Stop()
	const last = 5000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= last; i++ {
			f.Offer(i)
		}
	}()
	prev := 0
	timeout := time.After(30 * time.Second)
	for prev != last {
		select {
		case v := <-ch:
			if v <= prev {
				t.Fatalf("received %d after %d", v, prev)
			}
			prev = v
			time.Sleep(time.Microsecond) // a receiver slower than the producer
		case <-timeout:
			t.Fatalf("the newest value never arrived; last received %d", prev)
		}
	}
	wg.Wait()
}

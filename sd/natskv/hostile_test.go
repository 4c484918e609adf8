package natskv_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// hostileRecord is the record that once took seconds to decode: a
// lastHeartbeat of spaces, as long as a record may be.
func hostileRecord(svc, id string) []byte {
	return []byte(`{"serviceName":"` + svc + `","instanceId":"` + id + `","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"` +
		strings.Repeat(" ", 64<<10-200) + `"}`)
}

// blocker holds the decoding of a service's records in the watch's
// decode hook until released: a record as slow to read as one can be.
type blocker struct {
	prefix  string
	on      atomic.Bool
	entered chan string
	release chan struct{}
	once    sync.Once
}

func newBlocker(service string) *blocker {
	return &blocker{prefix: "service-instances." + service + ".", entered: make(chan string, 64), release: make(chan struct{})}
}

func (b *blocker) hook(key string) {
	if b.on.Load() && strings.HasPrefix(key, b.prefix) {
		b.entered <- key
		<-b.release
	}
}

func (b *blocker) open() { b.once.Do(func() { close(b.release) }) }

func idsOf(in []natskv.Instance) []string {
	var out []string
	for _, i := range in {
		out = append(out, i.InstanceID)
	}
	slices.Sort(out)
	return out
}

// A record of one service is decoded outside every lock the watch shares:
// while the watch's consumer is held up reading a record of "bad" (a live
// write), an Instancer of "good" is made and has its set; so does one made
// while "bad"'s first load is held up the same way (a direct get).
func TestHostileRecordCostsItsOwnService(t *testing.T) {
	for _, path := range []string{"live write", "direct get"} {
		t.Run(path, func(t *testing.T) {
			_, b := newBucket(t, natskv.BucketConfig{})
			blk := newBlocker("bad")
			natskv.SetDecodeHook(b, blk.hook)
			defer blk.open()
			put(t, b, "bad", "b1", natskv.StatusActive)
			put(t, b, "good", "g1", natskv.StatusActive)
			put(t, b, "other", "o1", natskv.StatusActive)
			newInstancer(t, b, "other") // the watch runs: later services are loaded by direct gets
			ctx := ctxT(t)
			cs := make(changes, 64)
			badDone := make(chan *natskv.Instancer, 1)
			blk.on.Store(true)
			if path == "live write" {
				blk.on.Store(false)
				badDone <- newInstancer(t, b, "bad", cs.opt())
				blk.on.Store(true)
				if _, err := b.KeyValue().Put(ctx, "service-instances.bad.b2", hostileRecord("bad", "b2")); err != nil {
					t.Fatal(err)
				}
			} else {
				go func() {
					i, err := natskv.NewInstancerContext(ctx, b, "bad", nil, cs.opt())
					if err != nil {
						t.Error(err)
					}
					badDone <- i
				}()
			}
			select {
			case <-blk.entered: // the watch is reading one of bad's records, and will until released
			case <-time.After(waitFor):
				t.Fatal("bad's record was never decoded")
			}
			good := newInstancer(t, b, "good")
			if have := idsOf(good.Instances()); !slices.Equal(have, []string{"g1"}) {
				t.Fatalf("good's Instancer returned with %v while bad's record was being read; want g1", have)
			}
			blk.open()
			bad := <-badDone
			if bad == nil {
				t.Fatal("no Instancer of bad")
			}
			defer bad.Stop()
			if path == "live write" {
				c := cs.wait(t, "service-instances.bad.b2", natskv.ChangeSkipped)
				if c.Err == nil || len(c.Err.Error()) > 512 {
					t.Fatalf("skipped: %v", c.Err)
				}
			}
			eventually(t, "bad offers b1", func() error {
				if have := idsOf(bad.Instances()); !slices.Equal(have, []string{"b1"}) {
					return fmt.Errorf("bad offers %v", have)
				}
				return nil
			})
		})
	}
}

// BenchmarkNewInstancerBesideHostileRecords measures what the brief asks
// of hostile records: a second service's NewInstancer, from start to its
// set, while another service's records are rewritten in a loop, as
// heartbeats rewrite them — typical records beside records as slow to read
// as a record can be (a 64 KiB lastHeartbeat of spaces).
func BenchmarkNewInstancerBesideHostileRecords(b *testing.B) {
	for _, kind := range []string{"typical", "hostile"} {
		b.Run(kind, func(b *testing.B) {
			_, bk := newBucket(b, natskv.BucketConfig{})
			for n := range 3 {
				put(b, bk, "good", fmt.Sprintf("g%d", n), natskv.StatusActive)
			}
			bad := newInstancer(b, bk, "bad")
			_ = bad
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			var writes atomic.Int64
			go func() { // a writer of bad's records, as fast as the server takes them
				defer wg.Done()
				for n := 0; ctx.Err() == nil; n++ {
					data := hostileRecord("bad", fmt.Sprintf("b%d", n%16))
					if kind == "typical" {
						in := inst("bad", fmt.Sprintf("b%d", n%16))
						in.LastHeartbeat = time.Now()
						data, _ = natskv.EncodeInstance(in)
					}
					if _, err := bk.KeyValue().Put(ctx, fmt.Sprintf("service-instances.bad.b%d", n%16), data); err == nil {
						writes.Add(1)
					}
				}
			}()
			time.Sleep(100 * time.Millisecond) // the writes under way
			b.ResetTimer()
			for b.Loop() {
				i, err := natskv.NewInstancerContext(ctxT(b), bk, "good", nil)
				if err != nil {
					b.Fatal(err)
				}
				if len(i.Instances()) != 3 {
					b.Fatalf("good: %v", i.Instances())
				}
				i.Stop()
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			b.ReportMetric(float64(writes.Load()), "bad-writes")
		})
	}
}

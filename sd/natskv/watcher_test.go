package natskv_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/lb"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// put writes svc/id's record straight to the bucket.
func put(t testing.TB, b *natskv.Bucket, svc, id string, status natskv.Status) {
	t.Helper()
	in := inst(svc, id)
	in.Status = status
	in.LastHeartbeat = time.Now()
	data, err := natskv.EncodeInstance(in)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := natskv.LayoutDotted.Key(svc, id)
	if _, err := b.KeyValue().Put(ctxT(t), key, data); err != nil {
		t.Fatal(err)
	}
}

// fill writes per instances of each service, "i0".."i<per-1>", at once.
func fill(t testing.TB, b *natskv.Bucket, l natskv.Layout, services []string, per int) {
	t.Helper()
	js := b.JetStream()
	for _, svc := range services {
		for n := range per {
			in := inst(svc, fmt.Sprintf("i%d", n))
			in.LastHeartbeat = time.Now()
			data, _ := natskv.EncodeInstance(in)
			key, _ := l.Key(svc, in.InstanceID)
			if _, err := js.PublishAsync("$KV."+b.Name()+"."+key, data); err != nil {
				t.Fatal(err)
			}
			if n%500 == 499 { // a bounded number in flight
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctxT(t).Done():
		t.Fatal("publish timed out")
	}
}

func ids(per int) []string {
	out := make([]string, per)
	for n := range out {
		out[n] = fmt.Sprintf("i%d", n)
	}
	slices.Sort(out)
	return out
}

// consumers lists the consumers on the bucket's stream.
func consumers(t testing.TB, b *natskv.Bucket) []*jetstream.ConsumerInfo {
	t.Helper()
	s, err := b.JetStream().Stream(ctxT(t), "KV_"+b.Name())
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.ConsumerInfo
	l := s.ListConsumers(ctxT(t))
	for ci := range l.Info() {
		out = append(out, ci)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// bindOwn binds the bucket on a connection of its own, as a separate client
// process would.
func bindOwn(t testing.TB, s *natstest.Server, b *natskv.Bucket) *natskv.Bucket {
	t.Helper()
	ob, err := natskv.BindBucket(ctxT(t), natstest.JetStream(t, natstest.Connect(t, s.URL())), b.Name())
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

// Instancers of one process share one consumer, whatever the services;
// a second Instancer of a service has its set at once; the filter follows
// the services watched; the last Stop deletes the consumer.
func TestOneWatchPerBucket(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	fill(t, wb, natskv.LayoutDotted, []string{"a", "b", "c"}, 3)
	ia := newInstancer(t, b, "a")
	ib := newInstancer(t, b, "b")
	ia2, err := natskv.NewInstancer(b, "a", nil, natskv.WithExcludeStandby(), natskv.WithReadyWait(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []*natskv.Instancer{ia, ib, ia2} {
		ch := make(chan sd.Event, 1)
		i.Register(ch)
		select { // delivered before Register returned
		case ev := <-ch:
			if !slices.Equal(ev.Instances, ids(3)) {
				t.Fatalf("%v: %v", i, ev)
			}
		default:
			t.Fatalf("%p: no set when Register returned", i)
		}
		i.Deregister(ch)
	}
	cs := consumers(t, b)
	if len(cs) != 1 {
		t.Fatalf("want one consumer, have %d", len(cs))
	}
	if f := cs[0].Config.FilterSubjects; len(f) != 2 {
		t.Fatalf("filter: want a and b, have %v", f)
	}
	cha, cha2, chb := subscribe(t, ia), subscribe(t, ia2), subscribe(t, ib)
	put(t, wb, "a", "i1", natskv.StatusStandby)
	waitSet(t, cha2, "i0", "i2")
	waitSet(t, cha, ids(3)...)
	put(t, wb, "b", "i9", natskv.StatusActive)
	waitSet(t, chb, append(ids(3), "i9")...)
	// A service followed anew while the watch runs is loaded at once.
	ic := newInstancer(t, b, "c")
	if have := len(ic.Instances()); have != 3 {
		t.Fatalf("c: want 3 instances when NewInstancer returns, have %d", have)
	}
	eventually(t, "filter with c", func() error {
		if f := consumers(t, b)[0].Config.FilterSubjects; len(f) != 3 {
			return fmt.Errorf("filter %v", f)
		}
		return nil
	})
	put(t, wb, "c", "i7", natskv.StatusActive)
	waitSet(t, subscribe(t, ic), append(ids(3), "i7")...)
	// The last view of a service stops: the filter drops it; the others
	// go on.
	ib.Stop()
	ia2.Stop()
	eventually(t, "filter without b", func() error {
		if f := consumers(t, b)[0].Config.FilterSubjects; len(f) != 2 {
			return fmt.Errorf("filter %v", f)
		}
		return nil
	})
	put(t, wb, "a", "i5", natskv.StatusActive)
	waitSet(t, cha, "i0", "i1", "i2", "i5")
	ia.Stop()
	ic.Stop()
	eventually(t, "no consumer after the last Stop", func() error {
		if n := len(consumers(t, b)); n != 0 {
			return fmt.Errorf("%d consumers", n)
		}
		return nil
	})
}

// go-kit's sd.NewEndpointer and round robin, and kitnats' lb.EndpointSet,
// serve their first call right after construction: NewInstancer returns
// with the set, and Register hands it over before it returns.
func TestEndpointerFirstCall(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	services := []string{"s0", "s1", "s2", "s3", "s4"}
	fill(t, wb, natskv.LayoutDotted, services, 2)
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return instance, nil }, nil, nil
	}
	keep := newInstancer(t, b, "s0") // s0 is followed throughout
	_ = keep
	for n := range 100 {
		svc := services[n%len(services)] // s0: followed; the others: new each time
		// The default wait is 2 s; the test's is longer, for a loaded machine.
		i, err := natskv.NewInstancer(b, svc, nil, natskv.WithReadyWait(waitFor))
		if err != nil {
			t.Fatal(err)
		}
		var e sd.Endpointer
		if n%2 == 0 {
			de := sd.NewEndpointer(i, factory, log.NewNopLogger())
			defer de.Close()
			e = de
		} else {
			set := lb.NewEndpointSet(i, factory, nil)
			defer set.Close()
			e = set
		}
		ep, err := kitlb.NewRoundRobin(e).Endpoint()
		if err != nil {
			t.Fatalf("round %d (%s): first call: %v", n, svc, err)
		}
		if resp, err := ep(context.Background(), nil); err != nil || (resp != "i0" && resp != "i1") {
			t.Fatalf("round %d: %v %v", n, resp, err)
		}
		i.Stop()
	}
}

// 500 Instancers over 200 services, created and stopped in random order
// from several goroutines: each has its set when NewInstancer returns, and
// nothing is left behind (goroutines: goleak in TestMain; the consumer).
func TestManyViewsRandomOrder(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	const nServices, nViews, per = 200, 500, 2
	services := make([]string, nServices)
	for n := range services {
		services[n] = fmt.Sprintf("svc%03d", n)
	}
	fill(t, wb, natskv.LayoutDotted, services, per)
	order := rand.Perm(nViews)
	views := make([]*natskv.Instancer, nViews)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				i, err := natskv.NewInstancer(b, services[k%nServices], nil, natskv.WithReadyWait(waitFor))
				if err != nil {
					t.Error(err)
					continue
				}
				views[k] = i
				ch := make(chan sd.Event, 1)
				i.Register(ch)
				select {
				case ev := <-ch:
					if !slices.Equal(ev.Instances, ids(per)) {
						t.Errorf("view %d: %v", k, ev)
					}
				default:
					t.Errorf("view %d: no set when Register returned", k)
				}
				i.Deregister(ch)
				if rand.IntN(4) == 0 { // some stop while others start
					i.Stop()
				}
			}
		}()
	}
	for _, k := range order {
		work <- k
	}
	close(work)
	wg.Wait()
	if n := len(consumers(t, b)); n != 1 {
		t.Fatalf("want one consumer, have %d", n)
	}
	// The survivors are current.
	put(t, wb, services[7], "new", natskv.StatusActive)
	for k, i := range views {
		if i != nil && k%nServices == 7 {
			eventually(t, "update seen", func() error {
				if n := len(i.Instances()); n != per+1 && !stopped(i) {
					return fmt.Errorf("view %d: %d instances", k, n)
				}
				return nil
			})
		}
	}
	stopOrder := rand.Perm(nViews)
	work = make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if views[k] != nil {
					views[k].Stop()
				}
			}
		}()
	}
	for _, k := range stopOrder {
		work <- k
	}
	close(work)
	wg.Wait()
	eventually(t, "no consumer left", func() error {
		if n := len(consumers(t, b)); n != 0 {
			return fmt.Errorf("%d consumers", n)
		}
		return nil
	})
}

// stopped reports whether Refresh says i is stopped.
func stopped(i *natskv.Instancer) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return i.Refresh(ctx) == natskv.ErrStopped
}

// A server restart with 100 live views over 50 services: every view gets
// the error, keeps its set, and is current again after recovery.
func TestServerRestartManyViews(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	const nServices = 50
	services := make([]string, nServices)
	for n := range services {
		services[n] = fmt.Sprintf("svc%02d", n)
	}
	fill(t, wb, natskv.LayoutDotted, services, 1)
	var chans []chan sd.Event
	var views []*natskv.Instancer
	for n := range 100 {
		i := newInstancer(t, b, services[n%nServices])
		views = append(views, i)
		ch := subscribe(t, i)
		waitSet(t, ch, "i0")
		chans = append(chans, ch)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	for n, ch := range chans {
		if err := waitErr(t, ch); err == nil {
			t.Fatalf("view %d: want an error event", n)
		}
		if len(views[n].Instances()) != 1 {
			t.Fatalf("view %d: the last set is kept while the watch is down", n)
		}
	}
	for _, svc := range services {
		eventually(t, "write after restart", func() error {
			in := inst(svc, "i1")
			in.LastHeartbeat = time.Now()
			data, _ := natskv.EncodeInstance(in)
			_, err := wb.KeyValue().Put(ctxT(t), "service-instances."+svc+".i1", data)
			return err
		})
	}
	for n, ch := range chans {
		waitSet(t, ch, "i0", "i1")
		_ = n
	}
	if n := len(consumers(t, b)); n != 1 {
		t.Fatalf("want one consumer after recovery, have %d", n)
	}
}

// A service followed anew while its records are being rewritten ends up
// with the last write, whatever the interleaving of its direct get, the
// filter update and the consumer's records.
func TestNewServiceUnderWrites(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	fill(t, wb, natskv.LayoutDotted, []string{"keep", "hot"}, 1)
	keep := newInstancer(t, b, "keep")
	_ = keep
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // rewrites hot/i1 as fast as it can, alternating its status
		defer close(done)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			in := inst("hot", "i1")
			if n%2 == 1 {
				in.Status = natskv.StatusUnhealthy
			}
			in.LastHeartbeat = time.Now()
			data, _ := natskv.EncodeInstance(in)
			wb.KeyValue().Put(context.Background(), "service-instances.hot.i1", data)
		}
	}()
	var views []*natskv.Instancer
	for range 30 {
		i := newInstancer(t, b, "hot")
		views = append(views, i)
		time.Sleep(5 * time.Millisecond)
		if len(views) > 3 {
			views[0].Stop() // the service is dropped and followed again, now and then
			views = views[1:]
		}
	}
	close(stop)
	<-done
	put(t, wb, "hot", "i1", natskv.StatusActive) // the last write
	for _, i := range views {
		eventually(t, "last write", func() error {
			if n := len(i.Instances()); n != 2 {
				return fmt.Errorf("want i0 and i1, have %d instances", n)
			}
			return nil
		})
	}
}

// NewInstancerContext fails when the set cannot be read in time; NewInstancer
// returns after its wait, and the set follows once the server is back.
func TestReadyWaitServerDown(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	fill(t, wb, natskv.LayoutDotted, []string{"svc"}, 1)
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if i, err := natskv.NewInstancerContext(ctx, b, "svc", nil); err == nil || i != nil {
		t.Fatalf("want an error with the server down, have %v", err)
	}
	i, err := natskv.NewInstancer(b, "svc", nil, natskv.WithReadyWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer i.Stop()
	ch := subscribe(t, i)
	if err := s.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitSet(t, ch, "i0")
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitFor)
	defer cancel2()
	i2, err := natskv.NewInstancerContext(ctx2, b, "svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer i2.Stop()
	if len(i2.Instances()) != 1 {
		t.Fatal("NewInstancerContext returned without the set")
	}
}

// A bucket that refuses direct gets, and a service with more keys than a
// direct get returns: services followed anew are scanned with a consumer.
func TestLoadWithoutDirectGet(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	ctx := ctxT(t)
	js := wb.JetStream()
	st, err := js.Stream(ctx, "KV_"+wb.Name())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	fill(t, wb, natskv.LayoutDotted, []string{"a", "b"}, 2)
	b := bindOwn(t, s, wb)
	newInstancer(t, b, "a")
	ib := newInstancer(t, b, "b")
	if n := len(ib.Instances()); n != 2 {
		t.Fatalf("scanned: want 2, have %d", n)
	}

	_, wb2 := newBucket(t, natskv.BucketConfig{Name: "big"})
	fill(t, wb2, natskv.LayoutDotted, []string{"small"}, 1)
	fill(t, wb2, natskv.LayoutDotted, []string{"big"}, 1100)
	newInstancer(t, wb2, "small")
	ibig := newInstancer(t, wb2, "big")
	if n := len(ibig.Instances()); n != 1100 {
		t.Fatalf("over a direct get's limit: want 1100, have %d", n)
	}
}

// Past 64 services the consumer takes the whole registry and the client
// keeps what it follows; it goes back to names at 32.
func TestWholeRegistryFilter(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{})
	b := bindOwn(t, s, wb)
	services := make([]string, 70)
	for n := range services {
		services[n] = fmt.Sprintf("svc%02d", n)
	}
	fill(t, wb, natskv.LayoutDotted, append(slices.Clone(services), "other"), 1)
	var views []*natskv.Instancer
	for _, svc := range services {
		views = append(views, newInstancer(t, b, svc))
	}
	filter := func() []string { return consumers(t, b)[0].Config.FilterSubjects }
	eventually(t, "whole registry", func() error {
		if f := filter(); len(f) != 1 || f[0] != "$KV."+b.Name()+".service-instances.>" {
			return fmt.Errorf("filter %v", f)
		}
		return nil
	})
	ch := subscribe(t, views[3])
	put(t, wb, services[3], "i1", natskv.StatusActive)
	put(t, wb, "other", "i1", natskv.StatusActive) // not followed: dropped
	waitSet(t, ch, "i0", "i1")
	io := newInstancer(t, b, "other")
	if n := len(io.Instances()); n != 2 {
		t.Fatalf("other: want 2, have %d", n)
	}
	io.Stop()
	for _, i := range views[10:] {
		i.Stop()
	}
	eventually(t, "names again", func() error {
		if f := filter(); len(f) != 10 {
			return fmt.Errorf("filter %v", f)
		}
		return nil
	})
	put(t, wb, services[3], "i2", natskv.StatusActive)
	waitSet(t, ch, "i0", "i1", "i2")
}

// The staleness clock judges an instance a service gains while watched,
// after ticks that found the service empty.
func TestStaleAfterEmptyTicks(t *testing.T) {
	s, wb := newBucket(t, natskv.BucketConfig{NoTTL: true})
	b := bindOwn(t, s, wb)
	cs := make(changes, 64)
	i := newInstancer(t, b, "svc", cs.opt(), natskv.WithStaleAfter(500*time.Millisecond))
	ch := subscribe(t, i)
	waitSet(t, ch)
	time.Sleep(400 * time.Millisecond) // ticks over an empty service
	put(t, wb, "svc", "late", natskv.StatusActive)
	waitSet(t, ch, "late")
	cs.wait(t, "service-instances.svc.late", natskv.ChangeStale) // never written again
	waitSet(t, ch)
}

package natskv

import (
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/mailbox"
)

func TestOpOf(t *testing.T) {
	for _, tc := range []struct {
		h    nats.Header
		want ChangeKind
	}{
		{nil, ChangeUpdated},
		{nats.Header{"Nats-TTL": {"3s"}}, ChangeUpdated},
		{nats.Header{"KV-Operation": {"DEL"}}, ChangeDeleted},
		{nats.Header{"KV-Operation": {"PURGE"}}, ChangePurged},
		{nats.Header{"Nats-Marker-Reason": {"MaxAge"}}, ChangeExpired},
		{nats.Header{"Nats-Marker-Reason": {"Purge"}}, ChangePurged},
		{nats.Header{"Nats-Marker-Reason": {"Remove"}}, ChangeDeleted},
	} {
		if have := opOf(tc.h); have != tc.want {
			t.Errorf("%v: want %v, have %v", tc.h, tc.want, have)
		}
	}
}

func TestLayoutMatch(t *testing.T) {
	for _, tc := range []struct {
		l         Layout
		key       string
		wantInst  string
		wantMatch bool
	}{
		{LayoutDotted, "service-instances.svc.a", "a", true},
		{LayoutDotted, "service-instances.svc2.a", "", false},
		{LayoutDotted, "svc", "", false},
		{LayoutDotted, "service-instances.svc.x.deep", "", false},
		{LayoutAegis, "service-instances__svc__a-1", "a-1", true},
		{LayoutAegis, "service-instances__svc__x__y", "", false}, // service "svc__x"
		{LayoutAegis, "service-instances_svc_a", "", false},      // the old single-underscore keys
		{LayoutAegis, "service-instances__svcx__a", "", false},
	} {
		inst, ok := tc.l.match("svc", tc.key)
		if inst != tc.wantInst || ok != tc.wantMatch {
			t.Errorf("%v %s: want %q %v, have %q %v", tc.l, tc.key, tc.wantInst, tc.wantMatch, inst, ok)
		}
	}
}

// The subscriber mailbox is internal/mailbox's Forwarder; these pin the
// behaviour the Instancer relies on.

// A subscriber that does not read gets only the newest event when it does:
// at most the one already in flight, then the newest.
func TestMailboxKeepsOnlyNewest(t *testing.T) {
	ch := make(chan sd.Event)
	s := mailbox.Forward(ch)
	defer s.Stop()
	const n = 100
	for k := range n {
		s.Offer(sd.Event{Instances: []string{string(rune('a' + k%26)), time.Duration(k).String()}})
	}
	last := time.Duration(n - 1).String()
	var got []sd.Event
	for len(got) < 2 {
		ev := <-ch
		got = append(got, ev)
		if ev.Instances[1] == last {
			break
		}
	}
	if have := got[len(got)-1].Instances[1]; have != last {
		t.Fatalf("want the newest event (%s) within two receives, have %v", last, got)
	}
	select {
	case ev := <-ch:
		t.Fatalf("backlog after the newest event: %v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

// A waiting subscriber is handed events directly, in order.
func TestMailboxDirectHandOffKeepsOrder(t *testing.T) {
	ch := make(chan sd.Event, 1)
	s := mailbox.Forward(ch)
	defer s.Stop()
	for k := range 50 {
		s.Offer(sd.Event{Instances: []string{time.Duration(k).String()}})
		if have, want := (<-ch).Instances[0], time.Duration(k).String(); have != want {
			t.Fatalf("want %s, have %s", want, have)
		}
	}
}

func TestStaleDefaultFollowsBucket(t *testing.T) {
	for _, tc := range []struct {
		markers bool
		hb, ttl time.Duration // ttl 0: not set
		want    time.Duration
	}{
		{false, 10 * time.Second, 0, 30 * time.Second},
		{true, 10 * time.Second, 0, 31 * time.Second},
		{true, 500 * time.Millisecond, 0, 3 * time.Second},
		{false, time.Second, 5 * time.Second, 5 * time.Second},                   // the TTL, when set
		{true, 200 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}, // rounded up, plus one
	} {
		b := &Bucket{caps: Capabilities{Bucket: "b", Markers: tc.markers, MsgTTL: tc.markers}, js: nil}
		o := instancerOptions{commonOptions: defaultCommon()}
		opts := []InstancerOption{WithHeartbeat(tc.hb)}
		if tc.ttl > 0 {
			opts = append(opts, WithTTL(tc.ttl))
		}
		if _, err := configure(b, nil, opts, InstancerOption.applyInstancer, &o, &o.commonOptions); err != nil {
			t.Fatal(err)
		}
		if have := staleDefault(b, &o.commonOptions); have != tc.want {
			t.Errorf("markers %v heartbeat %v TTL %v: want %v, have %v", tc.markers, tc.hb, tc.ttl, tc.want, have)
		}
	}
}

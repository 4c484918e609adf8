package natskv

import (
	"maps"
	"slices"
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

func TestLayoutServiceOf(t *testing.T) {
	for _, tc := range []struct {
		l    Layout
		key  string
		want string
		ok   bool
	}{
		{LayoutDotted, "service-instances.svc.a", "svc", true},
		{LayoutDotted, "service-instances.svc.a.deep", "svc", true}, // match refuses it later
		{LayoutDotted, "service-instances.svc", "", false},
		{LayoutDotted, "service-instances..a", "", false},
		{LayoutDotted, "svc", "", false},
		{LayoutAegis, "service-instances__svc__a", "svc", true},
		{LayoutAegis, "service-instances__svc", "", false},
		{LayoutAegis, "service-instances.svc.a", "", false},
	} {
		svc, ok := tc.l.serviceOf(tc.key)
		if svc != tc.want || ok != tc.ok {
			t.Errorf("%v %s: want %q %v, have %q %v", tc.l, tc.key, tc.want, tc.ok, svc, ok)
		}
	}
}

func directReply(status string, h map[string]string, data string) *nats.Msg {
	m := &nats.Msg{Subject: "_INBOX.x.1", Header: nats.Header{}, Data: []byte(data)}
	if status != "" {
		m.Header.Set("Status", status)
	}
	for k, v := range h {
		m.Header.Set(k, v)
	}
	return m
}

func TestParseDirect(t *testing.T) {
	const prefix = "$KV.b."
	ok := map[string]string{"Nats-Subject": "$KV.b.service-instances.svc.a", "Nats-Sequence": "7",
		"Nats-Time-Stamp": "2025-08-08T05:02:34.123456789Z"}
	r, end, _, err := parseDirect(prefix, directReply("", ok, "{}"))
	if err != nil || end || r.key != "service-instances.svc.a" || r.rev != 7 || r.op != ChangeUpdated || string(r.data) != "{}" ||
		!r.seen.Equal(time.Date(2025, 8, 8, 5, 2, 34, 123456789, time.UTC)) {
		t.Fatalf("record: %+v %v %v", r, end, err)
	}
	del := map[string]string{"KV-Operation": "DEL"}
	for k, v := range ok {
		del[k] = v
	}
	if r, _, _, err := parseDirect(prefix, directReply("", del, "")); err != nil || r.op != ChangeDeleted {
		t.Fatalf("delete: %+v %v", r, err)
	}
	if _, end, upTo, err := parseDirect(prefix, directReply("204", map[string]string{"Nats-UpTo-Sequence": "42"}, "")); !end || upTo != 42 || err != nil {
		t.Fatalf("EOB: %v %d %v", end, upTo, err)
	}
	if _, end, upTo, err := parseDirect(prefix, directReply("404", nil, "")); !end || upTo != 0 || err != nil {
		t.Fatalf("no results: %v %d %v", end, upTo, err)
	}
	for name, m := range map[string]*nats.Msg{
		"too many":      directReply("413", map[string]string{"Description": "Too Many Results"}, ""),
		"no responders": directReply("503", nil, ""),
		"other bucket":  directReply("", map[string]string{"Nats-Subject": "$KV.c.x", "Nats-Sequence": "1", "Nats-Time-Stamp": ok["Nats-Time-Stamp"]}, ""),
		"no sequence":   directReply("", map[string]string{"Nats-Subject": ok["Nats-Subject"], "Nats-Time-Stamp": ok["Nats-Time-Stamp"]}, ""),
		"bad time":      directReply("", map[string]string{"Nats-Subject": ok["Nats-Subject"], "Nats-Sequence": "1", "Nats-Time-Stamp": "yesterday"}, ""),
		"bad up-to":     directReply("204", map[string]string{"Nats-UpTo-Sequence": "-1"}, ""),
	} {
		if _, _, _, err := parseDirect(prefix, m); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

// Whatever the server sends to a fetch's inbox, parseDirect returns a
// record under the prefix, the end, or an error; never a panic.
func FuzzParseDirect(f *testing.F) {
	f.Add("", "$KV.b.service-instances.svc.a", "7", "2025-08-08T05:02:34Z", "", []byte(`{}`))
	f.Add("204", "", "", "", "12", []byte(nil))
	f.Add("404", "", "", "", "", []byte(nil))
	f.Add("413", "", "", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, status, subj, seq, ts, upTo string, data []byte) {
		m := &nats.Msg{Header: nats.Header{}, Data: data}
		for k, v := range map[string]string{"Status": status, "Nats-Subject": subj, "Nats-Sequence": seq,
			"Nats-Time-Stamp": ts, "Nats-UpTo-Sequence": upTo} {
			if v != "" {
				m.Header.Set(k, v)
			}
		}
		r, end, _, err := parseDirect("$KV.b.", m)
		if err != nil || end {
			return
		}
		if r.key == "" || r.rev == 0 || "$KV.b."+r.key != subj {
			t.Fatalf("record %+v from subject %q sequence %q", r, subj, seq)
		}
		// A record feeds a load like any other.
		l := newBook("svc", LayoutDotted, false).newLoad()
		l.add(r)
	})
}

// Register's hand-over: on an unbuffered channel the set is sent twice, the
// second send returning once the receiver has handled the first; on a
// buffered one, once; a receiver that is not there gets it later from the
// mailbox, never a backlog.
func TestSubscriberHandOver(t *testing.T) {
	ev := sd.Event{Instances: []string{"a"}}
	ch := make(chan sd.Event)
	handled := make(chan sd.Event, 4)
	go func() {
		for e := range ch {
			time.Sleep(20 * time.Millisecond) // handling takes a while
			handled <- e
		}
	}()
	s := newSubscriber(ch)
	s.begin()
	s.handOver(ev)
	select {
	case e := <-handled:
		if !slices.Equal(e.Instances, []string{"a"}) {
			t.Fatalf("handled %v", e)
		}
	default:
		t.Fatal("the first set was not handled when the hand-over returned")
	}
	s.stop()
	close(ch)

	buf := make(chan sd.Event, 1)
	s = newSubscriber(buf)
	s.begin()
	s.handOver(ev)
	if len(buf) != 1 {
		t.Fatalf("buffered: want one event queued, have %d", len(buf))
	}
	s.offer(sd.Event{Instances: []string{"b"}}) // the buffer is full: the mailbox holds it
	s.offer(sd.Event{Instances: []string{"c"}})
	<-buf
	// The newest within two receives: at most the one in flight before it.
	if e := <-buf; !slices.Equal(e.Instances, []string{"c"}) {
		if e := <-buf; !slices.Equal(e.Instances, []string{"c"}) {
			t.Fatalf("want the newest, have %v", e)
		}
	}
	s.stop()
	s.stop()
	s.offer(ev) // after stop: nothing
	select {
	case e := <-buf:
		t.Fatalf("sent after stop: %v", e)
	case <-time.After(20 * time.Millisecond):
	}
}

// The one-pass decoder agrees with the thorough one wherever it decodes,
// and leaves everything else to it.
func FuzzDecodeFast(f *testing.F) {
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34.1+00:00","stickyActiveGroup":null,"metadata":{"a":"b"}}`))
	f.Add([]byte(`{"serviceName":"s","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","metadata":{"a":1}}`))
	f.Add([]byte(`{"service_name":"s","serviceName":"t","instanceId":"i","version":"1","status":"STANDBY","lastHeartbeat":"2025-08-08 05:02:34","sticky_active_group":"g"}`))
	f.Add([]byte(`{"serviceName":"s\u00e9","instanceId":"i","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2025-08-08T05:02:34Z","metadata":null}`))
	f.Add([]byte("{\"serviceName\":\"s\xff\",\"instanceId\":\"i\",\"version\":\"1\",\"status\":\"ACTIVE\",\"lastHeartbeat\":\"2025-08-08T05:02:34Z\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFast(data)
		if !ok {
			return
		}
		var slow Instance
		if err := slow.unmarshalSlow(data); err != nil {
			t.Fatalf("fast decoded %+v, slow refused: %v", fast, err)
		}
		if fast.ServiceName != slow.ServiceName || fast.InstanceID != slow.InstanceID || fast.Version != slow.Version ||
			fast.Status != slow.Status || fast.StickyActiveGroup != slow.StickyActiveGroup ||
			!fast.LastHeartbeat.Equal(slow.LastHeartbeat) || !maps.Equal(fast.Metadata, slow.Metadata) ||
			(fast.Metadata == nil) != (slow.Metadata == nil) {
			t.Fatalf("fast %+v != slow %+v", fast, slow)
		}
	})
}

func BenchmarkDecodeInstance(b *testing.B) {
	in := Instance{ServiceName: "svc0001", InstanceID: "i1", Version: "1.0.0", Status: StatusActive,
		LastHeartbeat: time.Now(), Metadata: map[string]string{"addr": "10.0.0.1:8080"}}
	data, _ := EncodeInstance(in)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeInstance(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("thorough", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var i Instance
			if err := i.unmarshalSlow(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

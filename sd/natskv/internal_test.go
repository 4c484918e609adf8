package natskv

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/mailbox"
	"github.com/aegis-sdk/kitnats/internal/registry"
)

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
		if have := o.liveness(0).Stale(b.caps.Markers); have != tc.want {
			t.Errorf("markers %v heartbeat %v TTL %v: want %v, have %v", tc.markers, tc.hb, tc.ttl, tc.want, have)
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
	if err != nil || end || r.Key != "service-instances.svc.a" || r.Rev != 7 || r.Op != registry.ChangeUpdated || string(r.Data) != "{}" ||
		!r.Seen.Equal(time.Date(2025, 8, 8, 5, 2, 34, 123456789, time.UTC)) {
		t.Fatalf("record: %+v %v %v", r, end, err)
	}
	del := map[string]string{"KV-Operation": "DEL"}
	for k, v := range ok {
		del[k] = v
	}
	if r, _, _, err := parseDirect(prefix, directReply("", del, "")); err != nil || r.Op != registry.ChangeDeleted {
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
		// Headers as long as a message may be: the error quotes a bounded
		// part, escaped.
		"long status":    directReply(strings.Repeat("\x1b[2J", 1<<15), nil, ""),
		"long subject":   directReply("", map[string]string{"Nats-Subject": "$KV.c." + strings.Repeat("x", 1<<20), "Nats-Sequence": "1", "Nats-Time-Stamp": ok["Nats-Time-Stamp"]}, ""),
		"long sequence":  directReply("", map[string]string{"Nats-Subject": ok["Nats-Subject"], "Nats-Sequence": strings.Repeat("9", 1<<20), "Nats-Time-Stamp": ok["Nats-Time-Stamp"]}, ""),
		"long time":      directReply("", map[string]string{"Nats-Subject": ok["Nats-Subject"], "Nats-Sequence": "1", "Nats-Time-Stamp": strings.Repeat(" ", 1<<20)}, ""),
		"long up-to":     directReply("204", map[string]string{"Nats-UpTo-Sequence": strings.Repeat("1", 1<<20)}, ""),
		"long describer": directReply("503", map[string]string{"Description": strings.Repeat("\u202e", 1<<18)}, ""),
	} {
		_, _, _, err := parseDirect(prefix, m)
		switch {
		case err == nil:
			t.Errorf("%s: want an error", name)
		case len(err.Error()) > 512 || strings.ContainsAny(err.Error(), "\x1b\u202e"):
			t.Errorf("%s: an error of %d bytes, escapes kept: %.80q", name, len(err.Error()), err.Error())
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
		if allocs := testing.AllocsPerRun(2, func() { parseDirect("$KV.b.", m) }); allocs > 16 {
			t.Fatalf("%.0f allocations", allocs)
		}
		if err != nil && len(err.Error()) > 1024 {
			t.Fatalf("an error of %d bytes", len(err.Error()))
		}
		if err != nil || end {
			return
		}
		if r.Key == "" || r.Rev == 0 || "$KV.b."+r.Key != subj {
			t.Fatalf("record %+v from subject %q sequence %q", r, subj, seq)
		}
		// A record feeds a load like any other.
		l := registry.NewBook("svc", registry.LayoutDotted, false).NewLoad()
		l.Add(r)
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

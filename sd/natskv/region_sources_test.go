package natskv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// TestRegionSourcesWhatSurvives pins what JetStream sourcing carries from
// a region's home bucket into another region's view, which the regional
// registry is designed around. If nats-server changes any of it, this test
// says which.
//
//   - The record's data and its Nats-TTL header arrive; the view stores the
//     record at its own time (the stream timestamp is when the view got it,
//     not when the home bucket did), and counts the TTL from then.
//   - With the home bucket cut off, the view expires the record on its
//     own; on buckets with markers it writes its own marker (one that
//     carries no Nats-Stream-Source header).
//   - A delete (KV-Operation: DEL) arrives as a delete; on buckets with
//     markers, the home bucket's expiry marker and a purge arrive too.
//   - The view takes no writes: nothing registers in it by mistake.
func TestRegionSourcesWhatSurvives(t *testing.T) {
	if testing.Short() {
		t.Skip("supercluster test skipped in -short mode")
	}
	sc := natstest.StartSupercluster(t, natstest.SuperclusterConfig{})
	ctx := rgCtx(t)
	_, jsE := rgConn(t, sc.Region("east").URL())
	_, jsW := rgConn(t, sc.Region("west").URL())
	regions := []string{"east", "west"}

	type registry struct {
		name             string
		markers          bool
		east, west       *natskv.Region
		homeMsg, viewMsg *jetstream.RawStreamMsg
	}
	regs := []*registry{{name: "plain"}, {name: "markers", markers: true}}
	put := func(r *registry, key, value string, ttl time.Duration) {
		t.Helper()
		m := nats.NewMsg("$KV." + r.east.Home().Name() + "." + key)
		m.Data = []byte(value)
		if _, err := jsE.PublishMsg(ctx, m, jetstream.WithMsgTTL(ttl)); err != nil {
			t.Fatal(err)
		}
	}
	last := func(r *registry, key string) *jetstream.RawStreamMsg {
		return rgLast(ctx, jsW, r.west.View().Name(), key)
	}
	for _, r := range regs {
		bc := natskv.BucketConfig{Name: r.name}
		if r.markers {
			bc.LimitMarkerTTL = time.Second
		}
		r.east = rgProvision(t, jsE, natskv.RegionConfig{Region: "east", Regions: regions, Bucket: bc})
		put(r, "kept", "v1", time.Hour)
		put(r, "deleted", "v1", time.Hour)
		r.homeMsg = rgLast(ctx, jsE, r.east.Home().Name(), "kept")
		if r.homeMsg == nil || r.homeMsg.Header.Get("Nats-TTL") == "" {
			t.Fatalf("%s: home record: %+v", r.name, r.homeMsg)
		}
	}
	// West's views are made after the records were written.
	beforeView := time.Now()
	for _, r := range regs {
		bc := r.east.Home().Capabilities()
		cfg := natskv.BucketConfig{Name: r.name, LimitMarkerTTL: bc.LimitMarkerTTL}
		r.west = rgProvision(t, jsW, natskv.RegionConfig{Region: "west", Regions: regions, Bucket: cfg})
	}
	for _, r := range regs {
		rgEventually(t, r.name+": record in the view", func() bool {
			r.viewMsg = last(r, "kept")
			return r.viewMsg != nil
		})
		if string(r.viewMsg.Data) != "v1" {
			t.Fatalf("%s: view data %q", r.name, r.viewMsg.Data)
		}
		if have, want := r.viewMsg.Header.Get("Nats-TTL"), r.homeMsg.Header.Get("Nats-TTL"); have != want {
			t.Fatalf("%s: Nats-TTL in the view %q, in the home bucket %q", r.name, have, want)
		}
		if r.viewMsg.Header.Get("Nats-Stream-Source") == "" {
			t.Fatalf("%s: sourced record without Nats-Stream-Source: %v", r.name, r.viewMsg.Header)
		}
		if !r.viewMsg.Time.After(beforeView) || !r.viewMsg.Time.After(r.homeMsg.Time) {
			t.Fatalf("%s: view time %v: want the view's own (after %v), not the home's %v", r.name, r.viewMsg.Time, beforeView, r.homeMsg.Time)
		}

		// A delete arrives as a delete.
		if err := r.east.Home().KeyValue().Delete(ctx, "deleted"); err != nil {
			t.Fatal(err)
		}
		rgEventually(t, r.name+": delete in the view", func() bool {
			m := last(r, "deleted")
			return m != nil && m.Header.Get("KV-Operation") == "DEL"
		})

		// The view takes no writes.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.west.View().KeyValue().Put(wctx, "intruder", []byte("x"))
		cancel()
		if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("%s: write into the view: %v, want no stream to take it", r.name, err)
		}

		if r.markers {
			// The home bucket's expiry marker arrives, sourced.
			put(r, "expires", "v1", time.Second)
			rgEventually(t, r.name+": home's expiry marker in the view", func() bool {
				m := last(r, "expires")
				return m != nil && m.Header.Get(jetstream.MarkerReasonHeader) == "MaxAge" && m.Header.Get("Nats-Stream-Source") != ""
			})
			// A purge arrives as a purge.
			if err := r.east.Home().KeyValue().Purge(ctx, "deleted"); err != nil {
				t.Fatal(err)
			}
			rgEventually(t, r.name+": purge in the view", func() bool {
				m := last(r, "deleted")
				return m != nil && m.Header.Get("KV-Operation") == "PURGE"
			})
		}
		put(r, "cut", "v1", 2*time.Second)
		rgEventually(t, r.name+": write in the view", func() bool { return last(r, "cut") != nil })
	}

	// Cut east off: the view expires what it holds of east on its own.
	sc.Region("east").Nodes[0].Stop()
	for _, r := range regs {
		rgEventually(t, r.name+": expiry in the view with the home cut off", func() bool {
			m := last(r, "cut")
			if r.markers {
				return m != nil && m.Header.Get(jetstream.MarkerReasonHeader) == "MaxAge" && m.Header.Get("Nats-Stream-Source") == ""
			}
			return m == nil
		})
		if m := last(r, "kept"); m == nil {
			t.Fatalf("%s: a record with an hour to live is gone from the view", r.name)
		}
	}
}

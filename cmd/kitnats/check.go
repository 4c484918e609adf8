package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Levels of a finding.
const (
	levelOK      = "ok"
	levelInfo    = "info"
	levelNote    = "note"    // worth knowing, not wrong
	levelProblem = "problem" // clients will misbehave: exit status 1
)

type finding struct {
	Topic string `json:"topic"`
	Level string `json:"level"`
	Text  string `json:"text"`
}

type invalidRecord struct {
	Key    string `json:"key"`
	Layout string `json:"layout"`
	Error  string `json:"error"`
}

type checkOutput struct {
	Server         string          `json:"server"`
	ServerVersion  string          `json:"serverVersion"`
	Bucket         string          `json:"bucket"`
	Stream         string          `json:"stream"`
	Storage        string          `json:"storage"`
	Replicas       int             `json:"replicas"`
	History        int64           `json:"history"`
	PerKeyTTL      bool            `json:"perKeyTTL"`
	ExpiryMarkers  bool            `json:"expiryMarkers"`
	Rollups        bool            `json:"rollups"` // a writer of one key can purge every other (Nats-Rollup)
	Purges         bool            `json:"purges"`  // the stream takes purge requests
	MarkerTTL      float64         `json:"markerTTLSeconds,omitempty"`
	MaxAge         float64         `json:"maxAgeSeconds,omitempty"`
	MaxValueSize   int32           `json:"maxValueSize"`
	Layout         string          `json:"layout"`         // as --layout says
	DetectedLayout string          `json:"detectedLayout"` // dotted, aegis, mixed or none
	Keys           map[string]int  `json:"keys"`           // live keys by layout: dotted, aegis, other
	Removed        map[string]int  `json:"removed"`        // keys whose latest message is a removal, by kind
	Services       map[string]int  `json:"services"`       // records that decode, by service
	Invalid        []invalidRecord `json:"invalid"`
	StaleAfter     float64         `json:"staleAfterSeconds"`
	Findings       []finding       `json:"findings"`
	Problems       int             `json:"problems"`
}

func (a *app) checkCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the bucket's configuration and records, and say what they mean",
		Long: `Check the registry bucket: per-key TTL and expiry markers (how crashes are
noticed), history, replicas, max age, the key layout its keys are in (and
whether --layout agrees), and every record that clients skip because it does
not decode or does not match its key, with the reason.

Each finding is ok, info, a note (worth knowing) or a problem (clients will
misbehave). The exit status is 1 when there is a problem.`,
		Example: `  kitnats check
  kitnats check --bucket service_registry --layout aegis --json`,
		Args: argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.check(cmd, asJSON) },
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON, for scripts")
	a.maxKeysFlag(cmd)
	return cmd
}

func (a *app) check(cmd *cobra.Command, asJSON bool) error {
	ctx := cmd.Context()
	s, err := a.open(ctx, cmd)
	if err != nil {
		return err
	}
	defer s.close()
	stream := "KV_" + s.b.Name()
	ictx, cancel := context.WithTimeout(ctx, a.conn.timeout)
	defer cancel()
	st, err := s.js.Stream(ictx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ictx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	sc, err := a.scan(ctx, s)
	if err != nil {
		return err
	}
	out := a.checkBuild(s, info, sc)
	if asJSON {
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	} else {
		t := newTable(a.stdout, "TOPIC", "FINDING")
		for _, f := range out.Findings {
			text := f.Text
			switch f.Level {
			case levelProblem:
				text = "PROBLEM: " + text
			case levelNote:
				text = "note: " + text
			}
			t.rowRaw(f.Topic, text)
		}
		if err := t.flush(); err != nil {
			return err
		}
		switch out.Problems {
		case 0:
			say(a.stdout, "verdict: no problems")
		case 1:
			say(a.stdout, "verdict: 1 problem")
		default:
			say(a.stdout, "verdict: %d problems", out.Problems)
		}
	}
	if out.Problems > 0 {
		return failedError{}
	}
	return nil
}

func (a *app) checkBuild(s *session, info *jetstream.StreamInfo, sc scanned) checkOutput {
	recs := sc.Records
	cfg := info.Config
	out := checkOutput{
		Server: s.where, ServerVersion: s.nc.ConnectedServerVersion(), Bucket: s.b.Name(), Stream: cfg.Name,
		Storage: strings.ToLower(cfg.Storage.String()), Replicas: max(cfg.Replicas, 1), History: cfg.MaxMsgsPerSubject,
		PerKeyTTL: cfg.AllowMsgTTL, ExpiryMarkers: cfg.SubjectDeleteMarkerTTL > 0,
		MarkerTTL: seconds(cfg.SubjectDeleteMarkerTTL), MaxAge: seconds(cfg.MaxAge), MaxValueSize: cfg.MaxMsgSize,
		Layout: s.layout.String(), StaleAfter: seconds(s.judge.StaleAfter()),
		Keys: map[string]int{"dotted": 0, "aegis": 0, "other": 0}, Removed: map[string]int{},
		Services: map[string]int{}, Invalid: []invalidRecord{},
	}
	add := func(topic, level, format string, args ...any) {
		out.Findings = append(out.Findings, finding{Topic: topic, Level: level, Text: fmt.Sprintf(format, args...)})
		if level == levelProblem && topic != "" { // rows without a topic detail the one above
			out.Problems++
		}
	}
	add("server", levelInfo, "nats-server %s at %s", out.ServerVersion, out.Server)
	add("bucket", levelInfo, "%s: stream %s, %s storage, %d values (%d bytes)", out.Bucket, out.Stream, out.Storage, info.State.Msgs, info.State.Bytes)

	// Liveness: how a crash is noticed.
	staleAfter := s.judge.StaleAfter()
	staleText := "never"
	if staleAfter > 0 {
		staleText = "after " + human(staleAfter)
	}
	switch {
	case out.PerKeyTTL:
		add("per-key TTL", levelOK, "on: every registrar write carries a TTL (Nats-TTL), so a crashed instance's record expires on the server")
	default:
		add("per-key TTL", levelNote, "off (as AegisSDK makes buckets): records never expire on the server; clients notice a crashed instance by heartbeat age alone, %s", staleText)
	}
	switch {
	case out.ExpiryMarkers:
		add("expiry markers", levelOK, "on, kept %s: every watcher is told of an expiry at once (\"expired\"), apart from a clean deregistration (\"deleted\")", human(cfg.SubjectDeleteMarkerTTL))
	case out.PerKeyTTL:
		add("expiry markers", levelNote, "off: records expire unannounced; clients notice by heartbeat age, %s", staleText)
	default:
		add("expiry markers", levelInfo, "off")
	}
	// Who can remove whose records.
	caps := s.b.Capabilities()
	out.Rollups, out.Purges = caps.Rollups, caps.Purges
	switch {
	case caps.Rollups:
		add("roll-ups", levelNote, "allowed: any writer of one key can purge every other record with a Nats-Rollup header, which permissions cannot refuse (until the next heartbeats, new clients see an empty fleet); buckets CreateBucket makes without expiry markers refuse roll-ups")
	case caps.Purges:
		add("roll-ups", levelOK, "refused: no writer of one key can remove another's")
		add("purges", levelNote, "allowed: a user allowed $JS.API.STREAM.PURGE.%s can empty the registry (the permission templates grant it to no role)", cfg.Name)
	default:
		add("roll-ups", levelOK, "roll-ups and purges refused: no writer of one key can remove another's")
	}
	switch {
	case out.History <= 1:
		add("history", levelOK, "1 value per key: clients read only the latest")
	default:
		add("history", levelNote, "%d values per key: old heartbeats are kept and cost storage; clients read only the latest", out.History)
	}
	switch {
	case out.Replicas >= 3:
		add("replicas", levelOK, "%d: the registry survives the loss of a server", out.Replicas)
	case out.Replicas == 2:
		add("replicas", levelNote, "2: losing either server stops registry writes (quorum); 3 survive one loss")
	default:
		add("replicas", levelNote, "1: the registry lives on one server and is unavailable while it is down (fine for one server; 3 in a cluster)")
	}
	switch {
	case cfg.MaxAge <= 0:
		add("max age", levelOK, "none: records live until deleted, or until their TTL runs out")
	case cfg.MaxAge <= a.heartbeat:
		add("max age", levelProblem, "%s is not longer than the heartbeat (%s): records expire between heartbeats and instances come and go", human(cfg.MaxAge), human(a.heartbeat))
	default:
		add("max age", levelNote, "%s: every record expires %s after its last write whatever its TTL (a crude crash detector)", human(cfg.MaxAge), human(cfg.MaxAge))
	}
	switch {
	case cfg.MaxMsgSize <= 0:
		add("max value size", levelInfo, "unlimited (registrars refuse, and clients skip, records over %d bytes)", registry.MaxRecordSize)
	case int(cfg.MaxMsgSize) < registry.MaxRecordSize:
		add("max value size", levelNote, "%d bytes: records between that and %d bytes are refused by the server", cfg.MaxMsgSize, registry.MaxRecordSize)
	default:
		add("max value size", levelOK, "%d bytes", cfg.MaxMsgSize)
	}

	// Keys: which layout, which records fail.
	var other []string
	ttls := map[time.Duration]int{}
	for _, r := range recs {
		if r.Op != opPut {
			out.Removed[string(r.Op)]++
			continue
		}
		var l natskv.Layout
		switch {
		case isLayout(natskv.LayoutDotted, r.Key):
			l = natskv.LayoutDotted
		case isLayout(natskv.LayoutAegis, r.Key):
			l = natskv.LayoutAegis
		default:
			out.Keys["other"]++
			other = append(other, r.Key)
			continue
		}
		out.Keys[l.String()]++
		ttls[r.TTL]++
		in, err := decode(l, r)
		if err != nil {
			out.Invalid = append(out.Invalid, invalidRecord{Key: r.Key, Layout: l.String(), Error: err.Error()})
			continue
		}
		if l == s.layout {
			out.Services[in.ServiceName]++
		}
	}
	dotted, aegis := out.Keys["dotted"], out.Keys["aegis"]
	mine, theirs := out.Keys[s.layout.String()], out.Keys[otherLayout(s.layout).String()]
	switch {
	case dotted > 0 && aegis > 0:
		out.DetectedLayout = "mixed"
		add("layout", levelProblem, "mixed: %d dotted keys, %d aegis keys; registrars disagree, and clients of each layout see only their own (--layout %s sees %d)", dotted, aegis, s.layout, mine)
	case theirs > 0:
		out.DetectedLayout = otherLayout(s.layout).String()
		add("layout", levelProblem, "%s: all %d keys are of the %s layout, which --layout %s does not see: pass --layout %s (and clients need WithLayout to match)",
			out.DetectedLayout, theirs, out.DetectedLayout, s.layout, out.DetectedLayout)
	case mine > 0:
		out.DetectedLayout = s.layout.String()
		add("layout", levelOK, "%s, as --layout says: %d keys", s.layout, mine)
	default:
		out.DetectedLayout = "none"
		add("layout", levelInfo, "no instance keys yet: nothing to detect")
	}
	if c := sc.cut(); c != "" {
		add("keys", levelNote, "%s", c)
	}
	if len(other) > 0 {
		add("other keys", levelNote, "%d key(s) of neither layout, ignored by clients: %s", len(other), listSome(other, 5))
	}
	if n := len(out.Invalid); n == 0 && dotted+aegis > 0 {
		add("records", levelOK, "%d decode, in %d service(s): %s", dotted+aegis, len(out.Services), serviceCounts(out.Services))
	} else if n > 0 {
		add("records", levelProblem, "%d of %d fail to decode or do not match their key; clients skip them:", n, dotted+aegis)
		for _, r := range out.Invalid[:min(n, maxRows)] {
			add("", levelProblem, "%s: %s", r.Key, r.Error)
		}
		if n > maxRows {
			add("", levelProblem, "and %d more (kitnats check --json lists them all)", n-maxRows)
		}
	}
	if len(out.Removed) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(out.Removed)) {
			parts = append(parts, fmt.Sprintf("%d %s", out.Removed[k], k))
		}
		add("removals", levelInfo, "keys whose last message is a removal marker: %s", strings.Join(parts, ", "))
	}

	// What kitnats assumes of the fleet, against what the records say.
	want := a.ttl
	if want == 0 {
		want = 3 * a.heartbeat
	}
	want = (want + time.Second - 1) / time.Second * time.Second
	add("clients", levelInfo, "judged with heartbeat %s, TTL %s: a record is stale %s (set --heartbeat, --ttl, --stale-after as your fleet does)", human(a.heartbeat), human(want), staleText)
	if out.PerKeyTTL {
		if n := ttls[0]; n > 0 {
			add("record TTLs", levelNote, "%d record(s) carry no TTL (written by a plain KV put, as AegisSDK writes): they never expire on the server", n)
		}
		for _, d := range slices.SortedFunc(maps.Keys(ttls), cmp.Compare) {
			if d != 0 && d != want {
				add("record TTLs", levelNote, "%d record(s) carry a TTL of %s, not the %s assumed: pass the fleet's --heartbeat/--ttl so staleness is judged as clients judge it", ttls[d], human(d), human(want))
			}
		}
	}
	return out
}

func isLayout(l natskv.Layout, key string) bool {
	_, _, ok := registry.Layout(l).Parse(key)
	return ok
}

func listSome(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(" and %d more", len(s)-n)
}

func serviceCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

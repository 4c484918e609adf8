package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// fleet is a registry with one of everything ls and check report: active,
// standby, unhealthy and stale instances, a record that does not decode, a
// key of no layout, and a second service.
type fleet struct {
	*fixture
	staleFlags []string // judge with these so the stale record is stale and the rest is not
}

func newFleet(t *testing.T) *fleet {
	// Memory storage: no disk stall on a shared machine can hold up the
	// heartbeats long enough to make a live record stale.
	f := newFixture(t, natskv.BucketConfig{Storage: jetstream.MemoryStorage, LimitMarkerTTL: time.Minute}) // expiry markers, as check reports
	// Written once, with no TTL: it goes stale.
	dead, err := natskv.EncodeInstance(natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-4", Version: "1.2.3",
		Status: natskv.StatusActive, LastHeartbeat: time.Now(), Metadata: map[string]string{"zone": "eu-3"}})
	if err != nil {
		t.Fatal(err)
	}
	f.put("service-instances.greeter.greeter-4", string(dead))
	wrote := time.Now()
	f.put("service-instances.greeter.bad", `{"serviceName":"greeter","instanceId":"bad","version":"1.2.3","status":"BOGUS","lastHeartbeat":"2026-01-01T00:00:00+00:00","stickyActiveGroup":null,"metadata":{}}`)
	f.put("config.greeter.limits", `{"rps":100}`)
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, "eu-1"))
	f.register(instance("greeter", "greeter-2", natskv.StatusStandby, "eu-2"))
	f.register(instance("greeter", "greeter-3", natskv.StatusUnhealthy, "eu-1"))
	f.register(instance("billing", "billing-1", natskv.StatusActive, ""))
	// The stale threshold: long enough for heartbeats every 250 ms to stay
	// fresh on a loaded machine, and passed by the record written once.
	const staleAfter = 3 * time.Second
	time.Sleep(time.Until(wrote.Add(staleAfter + 200*time.Millisecond)))
	return &fleet{fixture: f, staleFlags: append(append([]string{}, livenessFlags...), "--stale-after", "3s")}
}

func (f *fleet) run(args ...string) (string, string, int) {
	out, errOut, code := f.fixture.run(append(args, f.staleFlags...)...)
	if code != exitOK && (len(args) == 0 || args[0] != "ls") {
		// Say what the registry looked like, should the failure be a surprise.
		ls, _, _ := f.fixture.run(append([]string{"ls", "-l"}, f.staleFlags...)...)
		f.t.Logf("kitnats %v exited %d; kitnats ls -l:\n%s", args, code, ls)
	}
	return out, errOut, code
}

func TestFleet(t *testing.T) {
	f := newFleet(t)
	f.serve("greeter", "greeter-1")
	f.serve("greeter", "greeter-2")
	f.serve("greeter", "greeter-3")

	t.Run("ls", func(t *testing.T) {
		out, errOut, code := f.run("ls")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("\n%s", out)
		if h := lineWith(t, out, "SERVICE"); !containsAll(h, "INSTANCES", "HEALTHY", "STANDBY", "UNHEALTHY", "STALE", "SKIPPED") {
			t.Errorf("header: %q", h)
		}
		if got := strings.Fields(lineWith(t, out, "greeter ")); strings.Join(got, " ") != "greeter 4 1 1 1 1 1" {
			t.Errorf("greeter row: %q", got)
		}
		if got := strings.Fields(lineWith(t, out, "billing")); strings.Join(got, " ") != "billing 1 1 0 0 0 0" {
			t.Errorf("billing row: %q", got)
		}
		lineWith(t, out, "skipped by clients", "service-instances.greeter.bad", `unknown status: "BOGUS"`)
		lineWith(t, out, "1 key(s) not of the dotted layout")
	})

	t.Run("ls service", func(t *testing.T) {
		out, errOut, code := f.run("ls", "greeter")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("\n%s", out)
		lineWith(t, out, "INSTANCE", "STATUS", "VERSION", "ZONE", "HEARTBEAT", "TTL LEFT", "HEALTHY")
		if l := lineWith(t, out, "greeter-1 "); !containsAll(l, "ACTIVE", "1.2.3", "eu-1", " ago", "yes") {
			t.Errorf("greeter-1: %q", l)
		}
		if l := lineWith(t, out, "greeter-2 "); !containsAll(l, "STANDBY", "eu-2", "standby: picked only when no ACTIVE instance can serve") {
			t.Errorf("greeter-2: %q", l)
		}
		if l := lineWith(t, out, "greeter-3 "); !containsAll(l, "UNHEALTHY", "no: unhealthy, declared UNHEALTHY by its owner") {
			t.Errorf("greeter-3: %q", l)
		}
		// Written by a plain put on a TTL bucket: no TTL, so "none".
		if l := lineWith(t, out, "greeter-4 "); !containsAll(l, "ACTIVE", "eu-3", "none", "no: stale, no write for", "stale after 3s") {
			t.Errorf("greeter-4: %q", l)
		}
		if l := lineWith(t, out, "bad "); !containsAll(l, "no: skipped", `unknown status: "BOGUS"`) {
			t.Errorf("bad: %q", l)
		}
		if strings.Contains(out, "billing") {
			t.Errorf("billing listed under greeter:\n%s", out)
		}
	})

	t.Run("ls instances", func(t *testing.T) {
		out, _, code := f.run("ls", "-l")
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
		lineWith(t, out, "SERVICE", "INSTANCE", "HEALTHY")
		lineWith(t, out, "billing", "billing-1", "ACTIVE", "yes")
		lineWith(t, out, "greeter", "greeter-2", "standby")
	})

	t.Run("ls json", func(t *testing.T) {
		out, errOut, code := f.run("ls", "--json")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var got lsOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if got.Bucket != natskv.DefaultBucket || got.Layout != "dotted" || got.StaleAfter != 3 || !got.PerKeyTTL {
			t.Errorf("header: %+v", got)
		}
		if len(got.Services) != 2 || got.Services[0].Service != "billing" || got.Services[1].Service != "greeter" {
			t.Fatalf("services: %+v", got.Services)
		}
		g := got.Services[1]
		if g.Instances != 4 || g.Offered != 2 || g.Active != 1 || g.Standby != 1 || g.Unhealthy != 1 || g.Stale != 1 || g.Skipped != 1 {
			t.Errorf("greeter counts: %+v", g)
		}
		want := map[string]struct {
			client  string
			offered bool
		}{"bad": {"skipped", false}, "greeter-1": {"active", true}, "greeter-2": {"standby", true},
			"greeter-3": {"unhealthy", false}, "greeter-4": {"stale", false}}
		for _, m := range g.Members {
			w, ok := want[m.Instance]
			if !ok || m.Client != w.client || m.Offered != w.offered {
				t.Errorf("%s: client %q offered %v, want %+v", m.Instance, m.Client, m.Offered, w)
			}
			switch m.Instance {
			case "greeter-1":
				if m.Zone != "eu-1" || m.Version != "1.2.3" || m.Status != "ACTIVE" || m.TTL == nil || *m.TTL != 5 ||
					m.TTLLeft == nil || *m.TTLLeft <= 0 || m.LastHeartbeat == nil || m.Key != "service-instances.greeter.greeter-1" {
					t.Errorf("greeter-1: %+v", m)
				}
			case "greeter-4":
				if m.TTL != nil || m.HeartbeatAge <= 3 || !strings.Contains(m.Reason, "stale after") {
					t.Errorf("greeter-4: %+v", m)
				}
			case "bad":
				if !strings.Contains(m.Reason, "unknown status") || m.Status != "" {
					t.Errorf("bad: %+v", m)
				}
			}
		}
		if len(got.ForeignKeys) != 1 || got.ForeignKeys[0] != "config.greeter.limits" {
			t.Errorf("foreign keys: %v", got.ForeignKeys)
		}
	})

	t.Run("ls unknown service", func(t *testing.T) {
		out, _, code := f.run("ls", "nobody")
		if code != exitOK || !strings.Contains(out, "no instances registered") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	t.Run("ls wrong layout", func(t *testing.T) {
		out, errOut, code := f.run("ls", "--layout", "aegis")
		if code != exitFailed {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if !strings.Contains(out, "no instances registered in bucket service_registry (layout aegis)") ||
			!strings.Contains(errOut, "6 key(s) are of the dotted layout, which clients using --layout aegis do not see: pass --layout dotted") {
			t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
		}
	})

	t.Run("check", func(t *testing.T) {
		out, errOut, code := f.run("check")
		t.Logf("\n%s", out)
		if code != exitFailed {
			t.Fatalf("exit %d, want %d (a record fails to decode): %s", code, exitFailed, errOut)
		}
		lineWith(t, out, "per-key TTL", "on:")
		lineWith(t, out, "expiry markers", "on, kept 1m0s")
		lineWith(t, out, "history", "1 value per key")
		lineWith(t, out, "replicas", "note: 1:")
		lineWith(t, out, "layout", "dotted, as --layout says: 6 keys")
		lineWith(t, out, "other keys", "config.greeter.limits")
		lineWith(t, out, "records", "PROBLEM: 1 of 6 fail")
		lineWith(t, out, "service-instances.greeter.bad", `unknown status: "BOGUS"`)
		lineWith(t, out, "record TTLs", "2 record(s) carry no TTL")
		lineWith(t, out, "verdict: 1 problem")
	})

	t.Run("check json", func(t *testing.T) {
		out, _, code := f.run("check", "--json")
		if code != exitFailed {
			t.Fatalf("exit %d", code)
		}
		var got checkOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if !got.PerKeyTTL || !got.ExpiryMarkers || got.MarkerTTL != 60 || got.History != 1 || got.Replicas != 1 ||
			got.DetectedLayout != "dotted" || got.Keys["dotted"] != 6 || got.Keys["other"] != 1 || got.Problems != 1 {
			t.Errorf("%+v", got)
		}
		if len(got.Invalid) != 1 || got.Invalid[0].Key != "service-instances.greeter.bad" || got.Services["greeter"] != 4 || got.Services["billing"] != 1 {
			t.Errorf("invalid %+v, services %v", got.Invalid, got.Services)
		}
	})

	t.Run("check wrong layout", func(t *testing.T) {
		out, _, code := f.run("check", "--layout", "aegis")
		if code != exitFailed {
			t.Fatalf("exit %d", code)
		}
		lineWith(t, out, "layout", "PROBLEM: dotted: all 6 keys are of the dotted layout", "pass --layout dotted")
	})

	t.Run("call", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", `"gopher"`)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("stdout: %sstderr: %s", out, errOut)
		var reply map[string]string
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		// ACTIVE before STANDBY: greeter-1 is the only ACTIVE instance offered.
		if reply["greeting"] != "hello, gopher" || reply["instance"] != "greeter-1" {
			t.Errorf("reply %v", reply)
		}
		m := traceRE.FindStringSubmatch(errOut)
		if m == nil || m[1] != reply["trace"] {
			t.Errorf("trace printed %q, the server saw %q", errOut, reply["trace"])
		}
		if !strings.Contains(errOut, "greeter.hello → greeter-1 in ") || !strings.Contains(errOut, "(1 attempt)") {
			t.Errorf("stderr: %q", errOut)
		}
	})

	t.Run("call count", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", `"gopher"`, "--count", "6", "--concurrency", "3")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("\n%s", out)
		for n := 1; n <= 6; n++ {
			lineWith(t, out, "#"+strconv.Itoa(n)+" ", "greeter-1", "trace ", "ok")
		}
		lineWith(t, out, "calls 6, ok 6, errors 0, concurrency 3")
		lineWith(t, out, "latency p50 ", "p90 ", "p99 ", "max ")
		lineWith(t, out, "answered by greeter-1 6")
	})

	t.Run("call json", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", `"gopher"`, "--count", "3", "--json", "--balancer", "least-loaded")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var got callOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if got.Target != "greeter.hello" || got.Mode != "discovery" || len(got.Calls) != 3 || got.Summary.OK != 3 || got.Summary.ByInstance["greeter-1"] != 3 {
			t.Fatalf("%+v", got)
		}
		seen := map[string]bool{}
		for _, c := range got.Calls {
			var reply map[string]string
			if err := json.Unmarshal(c.Reply, &reply); err != nil {
				t.Fatal(err)
			}
			if !c.OK || c.Instance != "greeter-1" || c.Attempts != 1 || len(c.TraceID) != 32 || reply["trace"] != c.TraceID || seen[c.TraceID] {
				t.Errorf("call %+v, reply %v", c, reply)
			}
			seen[c.TraceID] = true
		}
	})

	t.Run("call instance", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", `"gopher"`, "--instance", "greeter-3")
		if code != exitOK || !strings.Contains(out, `"instance":"greeter-3"`) || !strings.Contains(errOut, "→ greeter-3") {
			t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
	})

	t.Run("call queue", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", "@"+writeTemp(t, `"queue"`), "--queue", "--json")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var got callOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if got.Mode != "queue" || got.Subject != "rpc.greeter.hello" || !got.Calls[0].OK || !strings.Contains(string(got.Calls[0].Reply), "hello, queue") {
			t.Errorf("%+v", got)
		}
	})

	t.Run("call fails", func(t *testing.T) {
		out, errOut, code := f.run("call", "greeter.hello", `"fail"`)
		if code != exitFailed || out != "" || !strings.Contains(errOut, "no greeting for fail") || !traceRE.MatchString(errOut) {
			t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
	})

	t.Run("call nobody", func(t *testing.T) {
		_, errOut, code := f.run("call", "nobody.hello")
		if code != exitFailed || !strings.Contains(errOut, "no instance of nobody is offered to clients in bucket service_registry") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})

	t.Run("call no responders", func(t *testing.T) {
		// billing-1 is registered, but nothing serves it.
		_, errOut, code := f.run("call", "billing.charge", "{}", "--attempts", "2")
		if code != exitFailed || !strings.Contains(errOut, "no responders") || !strings.Contains(errOut, "→ billing-1") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no method", []string{"call", "greeter"}, "want SERVICE.METHOD"},
		{"bad method", []string{"call", "greeter.he.llo"}, `invalid method name "he.llo"`},
		{"bad service", []string{"call", "9greeter.hello"}, `invalid service name "9greeter"`},
		{"bad json", []string{"call", "greeter.hello", "gopher"}, "not valid JSON"},
		{"queue and instance", []string{"call", "greeter.hello", "--queue", "--instance", "greeter-1"}, "exclude each other"},
		{"bad instance", []string{"call", "greeter.hello", "--instance", "a.b"}, `invalid instance name "a.b"`},
		{"bad balancer", []string{"call", "greeter.hello", "--balancer", "sticky"}, "want round-robin, random or least-loaded"},
		{"bad service to ls", []string{"ls", "bad.name"}, `invalid service name "bad.name"`},
		{"bad layout", []string{"ls", "--layout", "flat"}, `"flat" is not a layout`},
		{"bad flag", []string{"ls", "--jsn"}, "unknown flag: --jsn"},
		{"too many args", []string{"ls", "a", "b"}, "accepts between 0 and 1 arg(s)"},
		{"unknown command", []string{"lss"}, `unknown command "lss"`},
	} {
		t.Run("usage "+c.name, func(t *testing.T) {
			_, errOut, code := f.run(c.args...)
			if code != exitUsage || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, exitUsage, c.want)
			}
		})
	}
}

var traceRE = regexp.MustCompile(`trace ([0-9a-f]{32})`)

func writeTemp(t *testing.T, content string) string {
	path := filepath.Join(t.TempDir(), "request.json")
	writeFile(t, path, content)
	return path
}

// TestAegisLayout: a bucket as the Python AegisSDK makes it (no per-key TTL,
// keys service-instances__S__I), read with the wrong layout and the right
// one.
func TestAegisLayout(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{NoTTL: true})
	f.register(instance("greeter", "g-1", natskv.StatusActive, "eu-1"), natskv.WithLayout(natskv.LayoutAegis))

	out, errOut, code := f.run(append([]string{"ls"}, livenessFlags...)...)
	if code != exitFailed || !strings.Contains(errOut, "1 key(s) are of the aegis layout") || !strings.Contains(errOut, "pass --layout aegis") {
		t.Errorf("dotted: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	out, errOut, code = f.run(append([]string{"ls", "greeter", "--layout", "aegis"}, livenessFlags...)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// No per-key TTL on this bucket: no TTL to show.
	if l := lineWith(t, out, "g-1"); !containsAll(l, "ACTIVE", "eu-1", "yes") || strings.Fields(l)[6] != "-" {
		t.Errorf("g-1: %q", l)
	}
	out, _, code = f.run(append([]string{"check", "--layout", "aegis"}, livenessFlags...)...)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	lineWith(t, out, "per-key TTL", "note: off", "heartbeat age alone, after 5s")
	lineWith(t, out, "layout", "aegis, as --layout says: 1 keys")
	lineWith(t, out, "verdict: no problems")
}

// TestCheckMaxAge: a bucket-wide max age, as AegisSDK's deployment charts
// set, is a problem when it does not outlast a heartbeat.
func TestCheckMaxAge(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{NoTTL: true, MaxAge: 5 * time.Second})
	out, _, code := f.run("check")
	if code != exitFailed {
		t.Errorf("exit %d:\n%s", code, out)
	}
	lineWith(t, out, "max age", "PROBLEM: 5s is not longer than the heartbeat (10s)")
	lineWith(t, out, "layout", "no instance keys yet")
	out, _, code = f.run("check", "--heartbeat", "1s", "--json")
	var got checkOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if code != exitOK || got.Problems != 0 || got.MaxAge != 5 || got.PerKeyTTL || got.DetectedLayout != "none" {
		t.Errorf("exit %d: %+v", code, got)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// evil is what a hostile registry writer or service puts before an
// operator: a window title, a screen clear, a right-to-left override, a C1
// CSI, a carriage return, a line separator, DEL.
const evil = "\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\u009b31m\r\u2028\x7f"

// control is the first character of s that a terminal acts on, line breaks
// aside (a backslash is text).
func control(s string) (rune, bool) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return rune(s[i]), true
		}
		if c := s[i : i+size]; r != '\n' && r != '\\' && safetext.Terminal(c) != c {
			return r, true
		}
		i += size
	}
	return 0, false
}

// harmless fails the test if out holds a character a terminal acts on.
func harmless(t *testing.T, what, out string) {
	t.Helper()
	if r, ok := control(out); ok {
		t.Errorf("%s: %U reaches the terminal:\n%q", what, r, out)
	}
}

// evilRecord is a record of the dotted layout (lenient) with evil in every
// free-text field.
func evilRecord(t *testing.T, service, instance, extra string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"serviceName": service, "instanceId": instance, "version": evil, "status": "ACTIVE",
		"lastHeartbeat":     time.Now().UTC().Format("2006-01-02T15:04:05.999999+00:00"),
		"stickyActiveGroup": evil + extra,
		"metadata":          map[string]string{"zone": evil, evil: evil + extra},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHostileOutput: records, keys, replies and error headers carrying
// terminal escapes go through every output of ls, check, watch and call:
// nothing a terminal acts on reaches stdout or stderr, and --json keeps the
// values exact.
func TestHostileOutput(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{})
	f.put("service-instances.evil.evil-1", evilRecord(t, "evil", "evil-1", ""))
	// Skipped by clients, with the record's own service name in the reason.
	f.put("service-instances.evil.evil-2", evilRecord(t, "evil"+evil, "evil-2", ""))
	// A key of no layout, spelled with escapes. (nats-server stores a
	// subject with DEL, but no consumer filter matches it.)
	if _, err := f.js.Publish(ctxT(t), "$KV."+f.b.Name()+".cfg."+strings.NewReplacer("\r", "", "\x7f", "").Replace(evil), []byte(evil)); err != nil {
		t.Fatal(err)
	}

	t.Run("ls", func(t *testing.T) {
		for _, args := range [][]string{{"ls"}, {"ls", "evil"}, {"ls", "-l"}, {"ls", "--layout", "aegis"}, {"ls", evil}} {
			out, errOut, _ := f.run(args...)
			harmless(t, strings.Join(args, " ")+" stdout", out)
			harmless(t, strings.Join(args, " ")+" stderr", errOut)
		}
		out, errOut, code := f.run("ls", "-l")
		if code != exitOK || !strings.Contains(out, "evil-1") || !strings.Contains(out, `\x1b]0;pwned\a`) {
			t.Errorf("exit %d: %s\n%s", code, errOut, out)
		}
		out, _, _ = f.run("ls", "--json")
		harmless(t, "ls --json", out)
		var got lsOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range got.Services {
			for _, m := range s.Members {
				if m.Instance == "evil-1" {
					found = true
					if m.Version != evil || m.Zone != evil || m.Metadata[evil] != evil || m.StickyActiveGroup != evil {
						t.Errorf("not exact: %+v", m)
					}
				}
			}
		}
		if !found || len(got.ForeignKeys) != 1 || !strings.HasPrefix(got.ForeignKeys[0], "cfg.\x1b]0;pwned") {
			t.Errorf("members or foreign keys: %+v", got)
		}
	})

	t.Run("check", func(t *testing.T) {
		out, errOut, _ := f.run("check")
		harmless(t, "check stdout", out)
		harmless(t, "check stderr", errOut)
		lineWith(t, out, "other keys", `cfg.\x1b]0;pwned\a`)
		out, _, _ = f.run("check", "--json")
		harmless(t, "check --json", out)
		var got checkOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Invalid) != 1 || got.Invalid[0].Key != "service-instances.evil.evil-2" {
			t.Errorf("invalid: %+v", got.Invalid)
		}
	})

	t.Run("watch", func(t *testing.T) {
		out, errOut := f.watching(t)
		jout, jerr := f.watching(t, "--json")
		waitOutput(t, out, "added", "evil/evil-1")
		waitOutput(t, out, "skipped", "evil/evil-2")
		// Both watches must hold the first record before it changes, or the
		// later one may load the changed record as its first and never see
		// the update.
		waitOutput(t, jout, `"event":"added"`, `"instance":"evil-1"`)
		f.put("service-instances.evil.evil-1", evilRecord(t, "evil", "evil-1", "2"))
		waitOutput(t, out, "updated", "evil/evil-1", "sticky group")
		line := waitOutput(t, jout, `"event":"updated"`, `"instance":"evil-1"`)
		var e watchEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Version != evil {
			t.Errorf("--json: %v, %+v", err, e)
		}
		waitOutput(t, jout, `"event":"skipped"`, `"instance":"evil-2"`)
		for what, b := range map[string]*syncBuffer{"stdout": out, "stderr": errOut, "--json stdout": jout, "--json stderr": jerr} {
			harmless(t, "watch "+what, b.String())
		}
	})

	t.Run("call", func(t *testing.T) {
		nc := natstest.Connect(t, f.srv.URL())
		jsonReply, err := json.Marshal(map[string]string{"g": evil})
		if err != nil {
			t.Fatal(err)
		}
		for subject, answer := range map[string]func(m *nats.Msg){
			"rpc.evil.text.evil-1": func(m *nats.Msg) { m.Respond([]byte(evil)) },
			"rpc.evil.json.evil-1": func(m *nats.Msg) { m.Respond(jsonReply) },
			"rpc.evil.fail.evil-1": func(m *nats.Msg) {
				r := nats.NewMsg(m.Reply)
				r.Header.Set("Nats-Service-Error", strings.ReplaceAll(evil, "\r", "")) // a header value holds no line break
				r.Header.Set("Nats-Service-Error-Code", "500")
				m.RespondMsg(r)
			},
		} {
			if _, err := nc.Subscribe(subject, answer); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, method := range []string{"text", "json", "fail"} {
			out, errOut, _ := f.run("call", "evil."+method, "--instance", "evil-1")
			harmless(t, method+" stdout", out)
			harmless(t, method+" stderr", errOut)
			switch method {
			case "json":
				// Printed escaped, and still the same JSON.
				var got map[string]string
				if err := json.Unmarshal([]byte(out), &got); err != nil || got["g"] != evil {
					t.Errorf("json reply %q: %v %q", out, err, got)
				}
			case "fail":
				if !strings.Contains(errOut, `\x1b]0;pwned\a`) {
					t.Errorf("the error: %q", errOut)
				}
			}
			out, _, _ = f.run("call", "evil."+method, "--instance", "evil-1", "--json")
			harmless(t, method+" --json", out)
			var got callOutput
			if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Calls) != 1 {
				t.Fatalf("%v: %s", err, out)
			}
			c := got.Calls[0]
			switch method {
			case "text":
				if c.Text != evil || c.Size != len(evil) || c.Cut {
					t.Errorf("text not exact: %+v", c)
				}
			case "json":
				var v map[string]string
				if err := json.Unmarshal(c.Reply, &v); err != nil || v["g"] != evil {
					t.Errorf("json not exact: %s (%v), want %s", c.Reply, err, jsonReply)
				}
			}
			out, errOut, _ = f.run("call", "evil."+method, "--instance", "evil-1", "--count", "2")
			harmless(t, method+" count stdout", out)
			harmless(t, method+" count stderr", errOut)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"call", "evil.x", evil}, {"call", evil}, {evil}, {"ls", "--layout", evil},
			{"perms", "service", "s", "i", "--name", evil}, {"perms", "client", "--inbox-prefix", evil}, {"ls", "--" + evil}} {
			out, errOut, code := f.run(args...)
			if code != exitUsage {
				t.Errorf("%q: exit %d", args, code)
			}
			harmless(t, "stdout", out)
			harmless(t, "stderr", errOut)
		}
	})
}

// TestCallReplyBounded: a reply larger than --max-reply is cut, and says
// so; --json marks it.
func TestCallReplyBounded(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{})
	nc := natstest.Connect(t, f.srv.URL())
	big := strings.Repeat("é", 50_000) // 100 KB, no JSON
	if _, err := nc.Subscribe("rpc.big.get.big-1", func(m *nats.Msg) { m.Respond([]byte(big)) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := f.run("call", "big.get", "--instance", "big-1", "--max-reply", "1001")
	if code != exitOK || out != strings.Repeat("é", 500)+"\n" || !strings.Contains(errOut, "the reply is cut at 1000 of its 100000 bytes") {
		t.Errorf("exit %d: %d bytes out, stderr %q", code, len(out), errOut)
	}
	out, _, _ = f.run("call", "big.get", "--instance", "big-1", "--max-reply", "10", "--json")
	var got callOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if c := got.Calls[0]; !c.OK || !c.Cut || c.Size != 100_000 || c.Text != strings.Repeat("é", 5) || c.Reply != nil {
		t.Errorf("%+v", c)
	}
	out, _, _ = f.run("call", "big.get", "--instance", "big-1", "--json")
	got = callOutput{}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if c := got.Calls[0]; c.Cut || c.Text != big {
		t.Errorf("a reply within --max-reply is cut: %d bytes", len(c.Text))
	}
}

func TestSafeJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"b"}`:                `{"a":"b"}`,
		"{\"a\":\"\u202e\u009b\"}": `{"a":"\u202e\u009b"}`,
		"{\"a\":\"\x7f\"}":         `{"a":"\u007f"}`,
		"{\"a\":\"\xff\"}":         `{"a":"\ufffd"}`,
		"{\"a\":\"\\\"\u202e\"}":   `{"a":"\"\u202e"}`,
		"{\"a\":\"\U000e0001\"}":   `{"a":"\udb40\udc01"}`,
		"{\r\n\t\"a\": 1}":         "{ \n \"a\": 1}",
		`"héllo \\u001b"`:          `"héllo \\u001b"`,
	} {
		if got := string(safeJSON([]byte(in))); got != want {
			t.Errorf("safeJSON(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSafeJSON: whatever valid JSON comes in, what goes out is valid JSON
// of the same value, with nothing a terminal acts on, in a bounded
// multiple of its size.
func FuzzSafeJSON(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, "\"\u202e\"", "[\"\x7f\", 1, null]", "\"\xff\xfe\"", `"\"\\"`, "{\"\u009b\":\"\U000e0001\"}", "\r\n\t 1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		out := safeJSON(in)
		if len(out) > 12*len(in) {
			t.Fatalf("%d bytes in, %d out", len(in), len(out))
		}
		// One pass into one growing buffer: a handful of allocations
		// whatever the input.
		if n := testing.AllocsPerRun(1, func() { safeJSON(in) }); n > 12 {
			t.Fatalf("%v allocations for %d bytes", n, len(in))
		}
		if r, ok := control(string(out)); ok {
			t.Fatalf("%U in %q", r, out)
		}
		// Numbers as they are written: the value compared is the text.
		decode := func(b []byte) (v any, err error) {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			err = d.Decode(&v)
			return v, err
		}
		a, err := decode(in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := decode(out)
		if err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("value changed: %s → %s", ja, jb)
		}
	})
}

// TestListingBounded: ls and check read at most --max-keys keys, say so,
// and list skipped records one a line up to maxRows; a value larger than
// a record can be is refused unread.
func TestListingBounded(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{MaxValueSize: -1})
	for i := range 30 {
		f.put(fmt.Sprintf("service-instances.junk.j-%02d", i), "{")
	}
	huge := `{"serviceName":"big","instanceId":"b-1","version":"` + strings.Repeat("9", registry.MaxRecordSize) + `"}`
	f.put("service-instances.big.b-1", huge)

	out, errOut, code := f.run("ls", "--max-keys", "25")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "skipped by clients: service-instances.junk."); n != maxRows {
		t.Errorf("%d skipped records listed, want %d:\n%s", n, maxRows, out)
	}
	lineWith(t, out, "skipped by clients: 5 more records")
	lineWith(t, out, "note: read the first 25 of the bucket's 31 keys (--max-keys")

	out, _, _ = f.run("ls", "--json", "--max-keys", "25")
	var got lsOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Services) != 1 || len(got.Services[0].Members) != 25 || !strings.Contains(got.Cut, "first 25 of the bucket's 31 keys") {
		t.Errorf("%+v", got)
	}

	out, _, code = f.run("check", "--max-keys", "25")
	if code != exitFailed || strings.Count(out, "service-instances.junk.") != maxRows {
		t.Errorf("exit %d:\n%s", code, out)
	}
	lineWith(t, out, "and 5 more (kitnats check --json lists them all)")
	lineWith(t, out, "keys", "note: read the first 25 of the bucket's 31 keys")

	out, _, _ = f.run("ls", "big")
	lineWith(t, out, "b-1", fmt.Sprintf("record too large: %d bytes, over the %d clients read", len(huge), registry.MaxRecordSize))
}

// TestCheckRollups: check says whether a writer of one key can purge the
// others — refused on a bucket CreateBucket makes, allowed on one with
// expiry markers (nats-server turns roll-ups on with them).
func TestCheckRollups(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{})
	if _, err := natskv.CreateBucket(ctxT(t), f.js, natskv.BucketConfig{Name: "marked", LimitMarkerTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	out, _, code := f.run("check")
	if code != exitOK {
		t.Errorf("exit %d:\n%s", code, out)
	}
	lineWith(t, out, "roll-ups", "roll-ups and purges refused")
	out, _, code = f.run("check", "--bucket", "marked")
	if code != exitOK {
		t.Errorf("exit %d:\n%s", code, out)
	}
	lineWith(t, out, "roll-ups", "note: allowed: any writer of one key can purge every other record")
	var got checkOutput
	out, _, _ = f.run("check", "--bucket", "marked", "--json")
	if err := json.Unmarshal([]byte(out), &got); err != nil || !got.Rollups || !got.ExpiryMarkers {
		t.Errorf("%v: %+v", err, got)
	}
	got = checkOutput{}
	out, _, _ = f.run("check", "--json")
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Rollups || got.Purges {
		t.Errorf("%v: %+v", err, got)
	}
}

// BenchmarkSafeJSON: the cost per byte of making JSON output safe, for a
// typical ls --json document and the worst input (every character one to
// escape, or invalid), side by side.
func BenchmarkSafeJSON(b *testing.B) {
	typical, err := json.Marshal(map[string]any{"service": "greeter", "instance": "greeter-1", "version": "1.2.3",
		"metadata": map[string]string{"zone": "eu-1", "kitnats.rpc": "instance"}, "client": "active", "offered": true})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"typical", typical},
		{"non-ascii", []byte(`{"greeting":"` + strings.Repeat("héllo wörld ", 20) + `"}`)},
		{"worst-c1", []byte(`"` + strings.Repeat("\u009b", 2000) + `"`)},
		{"worst-bidi", []byte(`"` + strings.Repeat("\u202e", 2000) + `"`)},
		{"worst-invalid", []byte(`"` + strings.Repeat("\xff", 4000) + `"`)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				safeJSON(c.in)
			}
		})
	}
}

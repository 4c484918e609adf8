package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// runPlain runs the command with no server flag.
func runPlain(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runWith(context.Background(), args, &out, &errb, func(string) string { return "" })
	return out.String(), errb.String(), code
}

func TestPermsPrintsTheTemplates(t *testing.T) {
	out, _, code := runPlain(t, "perms", "service", "greeter", "greeter-1", "--bucket", "reg", "--method", "hello")
	want, err := permissions.Template{Bucket: "reg", Methods: []string{"hello"}}.Service("greeter", "greeter-1")
	if err != nil || code != exitOK || out != want.Config() {
		t.Fatalf("service: exit %d, %v:\n%s", code, err, out)
	}
	out, _, code = runPlain(t, "perms", "client", "greeter", "billing", "--inbox-prefix", "_INBOX.c1", "--format", "nsc", "--name", "c1")
	wantc, _ := permissions.Template{InboxPrefix: "_INBOX.c1"}.Client("greeter", "billing")
	if code != exitOK || out != wantc.NSC("c1") {
		t.Fatalf("client: exit %d:\n%s", code, out)
	}
	out, _, code = runPlain(t, "perms", "operator", "--call", "*", "--layout", "aegis", "--format", "json")
	var got struct {
		Role    string `json:"role"`
		Publish []struct {
			Subject, Why string
		} `json:"publish"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK || got.Role != "operator" {
		t.Fatalf("operator: exit %d, %v:\n%s", code, err, out)
	}
	if last := got.Publish[len(got.Publish)-1]; last.Subject != "rpc.>" || last.Why == "" {
		t.Errorf("operator --call '*': %+v", got.Publish)
	}
	for _, bad := range [][]string{
		{"perms"},
		{"perms", "admin"},
		{"perms", "service", "greeter"},
		{"perms", "service", "gr.eeter", "i"},
		{"perms", "operator", "extra"},
		{"perms", "client", "--method", "hello"},
		{"perms", "client", "--call", "greeter"},
		{"perms", "client", "--format", "yaml"},
		{"perms", "client", "--inbox-prefix", "_INBOX.*"},
	} {
		if _, errOut, code := runPlain(t, bad...); code != exitUsage {
			t.Errorf("%q: exit %d: %s", bad, code, errOut)
		}
	}
}

// violations keeps what the server logs of refused operations: "Publish
// Violation - Subject ..." and "Subscription Violation - Subject ...".
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) Errorf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if strings.Contains(s, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, s)
		v.mu.Unlock()
	}
}
func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Fatalf(string, ...any)  {}
func (v *violations) Debugf(string, ...any)  {}
func (v *violations) Tracef(string, ...any)  {}

var violationSubject = regexp.MustCompile(`Violation - (?:Subject|Reply) "([^"]*)"`)

// of reports whether the server refused user something rule allows.
func (v *violations) of(user string, rule permissions.Rule) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, l := range v.lines {
		m := violationSubject.FindStringSubmatch(l)
		if m != nil && strings.Contains(l, "user:"+user+`"`) && natserr.Match(rule.Subject, m[1]) {
			return true
		}
	}
	return false
}

func (v *violations) String() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.lines, "\n")
}

// TestOperatorPermissions runs kitnats as a user holding what `kitnats
// perms operator --call greeter` prints: ls, ls SERVICE, check, watch and
// call work, and the server refuses it nothing but a look at another
// bucket, which kitnats reports as the permission it lacks. Without any one
// entry, the server refuses something (the two exceptions say why).
func TestOperatorPermissions(t *testing.T) {
	out, _, code := runPlain(t, "perms", "operator", "--call", "greeter", "--bucket", "reg")
	if code != exitOK {
		t.Fatal(out)
	}
	full, err := permissions.Template{Bucket: "reg"}.Operator("greeter")
	if err != nil {
		t.Fatal(err)
	}
	user := func(name string, conf string) string {
		return fmt.Sprintf("{ user: %q, password: pw\n%s}\n", name, conf)
	}
	users := user("admin", "") + user("operator", out)
	type variant struct {
		name string
		rule permissions.Rule
	}
	var variants []variant
	for i, r := range full.Publish {
		switch r.Subject {
		case "$JS.FC.KV_reg.>":
			// Flow control comes when a listing outgrows the window of
			// nats.go's KV watch; the key listing of watch is headers
			// only. Shown needed for a client's polling listing
			// (permissions.TestEveryClientEntryIsNeeded).
			continue
		case "$SRV.>":
			// For `nats micro`, not kitnats; shown sufficient in
			// permissions.TestChain.
			continue
		}
		p := *full
		p.Publish = append(append([]permissions.Rule{}, full.Publish[:i]...), full.Publish[i+1:]...)
		name := fmt.Sprintf("operator-%d", len(variants))
		users += user(name, p.Config())
		variants = append(variants, variant{name, r})
	}
	p := *full
	p.Subscribe = nil
	users += user("operator-noinbox", p.Config())
	variants = append(variants, variant{"operator-noinbox", full.Subscribe[0]})

	srv := natstest.StartConfig(t, "accounts: { APP: { jetstream: enabled, users: [\n"+users+"] } }\n")
	var v violations
	srv.NATSServer().SetLogger(&v, false, false)
	admin := natstest.Connect(t, srv.URL(), nats.UserInfo("admin", "pw"))
	js := natstest.JetStream(t, admin)
	b, err := natskv.CreateBucket(ctxT(t), js, natskv.BucketConfig{Name: "reg"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, srv: srv, nc: admin, js: js, b: b, env: map[string]string{"HOME": t.TempDir()}}
	svc, err := natsrpc.NewService(ctxT(t), admin, "greeter", "greeter-1", map[string]*natsrpc.Server{"hello": natsrpc.NewJSONServer(
		func(_ context.Context, name string) (string, error) { return "hello, " + name, nil })})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, "eu-1"))
	f.register(instance("billing", "billing-1", natskv.StatusActive, ""))

	// commands is what the operator does, each with the exit status it
	// should have; stop ends the sequence early.
	commands := func(t *testing.T, as string, stop func() bool) {
		auth := []string{"--user", as, "--password", "pw", "--connect-timeout", "3s"}
		for _, c := range []struct {
			args []string
			code int
		}{
			{[]string{"ls", "--bucket", "reg"}, exitOK},
			{[]string{"ls", "greeter", "--bucket", "reg"}, exitOK},
			{[]string{"check", "--bucket", "reg"}, exitOK},
			{[]string{"call", "greeter.hello", `"ops"`, "--bucket", "reg"}, exitOK},
			{[]string{"ls", "--bucket", "nope"}, exitFailed},
		} {
			stdout, stderr, code := f.run(append(c.args, auth...)...)
			if stop != nil && stop() {
				return
			}
			if stop == nil && code != c.code {
				t.Errorf("kitnats %q: exit %d\n%s%s", c.args, code, stdout, stderr)
			}
			if slices.Contains(c.args, "nope") && stop == nil && !strings.Contains(stderr, `permission denied: the NATS user may not publish to "$JS.API.STREAM.INFO.KV_nope"`) {
				t.Errorf("ls of another bucket: %s", stderr)
			}
		}
		// watch, until both services are in (or stop).
		out, errOut := &syncBuffer{}, &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- runWith(ctx, append([]string{"watch", "--server", f.srv.URL(), "--rescan", "200ms", "--bucket", "reg"}, auth...), out, errOut, f.getenv)
		}()
		deadline := time.Now().Add(waitFor)
		for !(stop != nil && stop()) && time.Now().Before(deadline) {
			if strings.Contains(out.String(), "watching       billing") && strings.Contains(out.String(), "watching       greeter") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		code := <-done
		if stop == nil && (code != exitOK || !strings.Contains(out.String(), "added          billing/billing-1")) {
			t.Errorf("watch: exit %d\n%s%s", code, out.String(), errOut.String())
		}
	}

	t.Run("all", func(t *testing.T) {
		commands(t, "operator", nil)
		// Refused only another bucket.
		for _, l := range strings.Split(v.String(), "\n") {
			if strings.Contains(l, `user:operator"`) && !strings.Contains(l, `"$JS.API.STREAM.INFO.KV_nope"`) {
				t.Errorf("the operator was refused: %s", l)
			}
		}
	})
	for _, va := range variants {
		t.Run(va.rule.Entry(), func(t *testing.T) {
			refused := func() bool { return v.of(va.name, va.rule) }
			commands(t, va.name, refused)
			if !refused() {
				t.Errorf("without %q (%s) nothing was refused; the server logged:\n%s", va.rule.Entry(), va.rule.Why, v.String())
			}
		})
	}
}

package main

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// runBare runs the command without adding --server.
func (f *fixture) runBare(args ...string) (string, string, int) {
	f.t.Helper()
	var out, errb bytes.Buffer
	code := runWith(ctxT(f.t), args, &out, &errb, f.getenv)
	return out.String(), errb.String(), code
}

func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

func TestConnection(t *testing.T) {
	f := newFixture(t, natskv.BucketConfig{})
	f.register(instance("greeter", "greeter-1", natskv.StatusActive, ""))
	dead := deadURL(t)

	t.Run("no server", func(t *testing.T) {
		_, errOut, code := f.runBare("ls", "--server", dead)
		if code != exitFailed || !strings.Contains(errOut, "no NATS server answers at "+dead) || !strings.Contains(errOut, "NATS_URL") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("password hidden", func(t *testing.T) {
		_, errOut, _ := f.runBare("ls", "--server", strings.Replace(dead, "nats://", "nats://me:secret@", 1))
		if strings.Contains(errOut, "secret") || !strings.Contains(errOut, "me:xxxxx@") {
			t.Errorf("%s", errOut)
		}
	})
	t.Run("no bucket", func(t *testing.T) {
		_, errOut, code := f.run("ls", "--bucket", "registry")
		if code != exitFailed || !strings.Contains(errOut, `no bucket "registry" at `) ||
			!strings.Contains(errOut, "buckets there: service_registry; pick one with --bucket") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("bad bucket name", func(t *testing.T) {
		_, errOut, code := f.run("check", "--bucket", "a.b")
		if code != exitFailed || !strings.Contains(errOut, `--bucket: kitnats: invalid bucket name "a.b"`) {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("bad liveness", func(t *testing.T) {
		_, errOut, code := f.run("ls", "--heartbeat", "10s", "--ttl", "5s")
		if code != exitUsage || !strings.Contains(errOut, "WithTTL: 5s does not outlast the heartbeat") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("tls pair", func(t *testing.T) {
		_, errOut, code := f.run("ls", "--tls-cert", "c.pem")
		if code != exitFailed || !strings.Contains(errOut, "--tls-cert and --tls-key go together") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("creds missing", func(t *testing.T) {
		_, errOut, code := f.run("ls", "--creds", filepath.Join(t.TempDir(), "none.creds"))
		if code != exitFailed || !strings.Contains(errOut, "none.creds") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})

	ok := func(t *testing.T) func(out, errOut string, code int) {
		return func(out, errOut string, code int) {
			t.Helper()
			if code != exitOK || !strings.Contains(out, "greeter  1") {
				t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
		}
	}
	t.Run("NATS_URL", func(t *testing.T) {
		f.env["NATS_URL"] = f.srv.URL()
		defer delete(f.env, "NATS_URL")
		ok(t)(f.runBare("ls"))
	})
	ctxDir := filepath.Join(f.env["HOME"], ".config", "nats")
	writeFile(t, filepath.Join(ctxDir, "context", "dev.json"), `{"description":"dev","url":"`+f.srv.URL()+`","user":"","creds":""}`)
	writeFile(t, filepath.Join(ctxDir, "context", "gone.json"), `{"url":"`+dead+`"}`)
	t.Run("context", func(t *testing.T) {
		ok(t)(f.runBare("ls", "--context", "dev"))
	})
	t.Run("NATS_CONTEXT", func(t *testing.T) {
		f.env["NATS_CONTEXT"] = "dev"
		defer delete(f.env, "NATS_CONTEXT")
		ok(t)(f.runBare("ls"))
	})
	t.Run("selected context", func(t *testing.T) {
		writeFile(t, filepath.Join(ctxDir, "context.txt"), "dev\n")
		defer writeFile(t, filepath.Join(ctxDir, "context.txt"), "")
		ok(t)(f.runBare("ls"))
	})
	t.Run("flag over context", func(t *testing.T) {
		ok(t)(f.runBare("ls", "--context", "gone", "--server", f.srv.URL()))
	})
	t.Run("NATS_URL over context", func(t *testing.T) {
		f.env["NATS_URL"] = f.srv.URL()
		defer delete(f.env, "NATS_URL")
		ok(t)(f.runBare("ls", "--context", "gone"))
	})
	t.Run("context of a dead server", func(t *testing.T) {
		_, errOut, code := f.runBare("ls", "--context", "gone")
		if code != exitFailed || !strings.Contains(errOut, "no NATS server answers at "+dead) {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("no such context", func(t *testing.T) {
		_, errOut, code := f.runBare("ls", "--context", "nope")
		if code != exitFailed || !strings.Contains(errOut, `context "nope"`) {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
}

func TestNoJetStream(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(waitFor) {
		t.Fatal("server not ready")
	}
	var out, errb bytes.Buffer
	code := runWith(ctxT(t), []string{"ls", "--server", srv.ClientURL()}, &out, &errb, func(string) string { return "" })
	if code != exitFailed || !strings.Contains(errb.String(), "JetStream is not enabled") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}

func TestHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "kitnats [command]", "ls ", "watch ", "call ", "check ", "--server", "--context", "--creds", "--nkey", "--tls-cert", "--tls-key", "--tls-ca", "--user", "--password", "--bucket", "--layout", "Exit status"}},
		{[]string{"ls", "--help"}, []string{"kitnats ls [SERVICE]", "--json", "--instances", "stale", "standby", "unhealthy", "--server"}},
		{[]string{"watch", "--help"}, []string{"kitnats watch [SERVICE]", "watch lost", "watch resumed", "expired", "--heartbeats", "--json"}},
		{[]string{"call", "--help"}, []string{"kitnats call SERVICE.METHOD [JSON]", "--instance", "--queue", "--timeout", "--count", "--concurrency", "trace ID"}},
		{[]string{"check", "--help"}, []string{"kitnats check", "expiry markers", "--json"}},
		{[]string{"help", "call"}, []string{"kitnats call SERVICE.METHOD"}},
	} {
		var out, errb bytes.Buffer
		code := runWith(ctxT(t), c.args, &out, &errb, func(string) string { return "" })
		if code != exitOK {
			t.Errorf("%v: exit %d: %s", c.args, code, errb.String())
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: no %q in:\n%s", c.args, w, out.String())
			}
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[string]string{"350ms": "350ms", "4.25s": "4.2s", "190s": "3m10s", "2h5m10s": "2h5m", "-2s": "-2s", "31s": "31s", "2.5s": "2.5s"} {
		dur, _ := time.ParseDuration(d)
		if got := human(dur); got != want {
			t.Errorf("human(%s) = %q, want %q", d, got, want)
		}
	}
}

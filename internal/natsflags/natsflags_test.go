package natsflags

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestRegisterBothFlagPackages(t *testing.T) {
	var a, b Auth
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	a.Register(fs, ", for -nats")
	if err := fs.Parse([]string{"-creds", "u.creds", "-user", "u", "-password", "p", "-inbox-prefix", "_INBOX.u", "-tls-first"}); err != nil {
		t.Fatal(err)
	}
	pf := pflag.NewFlagSet("kitnats", pflag.ContinueOnError)
	b.Register(pf, "")
	if err := pf.Parse([]string{"--creds", "u.creds", "--user", "u", "--password", "p", "--inbox-prefix", "_INBOX.u", "--tls-first"}); err != nil {
		t.Fatal(err)
	}
	want := Auth{Creds: "u.creds", User: "u", Password: "p", InboxPrefix: "_INBOX.u", TLSFirst: true}
	if a != want || b != want {
		t.Errorf("flag: %+v\npflag: %+v", a, b)
	}
	if u := fs.Lookup("nkey").Usage; !strings.HasSuffix(u, ", for -nats") {
		t.Errorf("usage %q", u)
	}
}

func TestOptions(t *testing.T) {
	opts, err := Auth{}.Options()
	if err != nil || len(opts) != 0 {
		t.Errorf("nothing set: %d options, %v", len(opts), err)
	}
	opts, err = Auth{User: "u", Password: "p", Token: "t", InboxPrefix: "_INBOX.u", TLSCert: "c", TLSKey: "k", TLSCA: "ca", TLSFirst: true}.Options()
	if err != nil || len(opts) != 6 {
		t.Errorf("%d options, %v", len(opts), err)
	}
	for _, a := range []Auth{{TLSCert: "c"}, {TLSKey: "k"}} {
		if _, err := a.Options(); err == nil || !strings.Contains(err.Error(), "--tls-cert and --tls-key go together") {
			t.Errorf("%+v: %v", a, err)
		}
	}
	if _, err := (Auth{NKey: filepath.Join(t.TempDir(), "none.nk")}).Options(); err == nil || !strings.Contains(err.Error(), "--nkey:") {
		t.Errorf("a missing seed file: %v", err)
	}
}

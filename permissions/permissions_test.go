package permissions_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

func TestServiceLists(t *testing.T) {
	p, err := permissions.Template{Bucket: "service_registry", Layout: natskv.LayoutDotted}.Service("greeter", "greeter-1")
	if err != nil {
		t.Fatal(err)
	}
	wantPub := []string{
		"$KV.service_registry.service-instances.greeter.greeter-1",
		"$JS.API.STREAM.INFO.KV_service_registry",
		"_INBOX.>",
	}
	wantSub := []string{
		"rpc.greeter.* rpc.greeter",
		"rpc.greeter.*.greeter-1",
		"$SRV.PING", "$SRV.PING.greeter", "$SRV.PING.greeter.*",
		"$SRV.INFO", "$SRV.INFO.greeter", "$SRV.INFO.greeter.*",
		"$SRV.STATS", "$SRV.STATS.greeter", "$SRV.STATS.greeter.*",
		"_INBOX.>",
	}
	if got := p.PublishAllow(); !slices.Equal(got, wantPub) {
		t.Errorf("publish:\n got %q\nwant %q", got, wantPub)
	}
	if got := p.SubscribeAllow(); !slices.Equal(got, wantSub) {
		t.Errorf("subscribe:\n got %q\nwant %q", got, wantSub)
	}
	for _, r := range append(p.Publish, p.Subscribe...) {
		if r.Why == "" {
			t.Errorf("%s: no reason", r.Entry())
		}
	}

	aegis, err := permissions.Template{Layout: natskv.LayoutAegis, Methods: []string{"hello"}, InboxPrefix: "_INBOX.g1", ReplyPrefix: "_INBOX"}.
		Service("greeter", "greeter-1")
	if err != nil {
		t.Fatal(err)
	}
	wantPub = []string{
		"$KV.service_registry.service-instances__greeter__greeter-1",
		"$JS.API.STREAM.INFO.KV_service_registry",
		"_INBOX.>",
	}
	if got := aegis.PublishAllow(); !slices.Equal(got, wantPub) {
		t.Errorf("aegis publish:\n got %q\nwant %q", got, wantPub)
	}
	sub := aegis.SubscribeAllow()
	if sub[0] != "rpc.greeter.hello rpc.greeter" || sub[1] != "rpc.greeter.hello.greeter-1" || sub[len(sub)-1] != "_INBOX.g1.>" {
		t.Errorf("aegis subscribe: %q", sub)
	}
}

func TestClientAndOperatorLists(t *testing.T) {
	c, err := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Client("greeter", "billing")
	if err != nil {
		t.Fatal(err)
	}
	pub := c.PublishAllow()
	for _, want := range []string{"$JS.API.STREAM.INFO.KV_reg", "$JS.API.CONSUMER.CREATE.KV_reg.>", "$JS.API.CONSUMER.MSG.NEXT.KV_reg.*",
		"$JS.API.CONSUMER.DELETE.KV_reg.*", "$JS.API.DIRECT.GET.KV_reg", "$JS.FC.KV_reg.>", "rpc.greeter.>", "rpc.billing.>"} {
		if !slices.Contains(pub, want) {
			t.Errorf("client lacks %q", want)
		}
	}
	if len(pub) != 8 || !slices.Equal(c.SubscribeAllow(), []string{"_INBOX.>"}) {
		t.Errorf("client: %q %q", pub, c.SubscribeAllow())
	}
	for _, p := range pub {
		if strings.HasPrefix(p, "$KV.") || natserr.Match(p, "$KV.reg.service-instances.greeter.x") {
			t.Errorf("client may write the registry: %q", p)
		}
	}

	o, err := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Operator()
	if err != nil {
		t.Fatal(err)
	}
	opub := o.PublishAllow()
	if slices.ContainsFunc(opub, func(s string) bool { return strings.HasPrefix(s, "rpc.") }) {
		t.Errorf("a read-only operator may call: %q", opub)
	}
	if !slices.Contains(opub, "$SRV.>") || slices.Contains(opub, "$JS.API.STREAM.NAMES") {
		t.Errorf("operator: %q", opub)
	}
	all, err := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Operator(permissions.AllServices)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(all.PublishAllow(), "rpc.>") {
		t.Errorf("operator of every service: %q", all.PublishAllow())
	}
}

func TestRefused(t *testing.T) {
	cases := map[string]func() error{
		"bad bucket": func() error {
			_, err := permissions.Template{Bucket: "a.b", Layout: natskv.LayoutDotted}.Service("s", "i")
			return err
		},
		"bad service": func() error {
			_, err := permissions.Template{Bucket: "", Layout: natskv.LayoutDotted}.Service("s.x", "i")
			return err
		},
		"bad instance": func() error {
			_, err := permissions.Template{Bucket: "", Layout: natskv.LayoutDotted}.Service("s", "*")
			return err
		},
		"aegis __": func() error {
			_, err := permissions.Template{Bucket: "", Layout: natskv.LayoutAegis}.Service("a__b", "i")
			return err
		},
		"bad method": func() error { _, err := permissions.Template{Methods: []string{"a.b"}}.Service("s", "i"); return err },
		"called service": func() error {
			_, err := permissions.Template{Bucket: "", Layout: natskv.LayoutDotted}.Client("x>")
			return err
		},
		"inbox wildcard": func() error { _, err := permissions.Template{InboxPrefix: "_INBOX.*"}.Client(); return err },
		"inbox dot":      func() error { _, err := permissions.Template{InboxPrefix: "_INBOX."}.Operator(); return err },
		"reply empty tk": func() error { _, err := permissions.Template{ReplyPrefix: "a..b"}.Service("s", "i"); return err },
		"inbox escape": func() error {
			_, err := permissions.Template{InboxPrefix: "_INBOX.\x1b]0;pwned\x07"}.Client()
			return err
		},
		"reply bidi": func() error {
			_, err := permissions.Template{ReplyPrefix: "_INBOX.\u202e"}.Service("s", "i")
			return err
		},
		"inbox quote":   func() error { _, err := permissions.Template{InboxPrefix: `_INBOX."`}.Operator(); return err },
		"inbox newline": func() error { _, err := permissions.Template{InboxPrefix: "_INBOX.a\nb"}.Operator(); return err },
		"inbox huge": func() error {
			_, err := permissions.Template{InboxPrefix: strings.Repeat("a", 1<<20)}.Operator()
			return err
		},
		"method star": func() error {
			_, err := permissions.Template{Methods: []string{"hello", "*"}}.Service("s", "i")
			return err
		},
	}
	for name, f := range cases {
		err := f()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		// The error quotes the input bounded, and escaped for a terminal.
		if msg := err.Error(); len(msg) > 512 || strings.ContainsAny(msg, "\x1b\x07\n\u202e") {
			t.Errorf("%s: error of %d bytes: %.200q", name, len(msg), msg)
		}
	}
	if err := func() error {
		_, err := permissions.Template{Bucket: "", Layout: natskv.LayoutDotted}.Service("s.x", "i")
		return err
	}(); !errors.Is(err, wire.ErrInvalidName) {
		t.Errorf("a bad name is not a name error: %v", err)
	}
}

func TestConfigAndNSC(t *testing.T) {
	p, err := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Service("greeter", "greeter-1")
	if err != nil {
		t.Fatal(err)
	}
	conf := p.Config()
	for _, want := range []string{
		"# kitnats service greeter/greeter-1\npermissions: {\n  publish: {\n    allow: [\n",
		`      "$KV.reg.service-instances.greeter.greeter-1"  # its own registry key`,
		`      "rpc.greeter.* rpc.greeter"  # the service-wide subject`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "allow_responses:") {
		t.Error("allow_responses granted")
	}
	nsc := p.NSC("greeter-1")
	for _, want := range []string{"nsc add user --name 'greeter-1'", "--allow-pub '$KV.reg.service-instances.greeter.greeter-1'", "--allow-sub 'rpc.greeter.* rpc.greeter'"} {
		if !strings.Contains(nsc, want) {
			t.Errorf("nsc lacks %q:\n%s", want, nsc)
		}
	}
	empty := (&permissions.Permissions{Role: "nothing"}).Config()
	if strings.Count(empty, `deny: [">"]`) != 2 {
		t.Errorf("an empty role allows everything:\n%s", empty)
	}
}

func TestMerge(t *testing.T) {
	s, _ := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Service("billing", "billing-1")
	c, _ := permissions.Template{Bucket: "reg", Layout: natskv.LayoutDotted}.Client("greeter")
	m := permissions.Merge(s, nil, c)
	if m.Role != "service billing/billing-1 + client of greeter" {
		t.Errorf("role %q", m.Role)
	}
	pub := m.PublishAllow()
	if n := strings.Count(strings.Join(pub, "\n"), "$JS.API.STREAM.INFO.KV_reg"); n != 1 {
		t.Errorf("stream info %d times: %q", n, pub)
	}
	if !slices.Contains(pub, "$KV.reg.service-instances.billing.billing-1") || !slices.Contains(pub, "rpc.greeter.>") {
		t.Errorf("merged: %q", pub)
	}
	if !slices.Equal(m.SubscribeAllow()[:1], []string{"rpc.billing.* rpc.billing"}) || slices.Index(m.SubscribeAllow(), "_INBOX.>") != len(m.SubscribeAllow())-1 {
		t.Errorf("merged subscribe: %q", m.SubscribeAllow())
	}
}

func TestErrorIdentity(t *testing.T) {
	pe := &permissions.PermissionError{Op: "publish", Subject: "x", Err: nats.ErrPermissionViolation}
	if !errors.Is(pe, permissions.ErrPermission) || !errors.Is(pe, nats.ErrPermissionViolation) {
		t.Error("a permission error matches both kitnats' sentinel and nats.go's")
	}
}

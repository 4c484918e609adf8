package permissions_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// operatorMode is a server in operator mode (JWTs, a memory resolver) with
// one JetStream account, whose users connect with creds files, as nsc
// makes them.
type operatorMode struct {
	t       *testing.T
	account nkeys.KeyPair
	conf    string
}

func newOperatorMode(t *testing.T) *operatorMode {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	must(err)
	account := func(js bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(op)
		must(err)
		return kp, pub, tok
	}
	_, sysPub, sysJWT := account(false)
	app, appPub, appJWT := account(true)
	conf := fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %s\n  %s: %s\n}\n",
		opJWT, sysPub, sysPub, sysJWT, appPub, appJWT)
	return &operatorMode{t: t, account: app, conf: conf}
}

// creds writes the creds file of a new user of the account holding p (nil:
// no limits), as `nsc add user` with p.NSC's flags and `nsc generate creds`
// would.
func (o *operatorMode) creds(name string, p *permissions.Permissions) string {
	o.t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		o.t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if p != nil {
		uc.Pub.Allow.Add(p.PublishAllow()...)
		uc.Sub.Allow.Add(p.SubscribeAllow()...)
	}
	tok, err := uc.Encode(o.account)
	if err != nil {
		o.t.Fatal(err)
	}
	seed, _ := kp.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		o.t.Fatal(err)
	}
	path := filepath.Join(o.t.TempDir(), name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		o.t.Fatal(err)
	}
	return path
}

// TestCreds: the templates as JWT permissions, users connecting with creds
// files. A service instance registers and serves, a client watches and
// calls it; the instance may not register as another.
func TestCreds(t *testing.T) {
	o := newOperatorMode(t)
	tpl := permissions.Template{Bucket: bucketName}
	adminCreds := o.creds("admin", nil)
	svcCreds := o.creds("greeter-1", must(t)(tpl.Service("greeter", "greeter-1")))
	cliCreds := o.creds("client", must(t)(tpl.Client("greeter")))
	srv := natstest.StartConfig(t, o.conf)
	ctx := ctxT(t)

	admin := natstest.Connect(t, srv.URL(), nats.UserCredentials(adminCreds))
	if err := natstest.WaitJetStream(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := natskv.CreateBucket(ctx, natstest.JetStream(t, admin), natskv.BucketConfig{Name: bucketName}); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	snc := natstest.Connect(t, srv.URL(), nats.UserCredentials(svcCreds), nats.ErrorHandler(rec.handler))
	sb, err := bind(ctx, snc)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := natsrpc.NewService(ctx, snc, "greeter", "greeter-1", map[string]*natsrpc.Server{"hello": helloServer("greeter-1")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	reg, err := natskv.NewRegistrar(sb, natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-1", Version: "1.0.0"}, nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := reg.RegisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	fake, err := natskv.NewRegistrar(sb, natskv.Instance{ServiceName: "greeter", InstanceID: "greeter-2", Version: "1.0.0"}, nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	if err := fake.RegisterContext(ctx); !errorsIsPermission(err) {
		t.Fatalf("registered as greeter-2: %v", err)
	}

	cnc := natstest.Connect(t, srv.URL(), nats.UserCredentials(cliCreds))
	cb, err := bind(ctx, cnc)
	if err != nil {
		t.Fatal(err)
	}
	in, err := natskv.NewInstancerContext(ctx, cb, "greeter", nil, liveness)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	if got := ids(in.Instances()); !slices.Equal(got, []string{"greeter-1"}) {
		t.Fatalf("client sees %v", got)
	}
	c, err := natsrpc.NewInstanceClient(cnc, "greeter", "hello", "greeter-1", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[string])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := natsrpc.Call[string](ctx, c.Endpoint(), "creds"); err != nil || got != "hello, creds from greeter-1" {
		t.Fatalf("call: %q %v", got, err)
	}
	if err := reg.DeregisterContext(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pe := range rec.all() {
		if pe.Subject != "$KV."+bucketName+".service-instances.greeter.greeter-2" {
			t.Errorf("refused: %v", pe)
		}
	}
}

func errorsIsPermission(err error) bool { return errors.Is(err, permissions.ErrPermission) }

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/aegis-sdk/kitnats/internal/natstest"
	"github.com/aegis-sdk/kitnats/permissions"
)

// TestQuickstartAuthenticated runs the demo against a server that asks for
// a user and password, as `go run ./examples/quickstart -nats URL -user U
// -password P` does. The user holds the union of the roles the demo plays —
// three instances of greeter and their client, with an inbox of its own —
// and the right to create the demo's bucket: no more.
func TestQuickstartAuthenticated(t *testing.T) {
	const bucket = "kitnats_quickstart"
	tpl := permissions.Template{Bucket: bucket, InboxPrefix: "_INBOX.demo"}
	var roles []*permissions.Permissions
	for _, id := range []string{"greeter-1", "greeter-2", "greeter-3"} {
		p, err := tpl.Service(service, id)
		if err != nil {
			t.Fatal(err)
		}
		roles = append(roles, p)
	}
	c, err := tpl.Client(service)
	if err != nil {
		t.Fatal(err)
	}
	create := &permissions.Permissions{Role: "provisioner", Publish: []permissions.Rule{
		{Subject: "$JS.API.INFO", Why: "nats.go asks for the account's limits before creating a bucket"},
		{Subject: "$JS.API.STREAM.CREATE.KV_" + bucket, Why: "natskv.CreateBucket"},
	}}
	p := permissions.Merge(append(roles, c, create)...)
	srv := natstest.StartConfig(t, fmt.Sprintf("accounts: { APP: { jetstream: enabled, users: [ { user: demo, password: s3cret\n%s} ] } }\n", p.Config()))

	saved := auth
	defer func() { auth = saved }()
	auth.User, auth.Password, auth.InboxPrefix = "demo", "wrong", "_INBOX.demo"
	if err := run(config{natsURL: srv.URL(), bucket: bucket, duration: time.Second, workers: 2}); err == nil {
		t.Fatal("ran with a wrong password")
	}
	auth.Password = "s3cret"
	if err := run(config{natsURL: srv.URL(), bucket: bucket, duration: 1500 * time.Millisecond, workers: 4}); err != nil {
		t.Fatal(err)
	}
}

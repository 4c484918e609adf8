package main

import (
	"flag"

	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/internal/natsflags"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// The credentials the demo's connections present to a server given with
// -nats, as the nats CLI and kitnats name them. The embedded server asks
// for none. The demo creates its bucket and plays every role, so its user
// needs the rights of all of them (`kitnats perms` prints each role's).
var auth natsflags.Auth

func init() { auth.Register(flag.CommandLine, ", for -nats") }

// connect opens one of the demo's connections, named, with the credentials
// given. natskv.ReconnectOptions: discovery back 0.12 s after a restarted server,
// where nats.go's defaults wait up to 2 s.
func connect(url, name string) (*nats.Conn, error) {
	opts, err := auth.Options()
	if err != nil {
		return nil, err
	}
	return nats.Connect(url, append(append(natskv.ReconnectOptions(), nats.Name(name)), opts...)...)
}

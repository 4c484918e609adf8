package main

import (
	"flag"

	"github.com/nats-io/nats.go"
)

// The credentials the demo's connections present to a server given with
// -nats, as the nats CLI and kitnats name them. The embedded server asks
// for none. The demo creates its bucket and plays every role, so its user
// needs the rights of all of them (`kitnats perms` prints each role's).
var auth struct {
	creds, nkey            string
	user, password, token  string
	tlsCert, tlsKey, tlsCA string
	inboxPrefix            string
}

func init() {
	flag.StringVar(&auth.creds, "creds", "", "user credentials file (JWT and seed), for -nats")
	flag.StringVar(&auth.nkey, "nkey", "", "user NKey seed file, for -nats")
	flag.StringVar(&auth.user, "user", "", "user name, for -nats")
	flag.StringVar(&auth.password, "password", "", "password, for -nats")
	flag.StringVar(&auth.token, "token", "", "authentication token, for -nats")
	flag.StringVar(&auth.tlsCert, "tls-cert", "", "TLS client certificate file, for -nats")
	flag.StringVar(&auth.tlsKey, "tls-key", "", "TLS client private key file, for -nats")
	flag.StringVar(&auth.tlsCA, "tls-ca", "", "TLS CA certificate file to verify the server with, for -nats")
	flag.StringVar(&auth.inboxPrefix, "inbox-prefix", "", "inbox prefix of the connections (a user may subscribe to its own only)")
}

// authOptions are the nats.go options for the credentials given; an
// unreadable file fails the connection that uses them.
func authOptions() []nats.Option {
	var opts []nats.Option
	if auth.creds != "" {
		opts = append(opts, nats.UserCredentials(auth.creds))
	}
	if auth.nkey != "" {
		path := auth.nkey
		opts = append(opts, func(o *nats.Options) error {
			opt, err := nats.NkeyOptionFromSeed(path)
			if err != nil {
				return err
			}
			return opt(o)
		})
	}
	if auth.user != "" || auth.password != "" {
		opts = append(opts, nats.UserInfo(auth.user, auth.password))
	}
	if auth.token != "" {
		opts = append(opts, nats.Token(auth.token))
	}
	if auth.tlsCert != "" || auth.tlsKey != "" {
		opts = append(opts, nats.ClientCert(auth.tlsCert, auth.tlsKey))
	}
	if auth.tlsCA != "" {
		opts = append(opts, nats.RootCAs(auth.tlsCA))
	}
	if auth.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(auth.inboxPrefix))
	}
	return opts
}

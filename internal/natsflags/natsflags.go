// Package natsflags is the nats CLI's authentication and inbox flags
// (--creds, --nkey, --user/--password, --token, --tls-cert/--tls-key/--tls-ca,
// --tls-first, --inbox-prefix) and the nats.go options they stand for, shared
// by cmd/kitnats and the examples so both connect the same way.
package natsflags

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Auth is what a connection presents to the server, and where its replies
// arrive.
type Auth struct {
	Creds, NKey            string // credentials file (JWT and seed); NKey seed file
	User, Password, Token  string
	TLSCert, TLSKey, TLSCA string
	TLSFirst               bool // TLS handshake before the server's INFO
	InboxPrefix            string
}

// FlagSet is what both the standard library's flag.FlagSet and pflag's
// offer.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
	BoolVar(p *bool, name string, value bool, usage string)
}

// Register adds the flags to fs, named as the nats CLI names them; note
// ends every usage text (", for -nats"), or is empty.
func (a *Auth) Register(fs FlagSet, note string) {
	fs.StringVar(&a.Creds, "creds", "", "user credentials file (JWT and seed)"+note)
	fs.StringVar(&a.NKey, "nkey", "", "user NKey seed file"+note)
	fs.StringVar(&a.TLSCert, "tls-cert", "", "TLS client certificate file"+note)
	fs.StringVar(&a.TLSKey, "tls-key", "", "TLS client private key file"+note)
	fs.StringVar(&a.TLSCA, "tls-ca", "", "TLS CA certificate file to verify the server with"+note)
	fs.BoolVar(&a.TLSFirst, "tls-first", false, "TLS handshake before the server's INFO (servers with handshake_first)"+note)
	fs.StringVar(&a.User, "user", "", "user name"+note)
	fs.StringVar(&a.Password, "password", "", "password"+note)
	fs.StringVar(&a.Token, "token", "", "authentication token"+note)
	fs.StringVar(&a.InboxPrefix, "inbox-prefix", "", "custom inbox prefix for replies (a user may subscribe to its own only)"+note)
}

// Options are the nats.go options for what is set. A file that cannot be
// read (an NKey seed) or a half-given pair is an error here, before any
// connection is made.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.Creds != "" {
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(a.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, o)
	}
	switch {
	case a.TLSCert != "" && a.TLSKey != "":
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	case a.TLSCert != "" || a.TLSKey != "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if a.User != "" || a.Password != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		opts = append(opts, nats.Token(a.Token))
	}
	if a.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.InboxPrefix))
	}
	return opts, nil
}

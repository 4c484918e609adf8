package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/aegis-sdk/kitnats/internal/natsflags"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

const defaultServer = nats.DefaultURL // nats://127.0.0.1:4222

// connFlags are the connection flags, named as the nats CLI names them.
type connFlags struct {
	server   string
	context  string
	auth     natsflags.Auth
	jsDomain string
	timeout  time.Duration
}

func (c *connFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&c.server, "server", "s", defaultServer, "NATS server URLs, comma separated (env NATS_URL)")
	fs.StringVar(&c.context, "context", "", "a nats CLI context by name (~/.config/nats/context/NAME.json; env NATS_CONTEXT; default: the nats CLI's selected one)")
	c.auth.Register(fs, "")
	fs.StringVar(&c.jsDomain, "js-domain", "", "JetStream domain of the registry bucket")
	fs.DurationVar(&c.timeout, "connect-timeout", 5*time.Second, "time allowed to connect and for each JetStream request")
}

// natsContext is the part of a nats CLI context file kitnats understands.
type natsContext struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	JSDomain    string `json:"jetstream_domain"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`
}

// configDir is where the nats CLI keeps its contexts.
func configDir(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "nats")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "nats")
	}
	return ""
}

// loadContext reads the named context, or the selected one when name is
// empty (none selected: a zero context).
func loadContext(name string, getenv func(string) string) (natsContext, string, error) {
	dir := configDir(getenv)
	if name == "" && dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, "context.txt")); err == nil {
			name = strings.TrimSpace(string(b))
		}
	}
	if name == "" {
		return natsContext{}, "", nil
	}
	if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return natsContext{}, "", fmt.Errorf("invalid context name %q", name)
	}
	if dir == "" {
		return natsContext{}, "", fmt.Errorf("context %q: no HOME or XDG_CONFIG_HOME to find it in", name)
	}
	path := filepath.Join(dir, "context", name+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		return natsContext{}, "", fmt.Errorf("context %q: %w", name, err)
	}
	var c natsContext
	if err := json.Unmarshal(b, &c); err != nil {
		return natsContext{}, "", fmt.Errorf("context %q: %s: %w", name, path, err)
	}
	home := getenv("HOME")
	for _, p := range []*string{&c.Creds, &c.NKey, &c.Cert, &c.Key, &c.CA} {
		if rest, ok := strings.CutPrefix(*p, "~/"); ok && home != "" {
			*p = filepath.Join(home, rest)
		}
	}
	return c, name, nil
}

// resolve merges, lowest first: the context, NATS_URL, then the flags the
// user set. changed says whether a flag was given.
func (c connFlags) resolve(changed func(string) bool, getenv func(string) string) (connFlags, error) {
	name := c.context
	if name == "" {
		name = getenv("NATS_CONTEXT")
	}
	ctx, _, err := loadContext(name, getenv)
	if err != nil {
		return c, err
	}
	out := c
	pick := func(flag string, dst *string, fromCtx string) {
		if !changed(flag) && fromCtx != "" {
			*dst = fromCtx
		}
	}
	pick("server", &out.server, ctx.URL)
	if u := getenv("NATS_URL"); u != "" && !changed("server") {
		out.server = u
	}
	pick("creds", &out.auth.Creds, ctx.Creds)
	pick("nkey", &out.auth.NKey, ctx.NKey)
	pick("tls-cert", &out.auth.TLSCert, ctx.Cert)
	pick("tls-key", &out.auth.TLSKey, ctx.Key)
	pick("tls-ca", &out.auth.TLSCA, ctx.CA)
	pick("user", &out.auth.User, ctx.User)
	pick("password", &out.auth.Password, ctx.Password)
	pick("token", &out.auth.Token, ctx.Token)
	pick("inbox-prefix", &out.auth.InboxPrefix, ctx.InboxPrefix)
	pick("js-domain", &out.jsDomain, ctx.JSDomain)
	if !changed("tls-first") && ctx.TLSFirst {
		out.auth.TLSFirst = true
	}
	return out, nil
}

// options turns the settings into nats.go options.
func (c connFlags) options() ([]nats.Option, error) {
	auth, err := c.auth.Options()
	if err != nil {
		return nil, err
	}
	return append([]nats.Option{nats.Name("kitnats"), nats.Timeout(c.timeout)}, auth...), nil
}

// redact hides passwords in a list of server URLs, for messages.
func redact(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// connect dials with the settings and turns the usual failures into
// sentences.
func (c connFlags) connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.server, append(opts, extra...)...)
	if err == nil {
		return nc, nil
	}
	where := redact(c.server)
	switch {
	case errors.Is(err, nats.ErrNoServers):
		return nil, fmt.Errorf("no NATS server answers at %s (%w): start one, or point --server, NATS_URL or --context at yours", where, err)
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return nil, fmt.Errorf("not authorised at %s (%w): check --creds, --nkey, --user/--password, --token or the context", where, err)
	}
	return nil, fmt.Errorf("connect to %s: %w", where, err)
}

// jetStream returns the JetStream API in the configured domain.
func (c connFlags) jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	if c.jsDomain != "" {
		return jetstream.NewWithDomain(nc, c.jsDomain)
	}
	return jetstream.New(nc)
}

// bindBucket binds the registry bucket, or says why it cannot: no
// JetStream, no such bucket (and which there are), an invalid name.
func bindBucket(ctx context.Context, js jetstream.JetStream, name, where string, timeout time.Duration) (*natskv.Bucket, error) {
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := natskv.BindBucket(bctx, js, name)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, wire.ErrInvalidName):
		return nil, fmt.Errorf("--bucket: %w", err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		// No responders: nothing serves the JetStream API here.
		return nil, fmt.Errorf("JetStream is not enabled for this account at %s (or is in another domain: --js-domain), and the registry is a JetStream KV bucket: %w", where, err)
	case errors.Is(err, jetstream.ErrBucketNotFound):
		var names []string
		lctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		l := js.KeyValueStoreNames(lctx)
		for n := range l.Name() {
			names = append(names, n)
		}
		slices.Sort(names)
		msg := fmt.Sprintf("no bucket %q at %s: no instance has registered there yet, or the registry is in another bucket", name, where)
		if len(names) > 0 {
			msg += fmt.Sprintf(" (buckets there: %s; pick one with --bucket)", listSome(names, maxFacts))
		} else if l.Error() == nil {
			msg += " (there are no KV buckets there)"
		}
		return nil, errors.New(msg)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return nil, fmt.Errorf("bucket %q at %s: JetStream did not answer in %s (is JetStream enabled, and the domain right?): %w", name, where, timeout, err)
	}
	return nil, err
}

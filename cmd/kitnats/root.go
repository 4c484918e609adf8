package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/aegis-sdk/kitnats/internal/registry"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the command failed, a call failed, check found a problem
	exitUsage   = 2 // bad flags or arguments
	description = "kitnats — the operators' view of a kitnats service registry on NATS"
)

// app is one invocation: where output goes, the environment, the flags.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	conn       connFlags
	bucket     string
	layoutName string
	heartbeat  time.Duration
	ttl        time.Duration
	staleAfter time.Duration
	maxKeys    int
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// failedError is a command that ran and reports failure (failed calls,
// problems found) after saying so itself: exit status 1, nothing more
// printed.
type failedError struct{}

func (failedError) Error() string { return "failed" }

// run is the whole command, testable in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, os.Getenv)
}

// runWith is run with the environment given, for tests.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var fe failedError
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &fe):
		return exitFailed
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command"):
		say(stderr, "kitnats: %v", err)
		fmt.Fprintln(stderr, "Run 'kitnats --help' for usage.")
		return exitUsage
	}
	say(stderr, "kitnats: %v", err)
	return exitFailed
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kitnats",
		Short: description,
		Long: description + `.

Instances register in a NATS JetStream KV bucket (natskv.Registrar); clients
watch it and balance over the instances they judge healthy. kitnats shows
both sides: what is registered, and what a client makes of it.

Connection flags are the nats CLI's. Without --server, NATS_URL applies,
then the nats CLI's context (--context, NATS_CONTEXT, or the selected one),
then nats://127.0.0.1:4222. --heartbeat, --ttl and --stale-after must match
your fleet's settings for kitnats to judge staleness as its clients do.

Exit status: 0 success; 1 failure (a failed call, a problem found by check);
2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	a.conn.register(pf)
	pf.StringVar(&a.bucket, "bucket", natskv.DefaultBucket, "registry bucket")
	pf.StringVar(&a.layoutName, "layout", natskv.LayoutDotted.String(), "key layout: dotted (service-instances.S.I) or aegis (service-instances__S__I, the Python AegisSDK's)")
	pf.DurationVar(&a.heartbeat, "heartbeat", registry.DefaultHeartbeat, "the registrars' heartbeat interval")
	pf.DurationVar(&a.ttl, "ttl", 0, "the registrars' record TTL (default 3 heartbeats)")
	pf.DurationVar(&a.staleAfter, "stale-after", 0, "age of a record's last write past which clients stop offering it (default: from --ttl, as clients derive it; negative: never)")
	root.AddCommand(a.lsCommand(), a.watchCommand(), a.callCommand(), a.checkCommand(), a.permsCommand())
	return root
}

// maxKeysFlag adds --max-keys to a command that scans the bucket.
func (a *app) maxKeysFlag(cmd *cobra.Command) {
	cmd.Flags().IntVar(&a.maxKeys, "max-keys", 100_000, "keys of the bucket read at most")
}

// scan is scan with the command's bound, checked.
func (a *app) scan(ctx context.Context, s *session) (scanned, error) {
	if a.maxKeys < 1 {
		return scanned{}, usagef("--max-keys must be at least 1")
	}
	return scan(ctx, s, a.conn.timeout, a.maxKeys)
}

// exactArgs and rangeArgs are cobra's validators, as usage errors.
func argsBetween(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(min, max)(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

func (a *app) layout() (natskv.Layout, error) {
	l, err := registry.ParseLayout(a.layoutName)
	if err != nil {
		return 0, usagef("--layout: %q is not a layout: want dotted or aegis", a.layoutName)
	}
	return natskv.Layout(l), nil
}

// layoutFor is the layout, and checks that service (if any) can be a key
// of it.
func (a *app) layoutFor(service string) (natskv.Layout, error) {
	l, err := a.layout()
	if err != nil {
		return 0, err
	}
	if service != "" {
		if _, err := l.Key(service, "x"); err != nil {
			return 0, usagef("%v", err)
		}
	}
	return l, nil
}

// instancerOptions are the settings a client of the fleet uses: the layout
// and the liveness flags.
func (a *app) instancerOptions(l natskv.Layout) []natskv.InstancerOption {
	opts := []natskv.InstancerOption{natskv.WithLayout(l), natskv.WithHeartbeat(a.heartbeat)}
	if a.ttl != 0 {
		opts = append(opts, natskv.WithTTL(a.ttl))
	}
	if a.staleAfter != 0 {
		opts = append(opts, natskv.WithStaleAfter(a.staleAfter))
	}
	return opts
}

// session is an open connection and the bound registry bucket.
type session struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	b      *natskv.Bucket
	where  string // the server URLs, passwords hidden
	layout natskv.Layout
	judge  *registry.Judge
	domain string // the JetStream domain, if any
}

func (s *session) close() { s.nc.Close() }

// dial connects; nothing else.
func (a *app) dial(cmd *cobra.Command, extra ...nats.Option) (*session, error) {
	l, err := a.layout()
	if err != nil {
		return nil, err
	}
	cf, err := a.conn.resolve(cmd.Flags().Changed, a.getenv)
	if err != nil {
		return nil, err
	}
	nc, err := cf.connect(extra...)
	if err != nil {
		return nil, err
	}
	s := &session{nc: nc, where: redact(cf.server), layout: l, domain: cf.jsDomain}
	if s.js, err = cf.jetStream(nc); err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

// open connects and binds the bucket.
func (a *app) open(ctx context.Context, cmd *cobra.Command, extra ...nats.Option) (*session, error) {
	s, err := a.dial(cmd, extra...)
	if err != nil {
		return nil, err
	}
	if s.b, err = bindBucket(ctx, s.js, a.bucket, s.where, a.conn.timeout); err != nil {
		s.close()
		return nil, err
	}
	if s.judge, err = registry.NewJudge(registry.JudgeConfig{Layout: registry.Layout(s.layout),
		Liveness: registry.Liveness{Heartbeat: a.heartbeat, TTL: a.ttl, StaleAfter: a.staleAfter},
		Markers:  s.b.Capabilities().Markers}); err != nil {
		s.close()
		return nil, usagef("%v", err)
	}
	return s, nil
}

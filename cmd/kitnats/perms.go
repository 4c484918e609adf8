package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/permissions"
)

// permsOptions are the flags of perms.
type permsOptions struct {
	format      string
	user        string
	methods     []string
	calls       []string
	replyPrefix string
}

func (a *app) permsCommand() *cobra.Command {
	var o permsOptions
	cmd := &cobra.Command{
		Use:   "perms service SERVICE INSTANCE | client [SERVICE...] | operator",
		Short: "Print the least NATS permissions of a service instance, a client or an operator",
		Long: `Print the NATS permissions one role needs on the registry bucket (--bucket,
--layout), and nothing else, with the reason for each subject:

  service SERVICE INSTANCE  write its own registry key only, serve its RPC
                            subjects (queue group and instance), answer $SRV
                            discovery, reply to callers' inboxes
  client [SERVICE...]       read the registry (the watch's consumer), call the
                            services named, receive its replies
  operator                  what kitnats itself needs: read the registry, name
                            the account's buckets, $SRV discovery; --call to
                            call services too

Formats: conf, a permissions block for a user of nats-server's
configuration (accounts { APP { users: [ { user: ..., permissions: {...} } ] } });
nsc, the nsc command that adds a user holding them (operator mode: creds
files); json. --inbox-prefix is the inbox prefix the user will connect with
(nats.CustomInboxPrefix; give each user its own, under "_INBOX."): the role
may subscribe to it alone. No role gets allow_responses: services reply
under --reply-prefix. The reasons, and what subject permissions cannot stop,
are in the documentation of package
github.com/aegis-sdk/kitnats/permissions.`,
		Example: `  kitnats perms service greeter greeter-1 --method hello
  kitnats perms client greeter billing --inbox-prefix _INBOX.checkout
  kitnats perms operator --call '*' --format nsc --name ops`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("perms: name a role: service SERVICE INSTANCE, client [SERVICE...], or operator")
			}
			switch args[0] {
			case "service":
				if len(args) != 3 {
					return usagef("perms service: want SERVICE INSTANCE")
				}
			case "client":
			case "operator":
				if len(args) != 1 {
					return usagef("perms operator: takes no arguments (--call SERVICE for calls)")
				}
			default:
				return usagef("perms: unknown role %q: want service, client or operator", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.perms(cmd, args, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.format, "format", "conf", "conf (nats-server configuration), nsc, or json")
	f.StringVar(&o.user, "name", "", "the user's name, for --format nsc (default: the instance, client, or operator)")
	f.StringSliceVar(&o.methods, "method", nil, "a service's methods, to allow those subjects only (repeatable; default any method)")
	f.StringSliceVar(&o.calls, "call", nil, "services the operator may call (repeatable; '*' for every service)")
	f.StringVar(&o.replyPrefix, "reply-prefix", "", "where a service may reply: its callers' inbox prefix (default _INBOX)")
	return cmd
}

func (a *app) perms(cmd *cobra.Command, args []string, o permsOptions) error {
	switch o.format {
	case "conf", "nsc", "json":
	default:
		return usagef("--format: %q: want conf, nsc or json", o.format)
	}
	l, err := a.layout()
	if err != nil {
		return err
	}
	inbox := a.conn.auth.InboxPrefix
	if !cmd.Flags().Changed("inbox-prefix") {
		inbox = ""
	}
	t := permissions.Template{Bucket: a.bucket, Layout: l, InboxPrefix: inbox, ReplyPrefix: o.replyPrefix, Methods: o.methods}
	var p *permissions.Permissions
	user := o.user
	switch args[0] {
	case "service":
		p, err = t.Service(args[1], args[2])
		if user == "" {
			user = args[2]
		}
	case "client":
		p, err = t.Client(args[1:]...)
		if user == "" {
			user = "client"
		}
	default:
		p, err = t.Operator(o.calls...)
		if user == "" {
			user = "operator"
		}
	}
	if err != nil {
		return usagef("perms: %v", err)
	}
	if user != safetext.Terminal(user) || strings.ContainsAny(user, " \t") || len(user) > 256 {
		return usagef("--name %s: want at most 256 bytes of printable text without spaces", safetext.Quote(user))
	}
	if len(o.methods) > 0 && args[0] != "service" {
		return usagef("perms: --method is for a service")
	}
	if len(o.calls) > 0 && args[0] != "operator" {
		return usagef("perms: --call is for the operator (a client's services are its arguments)")
	}
	return writePerms(a.stdout, p, o.format, user)
}

// permsJSON is the JSON form of a role's permissions.
type permsJSON struct {
	Role      string     `json:"role"`
	Publish   []ruleJSON `json:"publish"`
	Subscribe []ruleJSON `json:"subscribe"`
}

type ruleJSON struct {
	Subject string `json:"subject"`
	Queue   string `json:"queue,omitempty"`
	Why     string `json:"why"`
}

func rulesJSON(rs []permissions.Rule) []ruleJSON {
	out := make([]ruleJSON, len(rs))
	for i, r := range rs {
		out[i] = ruleJSON{Subject: r.Subject, Queue: r.Queue, Why: r.Why}
	}
	return out
}

// writePerms writes the permissions in a format. Every name in them has
// been checked (package wire's rules, the template's prefixes, --name), so
// they are written as they are, for a configuration file or a shell:
// written escaped, they would not work.
func writePerms(w io.Writer, p *permissions.Permissions, format, user string) error {
	text := func(s string) error {
		if !printable(s) {
			return fmt.Errorf("perms: the %s output would hold a control character: %s", format, safetext.Quote(s))
		}
		_, err := io.WriteString(w, s)
		return err
	}
	switch format {
	case "conf":
		return text(p.Config())
	case "nsc":
		return text(p.NSC(user))
	case "json":
		return writeJSON(w, permsJSON{Role: p.Role, Publish: rulesJSON(p.Publish), Subscribe: rulesJSON(p.Subscribe)})
	}
	return usagef("--format: %q: want conf, nsc or json", format)
}

package permissions

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/aegis-sdk/kitnats/internal/natserr"
	"github.com/aegis-sdk/kitnats/internal/safetext"
	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

// ErrPermission is matched (errors.Is) by every *PermissionError: the
// error a Registrar, an Instancer, a natsrpc client or service returns (or
// logs) when the NATS server refuses it for lack of a permission. This is
// its one public name.
var ErrPermission = natserr.ErrPermission

// PermissionError says which permission the NATS user lacked: Op
// ("publish", "subscribe") on Subject (in queue group Queue): one errors.As
// target whichever package was refused.
type PermissionError = natserr.PermissionError

// AllServices, given as a service to Client or Operator, allows calls to
// every service: rpc.>.
const AllServices = "*"

// defaultInbox is nats.go's inbox prefix (nats.InboxPrefix without its
// dot), where a connection's replies arrive unless it is made with
// nats.CustomInboxPrefix.
const defaultInbox = "_INBOX"

// maxPrefix bounds an inbox or reply prefix: it is copied into every
// entry and message that names it.
const maxPrefix = 256

// Rule is one subject a role is allowed, and why.
type Rule struct {
	// Subject is a NATS subject; '*' and '>' are wildcards.
	Subject string
	// Queue, for a subscription, is the only queue group the subject may be
	// subscribed in: the subject cannot be subscribed without it. Empty
	// for a plain subscription (or any queue group).
	Queue string
	// Why says what needs it.
	Why string
}

// Entry is the rule as nats-server spells an allow list entry: "subject",
// or "subject queue".
func (r Rule) Entry() string {
	if r.Queue != "" {
		return r.Subject + " " + r.Queue
	}
	return r.Subject
}

// Permissions are the allow lists of one NATS user in one role. Everything
// not listed is refused. They grant no allow_responses: replies are
// published under the template's ReplyPrefix instead.
type Permissions struct {
	// Role says what the user is: "service greeter/greeter-1", "client of
	// greeter, billing", "operator".
	Role      string
	Publish   []Rule
	Subscribe []Rule
}

// PublishAllow is the publish allow list, as nats-server takes it.
func (p *Permissions) PublishAllow() []string { return entries(p.Publish) }

// SubscribeAllow is the subscribe allow list, as nats-server takes it
// ("subject" or "subject queue").
func (p *Permissions) SubscribeAllow() []string { return entries(p.Subscribe) }

func entries(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Entry()
	}
	return out
}

// Config renders the permissions as a nats-server configuration block, each
// entry with its reason as a comment, to paste into a user of an account:
//
//	accounts { APP { jetstream: enabled, users: [
//	    { user: greeter-1, password: $GREETER_1_PASSWORD, permissions: { ... } }
//	] } }
func (p *Permissions) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# kitnats %s\n", p.Role)
	b.WriteString("permissions: {\n")
	block := func(name string, rs []Rule) {
		if len(rs) == 0 {
			// An empty allow list is no list at all to nats-server.
			fmt.Fprintf(&b, "  %s: {\n    deny: [\">\"]  # nothing\n  }\n", name)
			return
		}
		fmt.Fprintf(&b, "  %s: {\n    allow: [\n", name)
		for _, r := range rs {
			fmt.Fprintf(&b, "      %s  # %s\n", strconv.Quote(r.Entry()), r.Why)
		}
		b.WriteString("    ]\n  }\n")
	}
	block("publish", p.Publish)
	block("subscribe", p.Subscribe)
	b.WriteString("}\n")
	return b.String()
}

// NSC renders the permissions as the nsc command that adds a user holding
// them to the current account, for operator mode (JWTs, creds files):
// `nsc generate creds --name USER` then writes its creds file.
func (p *Permissions) NSC(user string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# kitnats %s\n", p.Role)
	fmt.Fprintf(&b, "nsc add user --name %s", shellQuote(user))
	for _, r := range p.Publish {
		fmt.Fprintf(&b, " \\\n  --allow-pub %s", shellQuote(r.Entry()))
	}
	if len(p.Publish) == 0 {
		b.WriteString(" \\\n  --deny-pub '>'")
	}
	for _, r := range p.Subscribe {
		fmt.Fprintf(&b, " \\\n  --allow-sub %s", shellQuote(r.Entry()))
	}
	if len(p.Subscribe) == 0 {
		b.WriteString(" \\\n  --deny-sub '>'")
	}
	b.WriteString("\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Merge is the union of several roles' permissions, for one connection that
// plays them all (a service that calls other services is a Service and a
// Client). Duplicate entries are kept once, with the first reason.
func Merge(ps ...*Permissions) *Permissions {
	out := &Permissions{}
	var roles []string
	for _, p := range ps {
		if p == nil {
			continue
		}
		roles = append(roles, p.Role)
		out.Publish = union(out.Publish, p.Publish)
		out.Subscribe = union(out.Subscribe, p.Subscribe)
	}
	out.Role = strings.Join(roles, " + ")
	return out
}

func union(a, b []Rule) []Rule {
	for _, r := range b {
		if !slices.ContainsFunc(a, func(x Rule) bool { return x.Entry() == r.Entry() }) {
			a = append(a, r)
		}
	}
	return a
}

// Template is where the roles' permissions point: the registry bucket and
// its key layout, and the connections' inbox prefixes. The zero Template
// is natskv's default bucket and layout, with nats.go's inbox prefix.
type Template struct {
	// Bucket is the registry bucket; empty means natskv.DefaultBucket.
	Bucket string
	// Layout is the bucket's key layout (a service's key is spelled by it).
	Layout natskv.Layout
	// InboxPrefix is the role's own inbox prefix: where its replies arrive,
	// and so all it may subscribe to besides its service subjects. Empty
	// means nats.go's "_INBOX", shared by every connection that does not
	// set its own: a user allowed "_INBOX.>" may read every reply in the
	// account. Give each user its own, under "_INBOX." so that services
	// may reply to it ("_INBOX.billing-7"), and connect with
	// nats.CustomInboxPrefix (kitnats --inbox-prefix).
	InboxPrefix string
	// ReplyPrefix is where services may publish replies: the inbox prefix
	// of every caller, "_INBOX" when empty. It replaces allow_responses,
	// which would let a caller choose any subject for a service to publish
	// to (its own registry key included).
	ReplyPrefix string
	// Methods restricts a service's subscriptions to these methods (its
	// service-wide and instance subjects are then literal); empty allows
	// any method ("rpc.{service}.*"). With a wildcard, an instance may
	// also take a queue subscription to "rpc.{service}.>" and so receive
	// requests addressed to another instance of its service.
	Methods []string
}

func (t Template) bucket() (string, error) {
	if t.Bucket == "" {
		return natskv.DefaultBucket, nil
	}
	if err := wire.ValidateBucket(t.Bucket); err != nil {
		return "", err
	}
	return t.Bucket, nil
}

// prefix checks an inbox or reply prefix: subject tokens, no wildcard, and
// nothing a terminal or a configuration file would read as more than text.
func prefix(p string) (string, error) {
	switch {
	case p == "":
		return defaultInbox, nil
	case len(p) > maxPrefix, strings.ContainsAny(p, "*> "), strings.HasPrefix(p, "."), strings.HasSuffix(p, "."),
		strings.Contains(p, ".."), safetext.Terminal(p) != p, strings.ContainsRune(p, '"'):
		return "", fmt.Errorf("%w: inbox prefix %s: want at most %d bytes of printable subject tokens without wildcards",
			errInvalid, safetext.Quote(p), maxPrefix)
	}
	return p, nil
}

var errInvalid = errors.New("permissions: invalid template")

// streamAPI is the JetStream API subject of op on the bucket's stream.
func streamAPI(op, bucket string) string { return jetstream.DefaultAPIPrefix + op + ".KV_" + bucket }

// readBucket is what reading the bucket as natskv.Instancer does takes.
func readBucket(bucket string) []Rule {
	return []Rule{
		{Subject: streamAPI("STREAM.INFO", bucket), Why: "bind the bucket (natskv.BindBucket reads its configuration); the scan fallback reads its last sequence"},
		{Subject: streamAPI("CONSUMER.CREATE", bucket) + ".>", Why: "the watch's consumer: ephemeral (random name), pull, no acks, memory, filtered by the services watched; updated on the same subject as services are added; the scan fallback's short-lived one"},
		{Subject: streamAPI("CONSUMER.MSG.NEXT", bucket) + ".*", Why: "pull requests of the watch's consumer"},
		{Subject: streamAPI("CONSUMER.DELETE", bucket) + ".*", Why: "delete its consumer when the watch is rebuilt or the last Instancer stops"},
		{Subject: streamAPI("DIRECT.GET", bucket), Why: "a service followed once the watch runs is loaded with one batched direct get of its keys' last records"},
		{Subject: "$JS.FC.KV_" + bucket + ".>", Why: "flow control of nats.go's KV watch (WithPolling's listing; kitnats watch's key listing)"},
	}
}

func inbox(p string) Rule {
	return Rule{Subject: p + ".>", Why: "its inbox: replies to its requests — JetStream API responses and acks, the watch's records, RPC replies"}
}

// rpcSubjects spells service's subjects of method m as package wire does:
// the service-wide one and instance's. A method "*" is any method: wire's
// spelling with a wildcard in the method token.
func rpcSubjects(service, m, instance string) (svc, inst string, err error) {
	probe := m
	if m == "*" {
		probe = "m"
	} else if err := wire.ValidateMethod(m); err != nil {
		return "", "", err
	}
	if svc, err = wire.ServiceSubject(service, probe); err != nil {
		return "", "", err
	}
	if instance != "" {
		if inst, err = wire.InstanceSubject(service, probe, instance); err != nil {
			return "", "", err
		}
	}
	if m == "*" {
		// The method is the service subject's last token; the instance
		// subject extends the service subject.
		tail := strings.TrimPrefix(inst, svc)
		svc = strings.TrimSuffix(svc, probe) + "*"
		if instance != "" {
			inst = svc + tail
		}
	}
	return svc, inst, nil
}

// calls are the rules that let a role call services: every subject of
// each (rpc.S.>), or of every service for AllServices (rpc.>).
func calls(services []string) ([]Rule, error) {
	var rs []Rule
	for _, s := range services {
		name := s
		if s == AllServices {
			name = "s"
		}
		pat, inst, err := rpcSubjects(name, "*", "i")
		if err != nil {
			return nil, err
		}
		if s == AllServices {
			root, _, _ := strings.Cut(pat, ".")
			rs = append(rs, Rule{Subject: root + ".>", Why: "call every service"})
			continue
		}
		rs = append(rs, Rule{Subject: strings.TrimSuffix(pat, "*") + ">", Why: "call " + s + ": " +
			strings.Replace(pat, "*", "{method}", 1) + " (any instance) and " +
			strings.Replace(strings.TrimSuffix(inst, "i"), "*", "{method}", 1) + "{instance}"})
	}
	return rs, nil
}

// Service is the permissions of one instance of a service: its own registry
// key, its RPC subjects, $SRV discovery of itself, its replies, and nothing
// else. See the package documentation for each entry.
func (t Template) Service(service, instance string) (*Permissions, error) {
	bucket, err := t.bucket()
	if err != nil {
		return nil, err
	}
	key, err := t.Layout.Key(service, instance)
	if err != nil {
		return nil, err
	}
	in, err := prefix(t.InboxPrefix)
	if err != nil {
		return nil, err
	}
	reply, err := prefix(t.ReplyPrefix)
	if err != nil {
		return nil, err
	}
	queue, err := wire.QueueGroup(service)
	if err != nil {
		return nil, err
	}
	methods := t.Methods
	if len(methods) == 0 {
		methods = []string{"*"}
	} else if slices.Contains(methods, "*") {
		return nil, wire.ValidateMethod("*")
	}
	var svcs, insts []string
	for _, m := range methods {
		svc, inst, err := rpcSubjects(service, m, instance)
		if err != nil {
			return nil, err
		}
		svcs, insts = append(svcs, svc), append(insts, inst)
	}
	p := &Permissions{Role: "service " + service + "/" + instance}
	p.Publish = []Rule{
		{Subject: "$KV." + bucket + "." + key, Why: "its own registry key: Register and every heartbeat (a JetStream publish, with Nats-TTL on buckets with per-key TTL), SetStatus, Deregister (a KV delete)"},
		{Subject: streamAPI("STREAM.INFO", bucket), Why: "bind the bucket (natskv.BindBucket reads whether it takes per-key TTLs)"},
		{Subject: reply + ".>", Why: "reply to callers and to $SRV discovery requests, on the callers' inboxes (instead of allow_responses)"},
	}
	for _, s := range svcs {
		p.Subscribe = append(p.Subscribe, Rule{Subject: s, Queue: queue,
			Why: "the service-wide subject, in queue group " + queue + " only: any instance answers"})
	}
	for _, s := range insts {
		p.Subscribe = append(p.Subscribe, Rule{Subject: s, Why: "its own instance subject: client-side balancing calls it"})
	}
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		all, _ := micro.ControlSubject(verb, "", "")
		mine, _ := micro.ControlSubject(verb, service, "")
		one, _ := micro.ControlSubject(verb, service, "*")
		p.Subscribe = append(p.Subscribe,
			Rule{Subject: all, Why: "NATS micro discovery of every service"},
			Rule{Subject: mine, Why: "micro discovery of " + service},
			Rule{Subject: one, Why: "micro discovery of this instance (its micro ID is made at start)"})
	}
	p.Subscribe = append(p.Subscribe, inbox(in))
	return p, nil
}

// Client is the permissions of a client of services: read the registry
// (watch it, as natskv.Instancer does), call the services, receive its
// replies — and nothing that writes a registry key. With no services it
// may only read the registry.
func (t Template) Client(services ...string) (*Permissions, error) {
	role := "client"
	if len(services) > 0 {
		role += " of " + strings.Join(services, ", ")
	}
	return t.reader(role, services)
}

// Operator is the permissions of the operators' CLI (cmd/kitnats): read the
// registry (ls, watch, check), ask services for their micro discovery, and
// call the services given (AllServices: every one; none: no calls).
func (t Template) Operator(services ...string) (*Permissions, error) {
	return t.reader("operator", services, Rule{Subject: micro.APIPrefix + ".>",
		Why: "NATS micro discovery requests (nats micro ls|info|stats), answered by the services"})
}

// reader is a role that reads the registry, may publish extra, and calls
// services: a client or an operator.
func (t Template) reader(role string, services []string, extra ...Rule) (*Permissions, error) {
	bucket, err := t.bucket()
	if err != nil {
		return nil, err
	}
	in, err := prefix(t.InboxPrefix)
	if err != nil {
		return nil, err
	}
	cs, err := calls(services)
	if err != nil {
		return nil, err
	}
	p := &Permissions{Role: role, Subscribe: []Rule{inbox(in)}}
	p.Publish = append(append(readBucket(bucket), extra...), cs...)
	return p, nil
}

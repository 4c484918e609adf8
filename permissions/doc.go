// Package permissions holds the least NATS permissions each part of kitnats
// needs, as templates for a nats-server configuration (Permissions.Config)
// or for nsc (Permissions.NSC), and the error the library returns when a
// permission is missing (ErrPermission, *PermissionError).
//
// Whoever may write a registry key may announce an instance of a service
// and receive its traffic. Give each NATS user the allow lists of its role
// and nothing else:
//
//	t := permissions.Template{Bucket: "service_registry", Layout: natskv.LayoutDotted}
//	p, err := t.Service("greeter", "greeter-1") // its own key, its RPC subjects, $SRV
//	p, err := t.Client("greeter", "billing")    // read the registry, call these
//	p, err := t.Operator()                      // kitnats: read; add services to call them
//	fmt.Print(p.Config())
//
// Each Rule says why its subject is needed; `kitnats perms
// service|client|operator` prints the same. Template also sets the inbox
// prefix of the user (give each its own under "_INBOX.", and connect with
// nats.CustomInboxPrefix), the reply prefix services may publish under, and
// a service's methods. Merge joins roles for one connection: a service that
// calls others is a Service and a Client.
//
// No role gets allow_responses: it would let a caller choose any subject,
// registry keys included, for a service to publish its reply to.
//
// A refused operation is reported as a *PermissionError naming the
// operation and subject, matching ErrPermission and
// nats.ErrPermissionViolation: BindBucket, a Registrar's writes, an
// Instancer's construction, a natsrpc call or NewService return it.
//
// What subject permissions cannot stop (a roll-up by a key's writer on a
// bucket with expiry markers, consumers that deliver elsewhere, durable
// consumers) is listed, with the reason for every entry, in the
// permissions section of docs/DESIGN.md.
package permissions

// Command kitnats is the operators' view of a kitnats registry: which
// instances are registered and which of them a client would pick (ls), the
// registry's changes as they happen (watch), a call through discovery and
// the balancer as a client makes it (call), the bucket's configuration
// with the records that clients skip (check), and the NATS permissions a
// service instance, a client or an operator needs (perms).
//
//	go install github.com/aegis-sdk/kitnats/cmd/kitnats@latest
//	kitnats ls                       # services and their instance counts
//	kitnats ls greeter               # each instance: status, version, zone, heartbeat, TTL, client's verdict
//	kitnats watch                    # the registry's changes, one line each
//	kitnats call greeter.hello '"gopher"' --count 100 --concurrency 4
//	kitnats check                    # the bucket's settings and what they mean
//	kitnats perms service greeter greeter-1   # the least NATS permissions of a role
//
// The connection flags are the nats CLI's (--server, --creds, --nkey,
// --tls-cert/--tls-key/--tls-ca, --user/--password, --context); NATS_URL
// and the nats CLI's selected context apply when no flag says otherwise.
// `kitnats help COMMAND` tells the rest.
//
// Exit status: 0 on success, 1 when the command failed (or, for call, any
// call failed; for check, a problem was found), 2 for a usage error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

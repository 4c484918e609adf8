package permissions_test

import (
	"fmt"

	"github.com/aegis-sdk/kitnats/permissions"
	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// A service instance's permissions as a block of nats-server
// configuration, each entry with its reason.
func ExampleTemplate_Service() {
	t := permissions.Template{Bucket: "service_registry", Layout: natskv.LayoutDotted,
		InboxPrefix: "_INBOX.greeter-1", Methods: []string{"hello"}}
	p, err := t.Service("greeter", "greeter-1")
	if err != nil {
		panic(err)
	}
	fmt.Print(p.Config())
	// Output:
	// # kitnats service greeter/greeter-1
	// permissions: {
	//   publish: {
	//     allow: [
	//       "$KV.service_registry.service-instances.greeter.greeter-1"  # its own registry key: Register and every heartbeat (a JetStream publish, with Nats-TTL on buckets with per-key TTL), SetStatus, Deregister (a KV delete)
	//       "$JS.API.STREAM.INFO.KV_service_registry"  # bind the bucket (natskv.BindBucket reads whether it takes per-key TTLs)
	//       "_INBOX.>"  # reply to callers and to $SRV discovery requests, on the callers' inboxes (instead of allow_responses)
	//     ]
	//   }
	//   subscribe: {
	//     allow: [
	//       "rpc.greeter.hello rpc.greeter"  # the service-wide subject, in queue group rpc.greeter only: any instance answers
	//       "rpc.greeter.hello.greeter-1"  # its own instance subject: client-side balancing calls it
	//       "$SRV.PING"  # NATS micro discovery of every service
	//       "$SRV.PING.greeter"  # micro discovery of greeter
	//       "$SRV.PING.greeter.*"  # micro discovery of this instance (its micro ID is made at start)
	//       "$SRV.INFO"  # NATS micro discovery of every service
	//       "$SRV.INFO.greeter"  # micro discovery of greeter
	//       "$SRV.INFO.greeter.*"  # micro discovery of this instance (its micro ID is made at start)
	//       "$SRV.STATS"  # NATS micro discovery of every service
	//       "$SRV.STATS.greeter"  # micro discovery of greeter
	//       "$SRV.STATS.greeter.*"  # micro discovery of this instance (its micro ID is made at start)
	//       "_INBOX.greeter-1.>"  # its inbox: replies to its requests — JetStream API responses and acks, the watch's records, RPC replies
	//     ]
	//   }
	// }
}

// A client's allow lists as nats-server and JWT user claims take them
// (server.SubjectPermission.Allow, jwt.Permission.Allow): a service that
// also calls others merges both roles.
func ExamplePermissions_PublishAllow() {
	t := permissions.Template{Bucket: "service_registry"}
	svc, err := t.Service("billing", "billing-1")
	if err != nil {
		panic(err)
	}
	client, err := t.Client("greeter")
	if err != nil {
		panic(err)
	}
	p := permissions.Merge(svc, client)
	fmt.Println(p.Role)
	for _, s := range p.PublishAllow() {
		fmt.Println("pub", s)
	}
	fmt.Println("sub", p.SubscribeAllow()[0], "...", len(p.SubscribeAllow()), "entries")
	// Output:
	// service billing/billing-1 + client of greeter
	// pub $KV.service_registry.service-instances.billing.billing-1
	// pub $JS.API.STREAM.INFO.KV_service_registry
	// pub _INBOX.>
	// pub $JS.API.CONSUMER.CREATE.KV_service_registry.>
	// pub $JS.API.CONSUMER.MSG.NEXT.KV_service_registry.*
	// pub $JS.API.CONSUMER.DELETE.KV_service_registry.*
	// pub $JS.API.DIRECT.GET.KV_service_registry
	// pub $JS.FC.KV_service_registry.>
	// pub rpc.greeter.>
	// sub rpc.billing.* rpc.billing ... 12 entries
}

package wire

// Registry metadata keys kitnats writes and reads. A record's metadata is a
// string map (the AegisSDK's format); these keys give some entries a meaning
// every part of kitnats agrees on. Keys of kitnats' own start with
// "kitnats."; zone, weight and region are plain words other registries use
// too.
const (
	// MetadataZone is the instance's zone (natskv.WithZone writes it;
	// lb/zone prefers the caller's zone).
	MetadataZone = "zone"
	// MetadataRegion is the instance's region, the level above zones.
	MetadataRegion = "region"
	// MetadataWeight is the instance's relative weight, a positive decimal
	// integer (lb/weighted).
	MetadataWeight = "weight"
	// MetadataRPC says how an instance is called over natsrpc: RPCInstance
	// means it answers its own instance subjects, InstanceSubject(...).
	// Instances without it (AegisSDK's) are called on ServiceSubject(...).
	MetadataRPC = "kitnats.rpc"
	// MetadataInstance is the NATS micro metadata key that ties a micro
	// service's ID to its registry instance ID ($SRV.INFO).
	MetadataInstance = "kitnats.instance"
)

// RPCInstance is the value of MetadataRPC for instances that answer their
// instance subjects.
const RPCInstance = "instance"

// AddressKey is the metadata key under which an instance says where it
// serves transport, a lower-case word ("http", "grpc"):
// "kitnats.addr.{transport}". The value is what go-kit's registries publish
// and its sd.Factory implementations take: host:port ("10.0.0.7:8080",
// "[::1]:9090"; sd/consul's form, to which an HTTP factory adds the
// scheme), or an absolute URL with a host and no user, query or fragment
// when the scheme or a base path matters ("https://api-7.internal:8443/v2").
// One instance may serve several transports, each under its own key, and
// NATS besides. natskv.WithAddress writes it; natskv.WithAddresses publishes
// it as the instance string, leaving out instances whose value breaks these
// rules. The record format is unchanged, so AegisSDK readers accept it.
func AddressKey(transport string) string { return "kitnats.addr." + transport }

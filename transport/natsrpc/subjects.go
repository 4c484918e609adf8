package natsrpc

// The subject layout of wire.ServiceSubject and friends, for names already
// validated: the hot path spells subjects without validating twice.
func serviceSubject(service, method string) string { return "rpc." + service + "." + method }
func instanceSubject(service, method, instance string) string {
	return serviceSubject(service, method) + "." + instance
}
func queueGroup(service string) string { return "rpc." + service }

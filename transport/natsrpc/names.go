package natsrpc

import "github.com/aegis-sdk/kitnats/wire"

// The subject layout (wire.ServiceSubject and friends), for names already
// validated: the hot path spells subjects without validating twice.
func serviceSubject(service, method string) string { return "rpc." + service + "." + method }
func instanceSubject(service, method, instance string) string {
	return serviceSubject(service, method) + "." + instance
}
func queueGroup(service string) string { return "rpc." + service }

// validateServiceMethod checks both names with the wire rules.
func validateServiceMethod(service, method string) error {
	if err := wire.ValidateService(service); err != nil {
		return err
	}
	return wire.ValidateMethod(method)
}

package wire

// ServiceSubject is the subject every instance of service answers for method,
// in queue group QueueGroup(service): "rpc.{service}.{method}", the AegisSDK
// convention.
func ServiceSubject(service, method string) (string, error) {
	if err := validateServiceMethod(service, method); err != nil {
		return "", err
	}
	return serviceSubject(service, method), nil
}

// InstanceSubject is the subject only the named instance answers for method:
// "rpc.{service}.{method}.{instance}". Client-side balancing sends here.
func InstanceSubject(service, method, instance string) (string, error) {
	if err := validateServiceMethod(service, method); err != nil {
		return "", err
	}
	if err := ValidateInstance(instance); err != nil {
		return "", err
	}
	return serviceSubject(service, method) + "." + instance, nil
}

// QueueGroup is the queue group of a service's service-wide subjects, and
// the prefix of all its subjects: "rpc.{service}".
func QueueGroup(service string) (string, error) {
	if err := ValidateService(service); err != nil {
		return "", err
	}
	return "rpc." + service, nil
}

func validateServiceMethod(service, method string) error {
	if err := ValidateService(service); err != nil {
		return err
	}
	return ValidateMethod(method)
}

func serviceSubject(service, method string) string { return "rpc." + service + "." + method }

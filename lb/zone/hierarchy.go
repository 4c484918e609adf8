package zone

// WithKey sets the registry metadata key that names where an instance is
// (default wire.MetadataZone). With wire.MetadataRegion the policy keeps
// requests in the caller's region under the same rule; wrapping a zone
// policy, it makes a hierarchy — the caller's zone first, then the rest of
// its region, then other regions:
//
//	inRegion := zone.Policy(lb.LeastLoaded(), "eu-west-1a")
//	policy := zone.Policy(inRegion, "eu-west", zone.WithKey(wire.MetadataRegion))
//
// The region rule counts the health of the whole region, so a zone that
// fails spills to its region's other zones, and the region spills only
// when it is short of healthy capacity as a whole. natskv's
// Region.NewRegistrar writes the region into the record. key must not be
// empty.
func WithKey(key string) Option {
	return option(func(o *options) error {
		if key == "" {
			return invalidOption("WithKey", "empty key")
		}
		o.key = key
		return nil
	})
}

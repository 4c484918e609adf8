package natskv_test

import (
	"testing"

	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

// The registry writes the entry the transport reads (wire.MetadataRPC).
func TestInstanceSubjectsMetadata(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	inst := natskv.Instance{ServiceName: "svc", InstanceID: "a", Version: "1.0.0"}
	with, err := natskv.NewRegistrar(b, inst, nil, natskv.WithInstanceSubjects())
	if err != nil {
		t.Fatal(err)
	}
	if !natsrpc.ServesInstanceSubjects(with.Instance().Metadata) {
		t.Errorf("with WithInstanceSubjects: metadata %v does not say so", with.Instance().Metadata)
	}
	without, err := natskv.NewRegistrar(b, inst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if natsrpc.ServesInstanceSubjects(without.Instance().Metadata) {
		t.Errorf("without the option: metadata %v claims instance subjects", without.Instance().Metadata)
	}
}

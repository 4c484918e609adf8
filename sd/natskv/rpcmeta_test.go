package natskv_test

import (
	"testing"

	"github.com/aegis-sdk/kitnats/sd/natskv"
	"github.com/aegis-sdk/kitnats/wire"
)

// The registry writes the entry the transport reads (wire.MetadataRPC).
func TestInstanceSubjectsMetadata(t *testing.T) {
	_, b := newBucket(t, natskv.BucketConfig{})
	inst := natskv.Instance{ServiceName: "svc", InstanceID: "a", Version: "1.0.0"}
	with, err := natskv.NewRegistrar(b, inst, nil, natskv.WithInstanceSubjects())
	if err != nil {
		t.Fatal(err)
	}
	if natskv.RecordOf(with).Metadata[wire.MetadataRPC] != wire.RPCInstance {
		t.Errorf("with WithInstanceSubjects: metadata %v does not say so", natskv.RecordOf(with).Metadata)
	}
	without, err := natskv.NewRegistrar(b, inst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := natskv.RecordOf(without).Metadata[wire.MetadataRPC]; ok {
		t.Errorf("without the option: metadata %v claims instance subjects", natskv.RecordOf(without).Metadata)
	}
}

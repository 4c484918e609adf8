package main

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRegistryDemo keeps `make demo-registry` working.
func TestRegistryDemo(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}

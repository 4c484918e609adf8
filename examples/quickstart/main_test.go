package main

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuickstart runs the demo briefly: a crash and a drain under load, and
// no client-visible error. `make demo` must keep working.
func TestQuickstart(t *testing.T) {
	if err := run(config{bucket: "kitnats_quickstart", duration: 1500 * time.Millisecond, workers: 4}); err != nil {
		t.Fatal(err)
	}
}

//go:build race

package hostile

// raceFactor loosens the allocation bounds under the race detector, which
// drops sync.Pool entries at random (encoding/json's scanners among them)
// and so allocates more; super-linear cost still shows.
const raceFactor = 8

package weighted

import "github.com/aegis-sdk/kitnats/lb"

// SeededPolicy is Policy with random draws that repeat from run to run.
func SeededPolicy(seed uint64) lb.Policy { return newPolicy(seed, true) }

var Weight = weight

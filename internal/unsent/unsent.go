// Package unsent tells, from a failed attempt's error, whether the attempt
// cost no instance anything: it was refused at the client before it was
// sent (an error with a Rejected() bool method that returns true: an open
// breaker, an instance lb holds gone) or no process took it (Gone() bool:
// no responders on an instance's own subject). middleware/retry does not
// count such attempts, and middleware/hedge sends a backup that met one
// elsewhere.
package unsent

// maxDepth bounds the walk of an error's chain: errors are built by code,
// but a cyclic or absurdly deep chain must not hang a failure path.
const maxDepth = 32

// Is reports whether err proves that its attempt cost no instance anything.
// Every error a joined error holds must say so: a hedged attempt whose
// backup was sent is not free.
func Is(err error) bool { return is(err, 0) }

func is(err error, depth int) bool {
	for ; err != nil && depth < maxDepth; depth++ {
		if r, ok := err.(interface{ Rejected() bool }); ok && r.Rejected() {
			return true
		}
		if g, ok := err.(interface{ Gone() bool }); ok && g.Gone() {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			for _, e := range errs {
				if !is(e, depth+1) {
					return false
				}
			}
			return len(errs) > 0
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

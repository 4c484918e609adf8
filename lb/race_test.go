//go:build race

package lb_test

const raceEnabled = true

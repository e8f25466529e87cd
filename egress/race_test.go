//go:build race

package egress

// raceEnabled: the race detector's instrumentation allocates, so the
// no-allocation tests skip.
const raceEnabled = true

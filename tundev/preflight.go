package tundev

import (
	"fmt"
	"strings"
)

// CheckStatus is the outcome of one preflight check.
type CheckStatus uint8

const (
	// CheckOK: nothing to do.
	CheckOK CheckStatus = iota
	// CheckWarn: the router can run, but a mode (rootless, offloads) is
	// unavailable or degraded.
	CheckWarn
	// CheckFail: Open will fail until this is fixed.
	CheckFail
	// CheckSkipped: not checked, because an earlier check failed or the
	// facility does not exist on this kernel.
	CheckSkipped
)

func (s CheckStatus) String() string {
	switch s {
	case CheckOK:
		return "ok"
	case CheckWarn:
		return "warn"
	case CheckFail:
		return "FAIL"
	case CheckSkipped:
		return "skip"
	}
	return fmt.Sprintf("CheckStatus(%d)", uint8(s))
}

// Check is one line of a preflight report.
type Check struct {
	Name   string // stable identifier, such as "tun-node"
	Status CheckStatus
	Detail string // what was found
	Hint   string // what to do about it; empty when Status is CheckOK
}

// Report is the result of Preflight.
type Report struct {
	Checks []Check
}

// OK reports whether no check failed (warnings are allowed).
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Status == CheckFail {
			return false
		}
	}
	return true
}

// Find returns the check called name.
func (r Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// String renders the report for `router doctor`, one check per line, with
// hints indented below the checks that need them.
func (r Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s %-16s %s\n", c.Status, c.Name, c.Detail)
		if c.Hint != "" && c.Status != CheckOK {
			fmt.Fprintf(&b, "     %-16s %s\n", "", c.Hint)
		}
	}
	return b.String()
}

package filter

import (
	"log/slog"
	"time"
)

// Chain names one of the filter's hooks.
type Chain uint8

// Chains, in packet-path order.
const (
	Prerouting Chain = iota
	Input
	Forward
	Output
	NumChains
)

var chainNames = [NumChains]string{"prerouting", "input", "forward", "output"}

func (c Chain) String() string {
	if c < NumChains {
		return chainNames[c]
	}
	return "chain(?)"
}

// ParseChain returns the chain with the given name.
func ParseChain(s string) (Chain, bool) {
	for i, n := range chainNames {
		if n == s {
			return Chain(i), true
		}
	}
	return 0, false
}

// Action is what a rule does when it matches. Accept, Drop and Reject are
// terminal; the others are statements after which evaluation continues.
type Action uint8

// Actions.
const (
	Accept Action = iota
	Drop
	Reject
	Notrack  // prerouting only: the packet bypasses conntrack (UNTRACKED)
	Helper   // prerouting only: attach a helper to the new connection
	Continue // count (and log) only; aliases "counter" and "log"
	numActions
)

var actionNames = [numActions]string{"accept", "drop", "reject", "notrack", "helper", "continue"}

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return "action(?)"
}

// Terminal reports whether the action ends evaluation.
func (a Action) Terminal() bool { return a <= Reject }

// ParseAction returns the action for a rule's action name. "counter" and
// "log" are accepted as aliases of "continue" (nft rules with a counter or
// log statement and no verdict); for "log" the caller should also turn
// logging on (RuleSpec.Log).
func ParseAction(s string) (Action, bool) {
	switch s {
	case "counter", "log":
		return Continue, true
	}
	for i, n := range actionNames {
		if n == s {
			return Action(i), true
		}
	}
	return 0, false
}

// Spec is the uncompiled rule set: plain values as a configuration file
// holds them. Compile validates and compiles it.
type Spec struct {
	// Interfaces lists the router's interface names; a Packet's IIf/OIf is
	// an index into this list. Rules name interfaces; unknown names are
	// errors. At most 255 interfaces.
	Interfaces []string
	// Helpers lists the helpers the router has ("ftp"); the helper action
	// and the ct_helper match accept only these names.
	Helpers []string
	// Sets are named address or port sets, referenced as "@name".
	Sets []SetSpec
	// Chains holds at most one spec per chain.
	Chains []ChainSpec

	// Workers is the number of counter slots (pipeline workers); Eval's
	// worker argument is in [0, Workers). 0 means 1.
	Workers int

	// Log messages: token bucket rate (messages per second) and burst.
	// Zero values mean DefaultLogRate and DefaultLogBurst; a negative rate
	// means unlimited.
	LogRate  float64
	LogBurst int
	// ICMP rejects: token bucket rate (replies per second) and burst, like
	// the kernel's icmp_msgs_per_sec and icmp_msgs_burst. A reject over the
	// limit becomes a drop. Zero values mean DefaultRejectRate and
	// DefaultRejectBurst; a negative rate means unlimited.
	RejectRate  float64
	RejectBurst int
	// Logger receives log lines; nil means slog.Default() at log time.
	Logger *slog.Logger

	// now is the clock for rate limits (tests replace it).
	now func() time.Time
}

// Defaults for the rate limits.
const (
	DefaultLogRate     = 10
	DefaultLogBurst    = 20
	DefaultRejectRate  = 1000
	DefaultRejectBurst = 50
)

// SetSpec is a named set of addresses (prefixes or addresses, IPv4 and
// IPv6) or of ports (ports and "lo-hi" ranges). The kind follows from the
// elements; mixing kinds is an error. Elements may reference other sets of
// the same kind ("@other").
type SetSpec struct {
	Name  string
	Elems []string
}

// ChainSpec is one chain: a default policy ("accept" or "drop"; empty means
// accept) and ordered rules.
type ChainSpec struct {
	Chain  Chain
	Policy string
	Rules  []RuleSpec
}

// RuleSpec is one rule. Every match is optional; the matches present are
// ANDed. List fields are ORed. Field names in errors are the configuration
// keys given in the comments.
type RuleSpec struct {
	Comment string // "comment"

	Family []string // "family": ip, ip6
	Proto  []string // "proto": tcp, udp, icmp, icmpv6, udplite, sctp, ... or 0-255

	SAddr []string // "saddr": prefix, address or @set; "!" negates
	DAddr []string // "daddr"
	SPort []string // "sport": port, "lo-hi", @set; "!" negates
	DPort []string // "dport"
	IIf   []string // "iif": interface names; "!" negates
	OIf   []string // "oif"

	CtState     []string // "ct_state": new, established, related, invalid, untracked
	CtDirection string   // "ct_direction": original, reply
	CtStatus    []string // "ct_status": assured, expected, seen-reply, ... (any of)
	CtReason    []string // "ct_reason": INVALID reasons by their text
	CtHelper    string   // "ct_helper": helper of the master connection

	ICMPType   []string // "icmp_type": names (echo-request) or numbers
	ICMPCode   []string // "icmp_code": names (port-unreachable) or numbers
	ICMPv6Type []string // "icmpv6_type"
	ICMPv6Code []string // "icmpv6_code"
	TCPFlags   string   // "tcp_flags": see the package doc

	Action     string // "action": accept, drop, reject, notrack, helper, continue, counter, log
	RejectWith string // "reject_with": tcp-reset, port-unreachable, admin-prohibited, ...
	Helper     string // "helper": helper name for action "helper"
	Log        bool   // "log"
	LogPrefix  string // "log_prefix"
	LogLevel   string // "log_level": debug, info, notice, warn, err, crit, alert, emerg
}

// Field names used in errors (the configuration's key names).
const (
	FieldComment     = "comment"
	FieldFamily      = "family"
	FieldProto       = "proto"
	FieldSAddr       = "saddr"
	FieldDAddr       = "daddr"
	FieldSPort       = "sport"
	FieldDPort       = "dport"
	FieldIIf         = "iif"
	FieldOIf         = "oif"
	FieldCtState     = "ct_state"
	FieldCtDirection = "ct_direction"
	FieldCtStatus    = "ct_status"
	FieldCtReason    = "ct_reason"
	FieldCtHelper    = "ct_helper"
	FieldICMPType    = "icmp_type"
	FieldICMPCode    = "icmp_code"
	FieldICMPv6Type  = "icmpv6_type"
	FieldICMPv6Code  = "icmpv6_code"
	FieldTCPFlags    = "tcp_flags"
	FieldAction      = "action"
	FieldRejectWith  = "reject_with"
	FieldHelper      = "helper"
	FieldLog         = "log"
	FieldLogPrefix   = "log_prefix"
	FieldLogLevel    = "log_level"
	FieldPolicy      = "policy"
	FieldElems       = "" // a set's element list
)

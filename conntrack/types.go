package conntrack

import (
	"strings"

	"github.com/tunrouter/router/packet"
)

// CtInfo is the per-packet connection-tracking information, with the values
// of the kernel's enum ip_conntrack_info. Invalid (255) means the packet got
// no connection and was not untracked.
type CtInfo uint8

// CtInfo values.
const (
	Established      CtInfo = 0
	Related          CtInfo = 1
	New              CtInfo = 2
	EstablishedReply CtInfo = 3
	RelatedReply     CtInfo = 4
	Untracked        CtInfo = 7
	Invalid          CtInfo = 255
)

var ctinfoNames = map[CtInfo]string{
	Established: "ESTABLISHED", Related: "RELATED", New: "NEW",
	EstablishedReply: "ESTABLISHED_REPLY", RelatedReply: "RELATED_REPLY",
	Untracked: "UNTRACKED", Invalid: "INVALID",
}

func (c CtInfo) String() string {
	if s, ok := ctinfoNames[c]; ok {
		return s
	}
	return "CtInfo(?)"
}

// IsReply reports whether the packet travels in the reply direction.
func (c CtInfo) IsReply() bool { return c == EstablishedReply || c == RelatedReply }

// Dir returns the packet's direction (meaningful only with a connection).
func (c CtInfo) Dir() Dir {
	if c.IsReply() {
		return Reply
	}
	return Original
}

// State returns the user-visible state bit (xt_state / nft ct state).
func (c CtInfo) State() State {
	switch c {
	case Untracked:
		return StateUntracked
	case Invalid:
		return StateInvalid
	}
	return State(1) << (c%3 + 1)
}

// State is the user-visible connection state as a bit set, with the bit
// values of xt_state and nft's ct state: a rule matches a set of states.
type State uint8

// State bits.
const (
	StateInvalid     State = 1 << 0
	StateEstablished State = 1 << 1
	StateRelated     State = 1 << 2
	StateNew         State = 1 << 3
	StateUntracked   State = 1 << 6
)

var stateNames = []struct {
	s    State
	name string
}{
	{StateNew, "new"}, {StateEstablished, "established"}, {StateRelated, "related"},
	{StateInvalid, "invalid"}, {StateUntracked, "untracked"},
}

// String returns the state names in nft's vocabulary, comma-separated
// ("established,related").
func (s State) String() string {
	var names []string
	for _, n := range stateNames {
		if s&n.s != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseState returns the state bit for one name ("new", "established",
// "related", "invalid", "untracked").
func ParseState(name string) (State, bool) {
	for _, n := range stateNames {
		if n.name == name {
			return n.s, true
		}
	}
	return 0, false
}

// Dir is a connection direction.
type Dir uint8

// Directions.
const (
	Original Dir = 0
	Reply    Dir = 1
)

func (d Dir) String() string {
	if d == Reply {
		return "reply"
	}
	return "original"
}

// Status is the connection status bit set, with the kernel's bit numbers
// (enum ip_conntrack_status) where they exist.
type Status uint16

// Status bits.
const (
	StatusExpected     Status = 1 << 0
	StatusSeenReply    Status = 1 << 1
	StatusAssured      Status = 1 << 2
	StatusConfirmed    Status = 1 << 3
	StatusSrcNAT       Status = 1 << 4
	StatusDstNAT       Status = 1 << 5
	StatusSeqAdjust    Status = 1 << 6
	StatusDying        Status = 1 << 9
	StatusFixedTimeout Status = 1 << 10
	// StatusHelper is ours: a helper is attached (the kernel keeps this in
	// an extension, conntrack -L prints helper=NAME).
	StatusHelper Status = 1 << 14
)

var statusNames = []struct {
	s    Status
	name string
}{
	{StatusExpected, "expected"}, {StatusSeenReply, "seen-reply"}, {StatusAssured, "assured"},
	{StatusConfirmed, "confirmed"}, {StatusSrcNAT, "snat"}, {StatusDstNAT, "dnat"},
	{StatusSeqAdjust, "seq-adjust"}, {StatusDying, "dying"}, {StatusFixedTimeout, "fixed-timeout"},
	{StatusHelper, "helper"},
}

func (s Status) String() string {
	var names []string
	for _, n := range statusNames {
		if s&n.s != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// ParseStatus returns the status bit for one name as String prints it.
func ParseStatus(name string) (Status, bool) {
	for _, n := range statusNames {
		if n.name == name {
			return n.s, true
		}
	}
	return 0, false
}

// TCPState is the TCP tracker's state, numbered as in the kernel (the code
// compares states with >=).
type TCPState uint8

// TCP states.
const (
	TCPNone TCPState = iota
	TCPSynSent
	TCPSynRecv
	TCPEstablished
	TCPFinWait
	TCPCloseWait
	TCPLastAck
	TCPTimeWait
	TCPClose
	TCPSynSent2
	numTCPStates
)

var tcpStateNames = [numTCPStates]string{
	"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
	"LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
}

func (s TCPState) String() string {
	if s < numTCPStates {
		return tcpStateNames[s]
	}
	return "TCPState(?)"
}

// Reason says why a packet is INVALID (or, for ReasonTableFull, why it was
// dropped by conntrack itself). Values and texts are stable: they are used
// as metric labels, in logs and traces, and in rules ("ct invalid reason").
// The first values are the packet decoder's errors, in the same order.
type Reason uint8

// Reasons. Keep the numbering: append new reasons at the end.
const (
	ReasonNone Reason = Reason(packet.ErrNone)
	// Values 1 .. packet.NumDecodeErrors-1 are the decoder's errors.

	ReasonNoL4 Reason = iota + Reason(packet.NumDecodeErrors) - 1
	ReasonFragment
	ReasonTCPChecksum
	ReasonUDPChecksum
	ReasonICMPChecksum
	ReasonICMPv6Checksum
	ReasonTCPFlags
	ReasonTCPInvalidNew
	ReasonTCPNoSYN
	ReasonTCPState
	ReasonTCPInvalidRST
	ReasonTCPSeqAboveWindow
	ReasonTCPAckAboveSent
	ReasonICMPUnknown
	ReasonICMPBadQuote
	ReasonICMPQuoteNotInvertible
	ReasonICMPOuterDaddr
	ReasonICMPReplyNoRequest
	ReasonICMPType
	ReasonICMPUntrackable
	ReasonICMPv6Unknown
	ReasonICMPv6BadQuote
	ReasonICMPv6QuoteNotInvertible
	ReasonICMPv6OuterDaddr
	ReasonICMPv6ReplyNoRequest
	ReasonICMPv6Untrackable
	ReasonICMPv6BadRedirect
	ReasonTableFull
	NumReasons
)

var reasonText = [NumReasons]string{
	ReasonNoL4:                     "ip: no upper-layer header",
	ReasonFragment:                 "ip: unreassembled fragment",
	ReasonTCPChecksum:              "tcp: bad checksum",
	ReasonUDPChecksum:              "udp: bad checksum",
	ReasonICMPChecksum:             "icmp: bad checksum",
	ReasonICMPv6Checksum:           "icmpv6: bad checksum",
	ReasonTCPFlags:                 "tcp: invalid flags",
	ReasonTCPInvalidNew:            "tcp: invalid first packet",
	ReasonTCPNoSYN:                 "tcp: new connection without syn",
	ReasonTCPState:                 "tcp: invalid in state",
	ReasonTCPInvalidRST:            "tcp: rst below acknowledged seq",
	ReasonTCPSeqAboveWindow:        "tcp: seq above window",
	ReasonTCPAckAboveSent:          "tcp: ack above sent data",
	ReasonICMPUnknown:              "icmp: error for unknown connection",
	ReasonICMPBadQuote:             "icmp: bad quoted packet",
	ReasonICMPQuoteNotInvertible:   "icmp: quoted packet not trackable",
	ReasonICMPOuterDaddr:           "icmp: outer daddr mismatch",
	ReasonICMPReplyNoRequest:       "icmp: reply without request",
	ReasonICMPType:                 "icmp: invalid type",
	ReasonICMPUntrackable:          "icmp: type cannot be tracked",
	ReasonICMPv6Unknown:            "icmpv6: error for unknown connection",
	ReasonICMPv6BadQuote:           "icmpv6: bad quoted packet",
	ReasonICMPv6QuoteNotInvertible: "icmpv6: quoted packet not trackable",
	ReasonICMPv6OuterDaddr:         "icmpv6: outer daddr mismatch",
	ReasonICMPv6ReplyNoRequest:     "icmpv6: reply without request",
	ReasonICMPv6Untrackable:        "icmpv6: type cannot be tracked",
	ReasonICMPv6BadRedirect:        "icmpv6: bad redirect",
	ReasonTableFull:                "conntrack: table full",
}

// String returns the reason's stable text ("tcp: seq above window").
func (r Reason) String() string {
	if r < Reason(packet.NumDecodeErrors) {
		return packet.DecodeError(r).String()
	}
	if r < NumReasons {
		return reasonText[r]
	}
	return "reason(?)"
}

// ReasonFromDecode converts a decoder error into a Reason.
func ReasonFromDecode(e packet.DecodeError) Reason { return Reason(e) }

// ParseReason returns the reason whose text is s.
func ParseReason(s string) (Reason, bool) {
	for r := Reason(1); r < NumReasons; r++ {
		if r.String() == s {
			return r, true
		}
	}
	return 0, false
}

// AllReasons returns every reason, for documentation and metrics.
func AllReasons() []Reason {
	out := make([]Reason, 0, NumReasons)
	for r := Reason(1); r < NumReasons; r++ {
		out = append(out, r)
	}
	return out
}

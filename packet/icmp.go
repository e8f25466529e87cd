package packet

// ICMP (IPv4) types.
const (
	ICMPEchoReply       = 0
	ICMPDestUnreachable = 3
	ICMPSourceQuench    = 4
	ICMPRedirect        = 5
	ICMPEchoRequest     = 8
	ICMPRouterAdvert    = 9
	ICMPRouterSolicit   = 10
	ICMPTimeExceeded    = 11
	ICMPParamProblem    = 12
	ICMPTimestamp       = 13
	ICMPTimestampReply  = 14
	ICMPInfoRequest     = 15
	ICMPInfoReply       = 16
	ICMPAddrMaskRequest = 17
	ICMPAddrMaskReply   = 18
)

// ICMP destination-unreachable codes used by the router.
const (
	ICMPNetUnreachable     = 0
	ICMPHostUnreachable    = 1
	ICMPProtoUnreachable   = 2
	ICMPPortUnreachable    = 3
	ICMPFragNeeded         = 4
	ICMPNetProhibited      = 9
	ICMPHostProhibited     = 10
	ICMPAdminProhibited    = 13
	ICMPTTLExceededTransit = 0
)

// ICMPv6 types.
const (
	ICMPv6DestUnreachable  = 1
	ICMPv6PacketTooBig     = 2
	ICMPv6TimeExceeded     = 3
	ICMPv6ParamProblem     = 4
	ICMPv6EchoRequest      = 128
	ICMPv6EchoReply        = 129
	ICMPv6MLDQuery         = 130
	ICMPv6MLDReport        = 131
	ICMPv6MLDDone          = 132
	ICMPv6RouterSolicit    = 133
	ICMPv6RouterAdvert     = 134
	ICMPv6NeighborSolicit  = 135
	ICMPv6NeighborAdvert   = 136
	ICMPv6Redirect         = 137
	ICMPv6NodeInfoQuery    = 139
	ICMPv6NodeInfoResponse = 140
	ICMPv6MLDv2Report      = 143
	ICMPv6MRouterAdvert    = 151
	ICMPv6MRouterSolicit   = 152
)

// ICMPv6 destination-unreachable codes used by the router.
const (
	ICMPv6NoRoute         = 0
	ICMPv6AdminProhibited = 1
	ICMPv6AddrUnreachable = 3
	ICMPv6PortUnreachable = 4
	ICMPv6RejectRoute     = 6
)

// IsICMPError reports whether an ICMP (v4) type is an error that quotes
// the packet it is about (the kernel's error path: 3, 4, 5, 11, 12).
func IsICMPError(t uint8) bool {
	switch t {
	case ICMPDestUnreachable, ICMPSourceQuench, ICMPRedirect, ICMPTimeExceeded, ICMPParamProblem:
		return true
	}
	return false
}

// IsICMPv6Error reports whether an ICMPv6 type is an error message: the
// high-order bit of the type is clear (RFC 4443 2.1). Besides the four
// defined errors (1-4) this includes the unassigned types 0 and 5-127,
// which the kernel also sends down its error path.
func IsICMPv6Error(t uint8) bool { return t < 128 }

// IsICMPv6Untracked reports whether an ICMPv6 type is one the kernel never
// tracks (MLD, router and neighbour discovery, multicast router discovery):
// such packets are UNTRACKED, not INVALID.
func IsICMPv6Untracked(t uint8) bool {
	switch t {
	case ICMPv6MLDQuery, ICMPv6MLDReport, ICMPv6MLDDone,
		ICMPv6RouterSolicit, ICMPv6RouterAdvert, ICMPv6NeighborSolicit, ICMPv6NeighborAdvert,
		ICMPv6MLDv2Report, ICMPv6MRouterAdvert, ICMPv6MRouterSolicit:
		return true
	}
	return false
}

package packet

import "strconv"

// Proto is an IP protocol number (the IPv4 protocol field, or the IPv6
// upper-layer next-header value after the extension-header chain).
type Proto uint8

// Protocol numbers the router knows by name.
const (
	HopByHop     Proto = 0
	ICMP         Proto = 1
	IGMP         Proto = 2
	TCP          Proto = 6
	UDP          Proto = 17
	IPv6Route    Proto = 43
	IPv6Frag     Proto = 44
	GRE          Proto = 47
	ESP          Proto = 50
	AH           Proto = 51
	ICMPv6       Proto = 58
	IPv6NoNext   Proto = 59
	IPv6Opts     Proto = 60
	SCTP         Proto = 132
	UDPLite      Proto = 136
	IPv6Mobility Proto = 135
)

var protoNames = [256]string{
	ICMP: "icmp", IGMP: "igmp", TCP: "tcp", UDP: "udp", GRE: "gre", ESP: "esp",
	AH: "ah", ICMPv6: "icmpv6", SCTP: "sctp", UDPLite: "udplite",
}

// String returns the lowercase name ("tcp", "icmpv6") or the number.
func (p Proto) String() string {
	if s := protoNames[p]; s != "" {
		return s
	}
	return strconv.Itoa(int(p))
}

// ProtoByName returns the protocol for a name as String prints it.
func ProtoByName(name string) (Proto, bool) {
	for i, s := range protoNames {
		if s != "" && s == name {
			return Proto(i), true
		}
	}
	return 0, false
}

// IsICMP reports whether p is ICMP or ICMPv6.
func (p Proto) IsICMP() bool { return p == ICMP || p == ICMPv6 }

// TCPFlags are the TCP header flag bits.
type TCPFlags uint8

// TCP flag bits.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

var flagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// String returns the set flags joined by '|' in the order SYN|ACK style
// tools print them ("SYN|FIN", "ACK|PSH"); "NONE" when no flag is set.
func (f TCPFlags) String() string {
	if f == 0 {
		return "NONE"
	}
	var b []byte
	for i := 0; i < 8; i++ {
		if f&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, flagNames[i]...)
		}
	}
	return string(b)
}

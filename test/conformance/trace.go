package conformance

import "github.com/tunrouter/router/packet"

// traceLine is one record of the daemon's trace file.
type traceLine struct {
	In       *string `json:"in"`
	Out      *string `json:"out"`
	Family   int     `json:"family"`
	Proto    string  `json:"proto"`
	Src      string  `json:"src"`
	Dst      string  `json:"dst"`
	Len      int     `json:"len"`
	IPID     uint32  `json:"ipid"`
	SPort    int     `json:"sport"`
	DPort    int     `json:"dport"`
	ICMPType int     `json:"icmp_type"`
	ICMPCode int     `json:"icmp_code"`
	ICMPID   int     `json:"icmp_id"`
	Flags    string  `json:"flags"`
	Seq      uint32  `json:"seq"`
	Ack      uint32  `json:"ack"`
	Payload  int     `json:"payload"`
	Ct       string  `json:"ct"`
	State    string  `json:"state"`
	Reason   string  `json:"reason"`
	Status   string  `json:"status"`
	TCPState string  `json:"tcp_state"`
	Chain    string  `json:"chain"`
	Rule     int     `json:"rule"`
	Verdict  string  `json:"verdict"`
	Why      string  `json:"why"`

	used bool
}

// sig is the part of a trace record that identifies the packet.
type sig struct {
	in                     string
	family                 int
	proto, src, dst, flags string
	length                 int
	ipid                   uint32
	sport, dport           int
	icmpType, icmpCode     int
	icmpID                 int
	seq, ack               uint32
	payload                int
}

func (l *traceLine) sig() sig {
	in := ""
	if l.In != nil {
		in = *l.In
	}
	return sig{in: in, family: l.Family, proto: l.Proto, src: l.Src, dst: l.Dst, flags: l.Flags,
		length: l.Len, ipid: l.IPID, sport: l.SPort, dport: l.DPort, icmpType: l.ICMPType,
		icmpCode: l.ICMPCode, icmpID: l.ICMPID, seq: l.Seq, ack: l.Ack, payload: l.Payload}
}

// packetSig computes what the trace will say about an injected packet:
// the daemon decodes the same bytes with the same decoder.
func packetSig(from Side, b []byte) sig {
	var p packet.Parsed
	p.Decode(b)
	s := sig{in: devName[from]}
	if p.Family == 0 {
		return s
	}
	s.family = int(p.Family)
	s.proto = p.Proto.String()
	s.src = p.Key.SrcAddr().String()
	s.dst = p.Key.DstAddr().String()
	s.length = p.Length
	s.ipid = p.IPID
	switch p.Proto {
	case packet.TCP, packet.UDP, packet.UDPLite, packet.SCTP:
		s.sport, s.dport = int(p.SrcPort), int(p.DstPort)
	case packet.ICMP, packet.ICMPv6:
		s.icmpType, s.icmpCode, s.icmpID = int(p.ICMPType), int(p.ICMPCode), int(p.ICMPID)
	}
	if p.Proto == packet.TCP {
		s.flags = p.TCPFlags.String()
		s.seq, s.ack, s.payload = p.Seq, p.Ack, p.PayloadLen()
	}
	return s
}

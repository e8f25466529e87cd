package conformance

import (
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/test/routertest"
)

// traceLine is one record of the daemon's trace file.
type traceLine struct {
	routertest.TraceRecord

	used bool // matched with a packet
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
	return sig{in: l.InDev(), family: l.Family, proto: l.Proto, src: l.Src, dst: l.Dst, flags: l.Flags,
		length: l.Len, ipid: l.IPID, sport: int(l.Sport), dport: int(l.Dport), icmpType: l.ICMPType,
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

// Package filtertest builds real IPv4/IPv6 packets (with valid checksums)
// for the filter's and the configuration's tests, and decodes them with
// packet.Decode, so that rules are exercised on what the pipeline would
// see. It panics on malformed test input (it is for tests only).
package filtertest

import (
	"encoding/binary"
	"net/netip"

	"github.com/tunrouter/router/packet"
)

// IP holds the IP header fields a test may want to set. Zero values get
// defaults: TTL 64.
type IP struct {
	Src, Dst  netip.Addr
	Proto     packet.Proto
	TTL       uint8
	TOS       uint8 // IPv4 TOS / IPv6 traffic class
	ID        uint16
	DF, MF    bool
	FragOff   uint16 // in bytes (a multiple of 8)
	FlowLabel uint32
}

// Build returns an IP packet with header h around payload (the transport
// header and data). The transport checksum is filled in for TCP, UDP,
// ICMP and ICMPv6 when the packet is not a fragment.
func Build(h IP, payload []byte) []byte {
	var b []byte
	if h.TTL == 0 {
		h.TTL = 64
	}
	frag := h.MF || h.FragOff != 0
	if h.Src.Is4() {
		b = make([]byte, 20+len(payload))
		b[0] = 0x45
		b[1] = h.TOS
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], h.ID)
		fo := h.FragOff / 8
		if h.DF {
			fo |= 0x4000
		}
		if h.MF {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], fo)
		b[8] = h.TTL
		b[9] = uint8(h.Proto)
		s, d := h.Src.As4(), h.Dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		copy(b[20:], payload)
		packet.SetIPv4Checksum(b)
	} else {
		extra := 0
		if frag {
			extra = 8
		}
		b = make([]byte, 40+extra+len(payload))
		binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(h.TOS)<<20|h.FlowLabel&0xfffff)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		b[6] = uint8(h.Proto)
		b[7] = h.TTL
		s, d := h.Src.As16(), h.Dst.As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
		if frag {
			b[6] = uint8(packet.IPv6Frag)
			b[40] = uint8(h.Proto)
			fo := h.FragOff &^ 7
			if h.MF {
				fo |= 1
			}
			binary.BigEndian.PutUint16(b[42:], fo)
			binary.BigEndian.PutUint32(b[44:], uint32(h.ID))
		}
		copy(b[40+extra:], payload)
	}
	if !frag {
		var p packet.Parsed
		p.Decode(b)
		p.SetL4Checksum()
	}
	return b
}

// TCPHeader holds the TCP fields a test may want to set. Window 0 means
// 65535.
type TCPHeader struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            packet.TCPFlags
	Window           uint16
	Urgent           uint16
	Reserved         uint8 // the 4 reserved bits (AE is the lowest)
}

// Segment returns a 20-byte TCP header followed by data (checksum zero;
// Build fills it in).
func Segment(t TCPHeader, data []byte) []byte {
	b := make([]byte, 20+len(data))
	binary.BigEndian.PutUint16(b[0:], t.SrcPort)
	binary.BigEndian.PutUint16(b[2:], t.DstPort)
	binary.BigEndian.PutUint32(b[4:], t.Seq)
	binary.BigEndian.PutUint32(b[8:], t.Ack)
	b[12] = 5<<4 | t.Reserved&0x0f
	b[13] = uint8(t.Flags)
	w := t.Window
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(b[14:], w)
	binary.BigEndian.PutUint16(b[18:], t.Urgent)
	copy(b[20:], data)
	return b
}

// Datagram returns a UDP header followed by data.
func Datagram(sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], data)
	return b
}

// ICMPMessage returns an ICMP/ICMPv6 header (type, code, 4 bytes of rest)
// followed by body.
func ICMPMessage(typ, code uint8, rest uint32, body []byte) []byte {
	b := make([]byte, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	copy(b[8:], body)
	return b
}

func addrPort(s string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap
	}
	return netip.AddrPortFrom(netip.MustParseAddr(s), 0)
}

func ipFor(src, dst netip.AddrPort, proto packet.Proto) IP {
	return IP{Src: src.Addr(), Dst: dst.Addr(), Proto: proto}
}

// TCP returns a TCP segment from src to dst ("10.0.0.1:1234",
// "[fd00::1]:80") with the given flags.
func TCP(src, dst string, flags packet.TCPFlags) []byte {
	s, d := addrPort(src), addrPort(dst)
	return Build(ipFor(s, d, packet.TCP), Segment(TCPHeader{SrcPort: s.Port(), DstPort: d.Port(), Seq: 1000, Flags: flags}, nil))
}

// UDP returns a UDP datagram with n bytes of data.
func UDP(src, dst string, n int) []byte {
	s, d := addrPort(src), addrPort(dst)
	return Build(ipFor(s, d, packet.UDP), Datagram(s.Port(), d.Port(), make([]byte, n)))
}

// ICMP returns an ICMP (IPv4) or ICMPv6 (IPv6) query of the given type
// (echo request/reply carry id and seq).
func ICMP(src, dst string, typ, code uint8, id, seq uint16) []byte {
	s, d := addrPort(src), addrPort(dst)
	proto := packet.ICMP
	if s.Addr().Is6() {
		proto = packet.ICMPv6
	}
	return Build(ipFor(s, d, proto), ICMPMessage(typ, code, uint32(id)<<16|uint32(seq), nil))
}

// ICMPError returns an ICMP/ICMPv6 error from src to dst quoting the
// start of the packet quoted (the IP header and 8 bytes of transport, as
// routers quote at least).
func ICMPError(src, dst string, typ, code uint8, rest uint32, quoted []byte) []byte {
	s, d := addrPort(src), addrPort(dst)
	proto := packet.ICMP
	if s.Addr().Is6() {
		proto = packet.ICMPv6
	}
	n := len(quoted)
	if quoted[0]>>4 == 4 {
		n = min(n, int(quoted[0]&0x0f)*4+8)
	} else {
		n = min(n, 48)
	}
	return Build(ipFor(s, d, proto), ICMPMessage(typ, code, rest, quoted[:n]))
}

// Proto returns a packet of any protocol with n bytes of payload.
func Proto(src, dst string, proto packet.Proto, n int) []byte {
	s, d := addrPort(src), addrPort(dst)
	return Build(ipFor(s, d, proto), make([]byte, n))
}

// Decode decodes b into a new Parsed.
func Decode(b []byte) *packet.Parsed {
	p := new(packet.Parsed)
	p.Decode(b)
	return p
}

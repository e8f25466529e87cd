package tundev

import (
	"encoding/binary"
	"net/netip"
)

// Minimal IPv4 packet builders and parsers for the end-to-end tests. They
// are written independently of the router's packet package so that
// tundev's tests do not depend on it.

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

func csum(b []byte, acc uint32) uint16 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}

func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	s, d := src.As4(), dst.As4()
	var acc uint32
	acc += uint32(s[0])<<8 | uint32(s[1])
	acc += uint32(s[2])<<8 | uint32(s[3])
	acc += uint32(d[0])<<8 | uint32(d[1])
	acc += uint32(d[2])<<8 | uint32(d[3])
	acc += uint32(proto) + uint32(n)
	return acc
}

// ipv4 writes a 20-byte IPv4 header for a payload of n bytes into b.
func ipv4(b []byte, src, dst netip.Addr, proto uint8, n int, id uint16) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:], uint16(20+n))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8] = 64
	b[9] = proto
	b[10], b[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], csum(b[:20], 0))
}

// echo4 builds an ICMPv4 echo request into b (which must be large enough)
// and returns its length.
func echo4(b []byte, src, dst netip.Addr, id, seq uint16, payload []byte) int {
	n := 8 + len(payload)
	ipv4(b, src, dst, protoICMP, n, seq)
	ic := b[20 : 20+n]
	ic[0], ic[1], ic[2], ic[3] = 8, 0, 0, 0
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	copy(ic[8:], payload)
	binary.BigEndian.PutUint16(ic[2:], csum(ic, 0))
	return 20 + n
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// tcp4 builds an IPv4 TCP segment into b and returns its length. mss, when
// non-zero, adds an MSS option.
func tcp4(b []byte, src, dst netip.AddrPort, seq, ack uint32, flags uint8, win uint16, mss uint16, payload []byte) int {
	hl := 20
	if mss != 0 {
		hl = 24
	}
	n := hl + len(payload)
	ipv4(b, src.Addr(), dst.Addr(), protoTCP, n, 0)
	t := b[20 : 20+n]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = uint8(hl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	if mss != 0 {
		t[20], t[21] = 2, 4
		binary.BigEndian.PutUint16(t[22:], mss)
	}
	copy(t[hl:], payload)
	binary.BigEndian.PutUint16(t[16:], csum(t, pseudoSum(src.Addr(), dst.Addr(), protoTCP, n)))
	return 20 + n
}

// pkt4 is a parsed IPv4 packet.
type pkt4 struct {
	src, dst netip.Addr
	proto    uint8
	totalLen int
	l4       []byte // transport header and payload
}

func parse4(b []byte) (pkt4, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return pkt4{}, false
	}
	ihl := int(b[0]&0xf) * 4
	tl := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || tl < ihl || tl > len(b) {
		return pkt4{}, false
	}
	return pkt4{
		src:      netip.AddrFrom4([4]byte(b[12:16])),
		dst:      netip.AddrFrom4([4]byte(b[16:20])),
		proto:    b[9],
		totalLen: tl,
		l4:       b[ihl:tl],
	}, true
}

// ipHeaderOK reports whether the IPv4 header checksum of b verifies.
func ipHeaderOK(b []byte) bool {
	ihl := int(b[0]&0xf) * 4
	return csum(b[:ihl], 0) == 0
}

// l4ChecksumOK verifies the TCP or UDP checksum of p.
func (p pkt4) l4ChecksumOK() bool {
	return csum(p.l4, pseudoSum(p.src, p.dst, p.proto, len(p.l4))) == 0
}

func (p pkt4) ports() (src, dst uint16) {
	if len(p.l4) < 4 {
		return 0, 0
	}
	return binary.BigEndian.Uint16(p.l4[0:]), binary.BigEndian.Uint16(p.l4[2:])
}

// tcpFields returns seq, ack, flags and payload of a TCP packet.
func (p pkt4) tcpFields() (seq, ack uint32, flags uint8, payload []byte, ok bool) {
	if p.proto != protoTCP || len(p.l4) < 20 {
		return 0, 0, 0, nil, false
	}
	hl := int(p.l4[12]>>4) * 4
	if hl < 20 || hl > len(p.l4) {
		return 0, 0, 0, nil, false
	}
	return binary.BigEndian.Uint32(p.l4[4:]), binary.BigEndian.Uint32(p.l4[8:]), p.l4[13], p.l4[hl:], true
}

// udp4 builds an IPv4 UDP datagram into b and returns its length.
func udp4(b []byte, src, dst netip.AddrPort, id uint16, payload []byte) int {
	n := 8 + len(payload)
	ipv4(b, src.Addr(), dst.Addr(), protoUDP, n, id)
	u := b[20 : 20+n]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(n))
	u[6], u[7] = 0, 0
	copy(u[8:], payload)
	c := csum(u, pseudoSum(src.Addr(), dst.Addr(), protoUDP, n))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return 20 + n
}

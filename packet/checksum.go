package packet

import (
	"encoding/binary"
	"math/bits"
)

// Checksum returns the 16-bit ones'-complement sum of b added to initial
// (a partial sum, for example a pseudo-header sum), folded but not
// complemented. A header whose checksum field is correct sums to 0xffff.
func Checksum(b []byte, initial uint32) uint16 {
	return fold(sum64(b, uint64(initial)))
}

// sum64 adds b to acc as big-endian 16-bit words, 64 bits at a time with
// end-around carry: the ones'-complement sum does not depend on how the
// 16-bit words are grouped, so folding the 64-bit sum gives the same result.
func sum64(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:]), 0)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), carry)
		acc += carry
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += carry
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += carry
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += carry
	}
	return acc
}

func fold(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// PseudoHeaderSum returns the partial sum of the TCP/UDP/ICMPv6 pseudo
// header for a packet of the given family, addresses, protocol and
// transport length.
func PseudoHeaderSum(family uint8, src, dst *[16]byte, proto Proto, length int) uint32 {
	var acc uint64
	if family == 4 {
		acc = uint64(binary.BigEndian.Uint32(src[:4])) + uint64(binary.BigEndian.Uint32(dst[:4]))
	} else {
		acc = sum64(src[:], 0)
		acc = sum64(dst[:], acc)
	}
	acc += uint64(proto) + uint64(length)
	return uint32(fold(acc))
}

// L4ChecksumValid verifies the transport checksum of a decoded packet as
// nf_conntrack_checksum does: TCP, UDP (a zero UDP checksum is accepted),
// UDP-Lite is not verified, ICMP (no pseudo header) and ICMPv6 (pseudo
// header). Fragments and packets whose transport header did not decode
// report true: there is nothing to verify.
func (p *Parsed) L4ChecksumValid() bool {
	if p.Err != ErrNone || p.Fragment || p.L4Off == 0 || p.L4Off >= len(p.b) {
		return true
	}
	seg := p.b[p.L4Off:]
	switch p.Proto {
	case TCP:
	case UDP:
		if len(seg) >= 8 && seg[6] == 0 && seg[7] == 0 {
			return true
		}
		if int(p.UDPLength) <= len(seg) {
			seg = seg[:p.UDPLength]
		}
	case ICMP:
		return Checksum(seg, 0) == 0xffff
	case ICMPv6:
	default:
		return true
	}
	ph := PseudoHeaderSum(p.Family, &p.Key.Src, &p.Key.Dst, p.Proto, len(seg))
	return Checksum(seg, ph) == 0xffff
}

// ChecksumUpdate16 returns the checksum field value after a 16-bit word
// covered by it changed from old to new (RFC 1624, eqn. 3).
func ChecksumUpdate16(csum, old, new uint16) uint16 {
	s := uint32(^csum) + uint32(^old) + uint32(new)
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return ^uint16(s)
}

// ChecksumUpdate32 is ChecksumUpdate16 for a 32-bit value.
func ChecksumUpdate32(csum uint16, old, new uint32) uint16 {
	csum = ChecksumUpdate16(csum, uint16(old>>16), uint16(new>>16))
	return ChecksumUpdate16(csum, uint16(old), uint16(new))
}

// SetL4Checksum recomputes and stores the transport checksum of a decoded,
// unfragmented TCP, UDP, ICMP or ICMPv6 packet (after its payload or
// addresses were rewritten).
func (p *Parsed) SetL4Checksum() {
	if p.Fragment || p.L4Off == 0 || p.L4Off > len(p.b) {
		return
	}
	seg := p.b[p.L4Off:]
	var at int
	switch p.Proto {
	case TCP:
		at = 16
	case UDP:
		at = 6
		// The UDP checksum covers the UDP length, not any IP padding.
		if ul := int(p.UDPLength); ul >= 8 && ul < len(seg) {
			seg = seg[:ul]
		}
	case ICMP, ICMPv6:
		at = 2
	default:
		return
	}
	if len(seg) < at+2 {
		return
	}
	seg[at], seg[at+1] = 0, 0
	var ph uint32
	if p.Proto != ICMP {
		ph = PseudoHeaderSum(p.Family, &p.Key.Src, &p.Key.Dst, p.Proto, len(seg))
	}
	c := ^Checksum(seg, ph)
	if p.Proto == UDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[at:], c)
}

// SetIPv4Checksum recomputes the IPv4 header checksum of b. It does
// nothing when b does not hold the header its IHL field claims.
func SetIPv4Checksum(b []byte) {
	if len(b) < 20 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || ihl > len(b) {
		return
	}
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], ^Checksum(b[:ihl], 0))
}

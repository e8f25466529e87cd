package packettest

import (
	"encoding/binary"

	"github.com/tunrouter/router/packet"
)

// The helpers below take a packet built by this package, return a
// modified copy, and leave the input untouched. They locate headers with a
// tolerant walker of their own (not packet.Decode), so that they keep
// working on packets that are already broken.

// Clone returns a copy of b.
func Clone(b []byte) []byte { return append([]byte(nil), b...) }

// locate returns the offset of the transport header and the transport
// protocol of b, walking IPv4's IHL or IPv6's extension headers without
// validating anything beyond what it needs. ok is false when it cannot
// tell.
func locate(b []byte) (off int, proto packet.Proto, ok bool) {
	if len(b) < 1 {
		return 0, 0, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return 0, 0, false
		}
		return int(b[0]&0xf) * 4, packet.Proto(b[9]), true
	case 6:
		if len(b) < 40 {
			return 0, 0, false
		}
		next, off := packet.Proto(b[6]), 40
		for {
			switch next {
			case packet.HopByHop, packet.IPv6Route, packet.IPv6Opts:
				if off+2 > len(b) {
					return 0, 0, false
				}
				next, off = packet.Proto(b[off]), off+(int(b[off+1])+1)*8
			case packet.AH:
				if off+2 > len(b) {
					return 0, 0, false
				}
				next, off = packet.Proto(b[off]), off+(int(b[off+1])+2)*4
			case packet.IPv6Frag:
				if off+8 > len(b) {
					return 0, 0, false
				}
				next, off = packet.Proto(b[off]), off+8
			default:
				return off, next, off <= len(b)
			}
		}
	}
	return 0, 0, false
}

func csumField(proto packet.Proto) int {
	switch proto {
	case packet.TCP:
		return 16
	case packet.UDP:
		return 6
	case packet.ICMP, packet.ICMPv6:
		return 2
	}
	return -1
}

// FixChecksums recomputes, in place, the IPv4 header checksum and the
// transport checksum of b (over the bytes present, from the transport
// header to the end of b) and returns b. Use it after editing a built
// packet by hand.
func FixChecksums(b []byte) []byte {
	if len(b) >= 20 && b[0]>>4 == 4 {
		ihl := int(b[0]&0xf) * 4
		if ihl >= 20 && ihl <= len(b) {
			setIPv4HeaderChecksum(b, ihl)
		}
	}
	off, proto, ok := locate(b)
	at := csumField(proto)
	if !ok || at < 0 || off+at+2 > len(b) {
		return b
	}
	seg := b[off:]
	seg[at], seg[at+1] = 0, 0
	var ph uint32
	if proto != packet.ICMP {
		if b[0]>>4 == 4 {
			ph = pseudoSum(b[12:16], b[16:20], proto, len(seg))
		} else {
			ph = pseudoSum(b[8:24], b[24:40], proto, len(seg))
		}
	}
	c := ^Sum16(seg, ph)
	if proto == packet.UDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[at:], c)
	return b
}

// BadIPChecksum returns a copy of the IPv4 packet b whose header checksum
// is wrong.
func BadIPChecksum(b []byte) []byte {
	c := Clone(b)
	c[10] ^= 0x5a
	return c
}

// BadL4Checksum returns a copy of b whose TCP, UDP, ICMP or ICMPv6
// checksum is wrong (for UDP it stays non-zero).
func BadL4Checksum(b []byte) []byte {
	c := Clone(b)
	off, proto, ok := locate(c)
	at := csumField(proto)
	if !ok || at < 0 || off+at+2 > len(c) {
		panic("packettest: BadL4Checksum: no transport checksum")
	}
	c[off+at] ^= 0x01
	if c[off+at] == 0 && c[off+at+1] == 0 {
		c[off+at+1] = 1
	}
	return c
}

// Truncate returns a copy of the first n bytes of b; the length fields
// still claim the full packet.
func Truncate(b []byte, n int) []byte { return Clone(b[:n]) }

// TruncateL4 returns a copy of b cut to n bytes with the IP length field
// (and IPv4 header checksum) adjusted, so that the IP layer is valid and
// only the transport header or payload is short. Transport checksums are
// left as they were.
func TruncateL4(b []byte, n int) []byte {
	return SetTotalLen(Clone(b[:n]), n)
}

// SetTotalLen returns a copy of b with the IPv4 total length (header
// checksum recomputed) or the IPv6 payload length set so that the packet
// claims n bytes.
func SetTotalLen(b []byte, n int) []byte {
	c := Clone(b)
	if c[0]>>4 == 4 {
		binary.BigEndian.PutUint16(c[2:], uint16(n))
		setIPv4Checksum(c)
	} else {
		binary.BigEndian.PutUint16(c[4:], uint16(n-40))
	}
	return c
}

// SetIHL returns a copy of the IPv4 packet b with the header-length field
// set to words (4-byte units) and the header checksum recomputed over the
// bytes that field now claims (at least 20).
func SetIHL(b []byte, words int) []byte {
	c := Clone(b)
	c[0] = c[0]&0xf0 | byte(words&0xf)
	setIPv4Checksum(c)
	return c
}

func setIPv4Checksum(c []byte) {
	n := max(int(c[0]&0xf)*4, 20)
	n = min(n, len(c))
	setIPv4HeaderChecksum(c, n)
}

// SetDataOffset returns a copy of the TCP packet b with the data-offset
// field set to words (4-byte units) and the TCP checksum recomputed.
func SetDataOffset(b []byte, words int) []byte {
	c := Clone(b)
	off, proto, ok := locate(c)
	if !ok || proto != packet.TCP || off+13 > len(c) {
		panic("packettest: SetDataOffset: not a TCP packet")
	}
	c[off+12] = c[off+12]&0x0f | byte(words)<<4
	return FixChecksums(c)
}

// SetUDPLength returns a copy of the UDP packet b with its length field
// set to n and the UDP checksum recomputed over the bytes present.
func SetUDPLength(b []byte, n int) []byte {
	c := Clone(b)
	off, proto, ok := locate(c)
	if !ok || proto != packet.UDP || off+8 > len(c) {
		panic("packettest: SetUDPLength: not a UDP packet")
	}
	binary.BigEndian.PutUint16(c[off+4:], uint16(n))
	return FixChecksums(c)
}

// SetTTL returns a copy of b with the TTL / hop limit set (IPv4 header
// checksum recomputed).
func SetTTL(b []byte, ttl uint8) []byte {
	c := Clone(b)
	if c[0]>>4 == 4 {
		c[8] = ttl
		setIPv4Checksum(c)
	} else {
		c[7] = ttl
	}
	return c
}

// SetVersion returns a copy of b with the IP version nibble set to v.
func SetVersion(b []byte, v uint8) []byte {
	c := Clone(b)
	c[0] = c[0]&0x0f | v<<4
	return c
}

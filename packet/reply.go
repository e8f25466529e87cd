package packet

import "encoding/binary"

// This file builds the packets the router itself sends: TCP resets and
// ICMP/ICMPv6 errors for REJECT verdicts, TTL and MTU problems, and echo
// replies. The builders append to a caller-provided buffer and allocate
// only when its capacity is too small. Each reports false, returning dst
// unchanged, when no packet must be sent. The rules follow the Linux reject
// and ICMP code (nf_reject_ipv4/ipv6, icmp_send, icmp6_send); each
// builder's comment lists them, and where it differs.

// ReplyTTL is the TTL / hop limit of packets the router originates (the
// Linux default ip_default_ttl and IPv6 hop_limit).
const ReplyTTL = 64

// Quote limits for ICMP errors: an ICMP error is at most 576 bytes long
// (RFC 1812 4.3.2.3, Linux caps it there), an ICMPv6 error at most the
// IPv6 minimum MTU (RFC 4443 2.4(c)).
const (
	maxICMPError4 = 576
	maxICMPError6 = 1280
)

// AppendTCPReset appends the TCP RST that a REJECT with tcp-reset sends
// back to the source of the TCP segment p (RFC 9293 3.10.7.1): when p
// carries an ACK the reset has seq = p's ack and only RST set; otherwise it
// has seq 0 and RST|ACK with ack = p's seq plus its segment length (payload,
// plus one for SYN and one for FIN). Addresses and ports are p's swapped,
// the TTL is ReplyTTL, the window zero, DF set (IPv4).
//
// No reset is built (false) for a segment that did not decode completely,
// a fragment, a segment with RST set, a segment with a bad checksum (as the
// kernel, which would not have delivered it), a multicast or broadcast
// destination, or a source that is not a unicast address.
func AppendTCPReset(dst []byte, p *Parsed) ([]byte, bool) {
	if p.Err != ErrNone || p.Proto != TCP || p.Fragment || p.TCPFlags&RST != 0 {
		return dst, false
	}
	if !replyAddrsOK(p) || !p.L4ChecksumValid() {
		return dst, false
	}
	var seq, ack uint32
	flags := RST
	if p.TCPFlags&ACK != 0 {
		seq = p.Ack
	} else {
		ack = p.Seq + uint32(p.PayloadLen())
		if p.TCPFlags&SYN != 0 {
			ack++
		}
		if p.TCPFlags&FIN != 0 {
			ack++
		}
		flags |= ACK
	}
	out, t := appendIPHeader(dst, p.Family, TCP, 20, 0, true, &p.Key.Dst, &p.Key.Src)
	binary.BigEndian.PutUint16(t[0:], p.DstPort)
	binary.BigEndian.PutUint16(t[2:], p.SrcPort)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = byte(flags)
	ph := PseudoHeaderSum(p.Family, &p.Key.Dst, &p.Key.Src, TCP, 20)
	binary.BigEndian.PutUint16(t[16:], ^Checksum(t, ph))
	return out, true
}

// AppendICMPError appends an ICMP (IPv4) or ICMPv6 (IPv6) error of the
// given type and code about p, addressed to p's source. It quotes as much
// of p as fits in 576 bytes for IPv4 (so at least the IP header and 8 bytes
// of its payload) and in 1280 bytes for IPv6. mtu fills the
// type-specific word: the next-hop MTU of fragmentation-needed (type 3
// code 4, low 16 bits) and packet-too-big (ICMPv6 type 2), or the pointer of
// parameter-problem (IPv4 type 12: low 8 bits; ICMPv6 type 4: 32 bits); it
// is ignored for other types.
//
// src is the error's source address (the router's address on the side p
// came from, an IPv4 address in the first 4 bytes); all zero means p's
// destination address. TTL / hop limit is ReplyTTL; IPv4 errors carry TOS
// (p's TOS & 0x1e) | 0xc0 (precedence internetwork control, as Linux sends
// them), and DF with ID 0 (an atomic datagram, RFC 6864; Linux sends them
// without DF and with a fresh ID, which needs per-destination state).
//
// No error is built (false) about: a packet whose IP header did not
// decode; a non-first fragment; an ICMP error (or an ICMP message whose
// type cannot be read or is above 18); an ICMPv6 error (type below 128) or
// an ICMPv6 message whose type cannot be read; a packet sent to a
// multicast or broadcast address (except an ICMPv6 packet-too-big, which
// RFC 4443 2.4(e.3) requires even for multicast destinations); a packet
// whose source is not a unicast address (unspecified, multicast,
// broadcast, loopback); or when the chosen source is not unicast. (Linux
// does send ICMPv6 errors about non-first fragments; the router reassembles
// before it would need to.)
func AppendICMPError(dst []byte, p *Parsed, typ, code uint8, mtu uint32, src [16]byte) ([]byte, bool) {
	if p.Family == 0 || p.Err.IsIPLevel() || p.Length == 0 || p.FragOff != 0 {
		return dst, false
	}
	v6 := p.Family == 6
	// Never an error about an error (RFC 1122 3.2.2, RFC 4443 2.4(e.1)).
	if v6 && p.Proto == ICMPv6 {
		if p.L4Off >= p.Length || IsICMPv6Error(p.b[p.L4Off]) {
			return dst, false
		}
	} else if !v6 && p.Proto == ICMP {
		if p.L4Off >= p.Length || IsICMPError(p.b[p.L4Off]) || p.b[p.L4Off] > ICMPAddrMaskReply {
			return dst, false
		}
	}
	if !unicast(p.Family, &p.Key.Src) {
		return dst, false
	}
	if !unicast(p.Family, &p.Key.Dst) && !(v6 && typ == ICMPv6PacketTooBig) {
		return dst, false
	}
	if src == ([16]byte{}) {
		src = p.Key.Dst
	}
	if p.Family == 4 {
		clear(src[4:])
	}
	if !unicast(p.Family, &src) {
		return dst, false
	}

	var rest uint32
	quote := p.Length
	proto := ICMP
	if v6 {
		proto = ICMPv6
		quote = min(quote, maxICMPError6-40-8)
		if typ == ICMPv6PacketTooBig || typ == ICMPv6ParamProblem {
			rest = mtu
		}
	} else {
		quote = min(quote, maxICMPError4-20-8)
		switch {
		case typ == ICMPDestUnreachable && code == ICMPFragNeeded:
			rest = mtu & 0xffff
		case typ == ICMPParamProblem:
			rest = (mtu & 0xff) << 24
		}
	}
	tos := uint8(0)
	if !v6 {
		tos = p.TOS&0x1e | 0xc0
	}
	out, m := appendIPHeader(dst, p.Family, proto, 8+quote, tos, true, &src, &p.Key.Src)
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint32(m[4:], rest)
	copy(m[8:], p.b[:quote])
	var ph uint32
	if v6 {
		ph = PseudoHeaderSum(6, &src, &p.Key.Src, ICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:], ^Checksum(m, ph))
	return out, true
}

// AppendEchoReply appends the reply to the ICMP echo request (type 8) or
// ICMPv6 echo request (type 128) p: addresses swapped, the same code,
// identifier, sequence number and data, TTL / hop limit ReplyTTL, p's TOS /
// traffic class. An IPv4 reply reuses the request's IP identification with
// DF clear (the request's sender keeps those unique per its flow; the reply
// may need fragmenting). False when p is not a complete, checksum-valid,
// unfragmented echo request between unicast addresses.
func AppendEchoReply(dst []byte, p *Parsed) ([]byte, bool) {
	if p.Err != ErrNone || p.Fragment {
		return dst, false
	}
	var typ uint8
	switch {
	case p.Family == 4 && p.Proto == ICMP && p.ICMPType == ICMPEchoRequest:
		typ = ICMPEchoReply
	case p.Family == 6 && p.Proto == ICMPv6 && p.ICMPType == ICMPv6EchoRequest:
		typ = ICMPv6EchoReply
	default:
		return dst, false
	}
	if !replyAddrsOK(p) || !p.L4ChecksumValid() {
		return dst, false
	}
	msg := p.b[p.L4Off:p.Length]
	tos := p.TOS
	out, m := appendIPHeader(dst, p.Family, p.Proto, len(msg), tos, false, &p.Key.Dst, &p.Key.Src)
	if p.Family == 4 {
		h := out[len(out)-len(msg)-20:]
		binary.BigEndian.PutUint16(h[4:], uint16(p.IPID))
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:], ^Checksum(h[:20], 0))
	}
	copy(m, msg)
	m[0] = typ // the code is kept, as Linux does: the reply then matches the request's inverted tuple
	m[2], m[3] = 0, 0
	var ph uint32
	if p.Family == 6 {
		ph = PseudoHeaderSum(6, &p.Key.Dst, &p.Key.Src, ICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:], ^Checksum(m, ph))
	return out, true
}

// DecTTL decrements the TTL (IPv4, updating the header checksum
// incrementally, RFC 1624) or the hop limit (IPv6) of the packet in b, as a
// router does before forwarding. It returns false and leaves b unchanged
// when the TTL is 1 or 0 (the packet must not be forwarded: the caller sends
// time-exceeded), or when b is too short or not IPv4/IPv6.
func DecTTL(b []byte) bool {
	if len(b) < 1 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 || b[8] <= 1 {
			return false
		}
		old := binary.BigEndian.Uint16(b[8:10])
		b[8]--
		c := ChecksumUpdate16(binary.BigEndian.Uint16(b[10:12]), old, old-0x100)
		binary.BigEndian.PutUint16(b[10:12], c)
		return true
	case 6:
		if len(b) < 40 || b[7] <= 1 {
			return false
		}
		b[7]--
		return true
	}
	return false
}

// replyAddrsOK reports whether a reply to p may be sent: p's destination
// (the reply's source) and p's source (the reply's destination) are
// unicast. The kernel's reject code refuses broadcast and multicast the
// same way.
func replyAddrsOK(p *Parsed) bool {
	return unicast(p.Family, &p.Key.Src) && unicast(p.Family, &p.Key.Dst)
}

// unicast reports whether a is an address a packet may be sent to or from
// as a single host: not unspecified ("this network" 0/8 for IPv4), not
// loopback, not multicast, not the IPv4 limited broadcast, not an
// IPv4-mapped IPv6 address.
func unicast(family uint8, a *[16]byte) bool {
	if family == 4 {
		switch {
		case a[0] == 0, a[0] == 127, a[0]&0xf0 == 0xe0:
			return false
		case a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255:
			return false
		}
		return true
	}
	if a[0] == 0xff {
		return false
	}
	var z [10]byte
	if [10]byte(a[:10]) == z {
		last := [4]byte(a[12:])
		switch {
		case a[10] == 0 && a[11] == 0 && (last == [4]byte{} || last == [4]byte{0, 0, 0, 1}):
			return false // :: and ::1
		case a[10] == 0xff && a[11] == 0xff:
			return false // IPv4-mapped: never on the wire
		}
	}
	return true
}

// appendIPHeader grows dst by an IP header plus l4len bytes, fills the IP
// header (IPv4: TOS tos, ID 0, DF as given, TTL ReplyTTL, header checksum;
// IPv6: traffic class tos, flow label 0, hop limit ReplyTTL) and zeroes the
// rest. It returns the grown slice and its last l4len bytes, for the
// caller to fill.
func appendIPHeader(dst []byte, family uint8, proto Proto, l4len int, tos uint8, df bool, src, to *[16]byte) ([]byte, []byte) {
	hl := 20
	if family == 6 {
		hl = 40
	}
	n := len(dst)
	need := hl + l4len
	if cap(dst)-n < need {
		nb := make([]byte, n, n+need)
		copy(nb, dst)
		dst = nb
	}
	dst = dst[:n+need]
	h := dst[n:]
	clear(h)
	if family == 4 {
		h[0] = 0x45
		h[1] = tos
		binary.BigEndian.PutUint16(h[2:], uint16(need))
		if df {
			h[6] = 0x40
		}
		h[8] = ReplyTTL
		h[9] = byte(proto)
		copy(h[12:16], src[:4])
		copy(h[16:20], to[:4])
		binary.BigEndian.PutUint16(h[10:], ^Checksum(h[:20], 0))
	} else {
		binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(tos)<<20)
		binary.BigEndian.PutUint16(h[4:], uint16(l4len))
		h[6] = byte(proto)
		h[7] = ReplyTTL
		copy(h[8:24], src[:])
		copy(h[24:40], to[:])
	}
	return dst, h[hl:]
}

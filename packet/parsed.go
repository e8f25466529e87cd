package packet

import (
	"encoding/binary"
	"net/netip"
)

// DecodeError says why a packet could not be decoded. The zero value means
// the packet decoded. The texts are stable: they appear in logs, traces,
// metrics labels and configuration (as INVALID reasons).
type DecodeError uint8

// Decode errors. IP-level errors (the first group) mean the packet cannot be
// routed at all; the others concern the transport header.
const (
	ErrNone DecodeError = iota
	ErrIPTruncated
	ErrIPVersion
	ErrIPHeaderLen
	ErrIPTotalLen
	ErrIPChecksum
	ErrIPv6Truncated
	ErrIPv6PayloadLen
	ErrIPv6ExtChain
	ErrIPFragment // bad fragment (offset + length over 65535, ...)
	ErrTCPTruncated
	ErrTCPDataOff
	ErrUDPTruncated
	ErrUDPLength
	ErrICMPTruncated
	ErrICMPv6Truncated
	ErrL4Truncated // other protocols whose tuple needs bytes that are missing
	NumDecodeErrors
)

var decodeErrorText = [NumDecodeErrors]string{
	ErrNone:            "",
	ErrIPTruncated:     "ip: truncated header",
	ErrIPVersion:       "ip: unknown version",
	ErrIPHeaderLen:     "ip: bad header length",
	ErrIPTotalLen:      "ip: bad total length",
	ErrIPChecksum:      "ip: bad header checksum",
	ErrIPv6Truncated:   "ipv6: truncated header",
	ErrIPv6PayloadLen:  "ipv6: bad payload length",
	ErrIPv6ExtChain:    "ipv6: bad extension header chain",
	ErrIPFragment:      "ip: bad fragment",
	ErrTCPTruncated:    "tcp: truncated header",
	ErrTCPDataOff:      "tcp: bad data offset",
	ErrUDPTruncated:    "udp: truncated header",
	ErrUDPLength:       "udp: bad length",
	ErrICMPTruncated:   "icmp: truncated header",
	ErrICMPv6Truncated: "icmpv6: truncated header",
	ErrL4Truncated:     "l4: truncated header",
}

func (e DecodeError) String() string {
	if e < NumDecodeErrors {
		return decodeErrorText[e]
	}
	return "decode error"
}

// Error makes DecodeError usable as an error value in tests and tools.
func (e DecodeError) Error() string { return e.String() }

// IsIPLevel reports whether the error concerns the IP header: such a packet
// is dropped before tracking whatever the rules say (the kernel's ip_rcv
// and ipv6_rcv drop it too).
func (e DecodeError) IsIPLevel() bool { return e >= ErrIPTruncated && e <= ErrIPFragment }

// TCPOptions are the TCP options conntrack and the helpers look at.
type TCPOptions struct {
	MSS       uint16
	WScale    uint8 // valid when HasWScale
	HasWScale bool
	HasMSS    bool
	SACKPerm  bool
	HasTS     bool
	TSVal     uint32
	TSEcr     uint32
	NumSACK   uint8        // SACK blocks present (at most 4)
	SACK      [4][2]uint32 // left, right edges
}

// Parsed is a decoded IP packet. Decode fills every field; a Parsed can be
// reused for the next packet without clearing.
//
// Offsets are from the start of the IP header. Fields that do not apply to
// the packet's protocol are zero.
type Parsed struct {
	b []byte

	// Err is ErrNone when the packet decoded completely. Otherwise the
	// fields decoded before the failure are valid (Family, addresses, and
	// Proto for transport errors).
	Err DecodeError

	Family uint8 // 4 or 6; 0 when not even the version could be read
	Proto  Proto // transport protocol (after IPv6 extension headers)

	// Key is the packet's tuple (see FlowKey). It is valid when Err is
	// ErrNone and the packet is not a non-first fragment.
	Key FlowKey

	Length     int // total length from the IP header (<= len of the buffer)
	L4Off      int // offset of the transport header
	PayloadOff int // offset of the transport payload (== Length when none)

	TTL       uint8 // TTL or hop limit
	TOS       uint8 // IPv4 TOS / IPv6 traffic class
	FlowLabel uint32
	IPID      uint32 // IPv4 identification; IPv6 fragment identification

	// Fragmentation. Fragment is true when the packet is a fragment
	// (IPv4: MF set or offset non-zero; IPv6: a fragment header with MF or
	// a non-zero offset). FragOff is in bytes. FragHdrOff is the offset of
	// the IPv6 fragment header (0 for IPv4), and FragNextOff the offset of
	// the byte holding the next-header value that points at it.
	Fragment    bool
	MoreFrags   bool
	DontFrag    bool
	FragOff     uint16
	FragHdrOff  int
	FragNextOff int

	// TCP and UDP ports, TCP header.
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	TCPFlags         TCPFlags
	Window           uint16
	TCPOpts          TCPOptions
	UDPLength        uint16

	// ICMP / ICMPv6.
	ICMPType, ICMPCode uint8
	ICMPID             uint16 // identifier of query types (echo, ...)

	// The quoted packet of an ICMP/ICMPv6 error (and of an ICMPv6
	// redirect's redirected-header option). InnerOff is the offset of the
	// quoted IP header (0 when the packet is not an error). Inner is the
	// quoted packet's tuple, as the packet had it when it was sent; InnerErr
	// says why it could not be extracted.
	InnerOff int
	Inner    FlowKey
	InnerErr DecodeError
}

// Buf returns the packet bytes (the first Length bytes of the buffer given
// to Decode).
func (p *Parsed) Buf() []byte { return p.b }

// Payload returns the transport payload. For a UDP datagram whose UDP
// length is shorter than the IP payload, the bytes past the UDP length are
// padding and not part of it.
func (p *Parsed) Payload() []byte {
	end := p.payloadEnd()
	if p.PayloadOff >= end {
		return nil
	}
	return p.b[p.PayloadOff:end]
}

// PayloadLen returns the length of the transport payload.
func (p *Parsed) PayloadLen() int {
	end := p.payloadEnd()
	if p.PayloadOff >= end {
		return 0
	}
	return end - p.PayloadOff
}

func (p *Parsed) payloadEnd() int {
	end := len(p.b)
	if p.Proto == UDP && p.Err == ErrNone && !p.Fragment {
		if e := p.L4Off + int(p.UDPLength); e < end {
			end = e
		}
	}
	return end
}

// IsICMPError reports whether the packet is an ICMP or ICMPv6 error (or a
// well-formed ICMPv6 redirect) that quotes another packet.
func (p *Parsed) IsICMPError() bool { return p.InnerOff != 0 }

// SrcAddr returns the source address.
func (p *Parsed) SrcAddr() netip.Addr { return p.Key.SrcAddr() }

// DstAddr returns the destination address.
func (p *Parsed) DstAddr() netip.Addr { return p.Key.DstAddr() }

// Decode decodes the IP packet in b. It never allocates and never panics;
// malformed input sets p.Err. b must hold exactly one IP packet (trailing
// bytes beyond the IP total length are ignored).
func (p *Parsed) Decode(b []byte) {
	*p = Parsed{b: b}
	if len(b) < 1 {
		p.Err = ErrIPTruncated
		return
	}
	switch b[0] >> 4 {
	case 4:
		p.decode4(b)
	case 6:
		p.decode6(b)
	default:
		p.Err = ErrIPVersion
	}
}

func (p *Parsed) decode4(b []byte) {
	p.Family = 4
	p.Key.Family = 4
	if len(b) < 20 {
		p.Err = ErrIPTruncated
		return
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		p.Err = ErrIPHeaderLen
		return
	}
	if len(b) < ihl {
		p.Err = ErrIPTruncated
		return
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl || total > len(b) {
		p.Err = ErrIPTotalLen
		return
	}
	if Checksum(b[:ihl], 0) != 0xffff {
		p.Err = ErrIPChecksum
		return
	}
	b = b[:total]
	p.b = b
	p.Length = total
	p.TOS = b[1]
	p.IPID = uint32(binary.BigEndian.Uint16(b[4:6]))
	fo := binary.BigEndian.Uint16(b[6:8])
	p.DontFrag = fo&0x4000 != 0
	p.MoreFrags = fo&0x2000 != 0
	p.FragOff = (fo & 0x1fff) * 8
	p.Fragment = p.MoreFrags || p.FragOff != 0
	if p.Fragment && int(p.FragOff)+total-ihl > 65535 {
		p.Err = ErrIPFragment
		return
	}
	p.TTL = b[8]
	p.Proto = Proto(b[9])
	p.Key.Proto = p.Proto
	copy(p.Key.Src[:4], b[12:16])
	copy(p.Key.Dst[:4], b[16:20])
	p.L4Off = ihl
	p.PayloadOff = total
	if p.FragOff != 0 {
		// A non-first fragment carries no transport header.
		return
	}
	p.decodeL4(b, ihl)
}

func (p *Parsed) decode6(b []byte) {
	p.Family = 6
	p.Key.Family = 6
	if len(b) < 40 {
		p.Err = ErrIPv6Truncated
		return
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if 40+plen > len(b) {
		p.Err = ErrIPv6PayloadLen
		return
	}
	total := 40 + plen
	b = b[:total]
	p.b = b
	p.Length = total
	w := binary.BigEndian.Uint32(b[0:4])
	p.TOS = uint8(w >> 20)
	p.FlowLabel = w & 0xfffff
	p.TTL = b[7]
	copy(p.Key.Src[:], b[8:24])
	copy(p.Key.Dst[:], b[24:40])
	p.PayloadOff = total

	next := Proto(b[6])
	nextOff := 6
	off := 40
	for n := 0; ; n++ {
		switch next {
		case HopByHop, IPv6Route, IPv6Opts:
			if next == HopByHop && off != 40 {
				// Hop-by-hop options must come first.
				p.Err = ErrIPv6ExtChain
				return
			}
			if off+8 > total {
				p.Err = ErrIPv6ExtChain
				return
			}
			hl := (int(b[off+1]) + 1) * 8
			if off+hl > total {
				p.Err = ErrIPv6ExtChain
				return
			}
			nextOff = off
			next = Proto(b[off])
			off += hl
			continue
		case AH:
			if off+8 > total {
				p.Err = ErrIPv6ExtChain
				return
			}
			hl := (int(b[off+1]) + 2) * 4
			if off+hl > total {
				p.Err = ErrIPv6ExtChain
				return
			}
			nextOff = off
			next = Proto(b[off])
			off += hl
			continue
		case IPv6Frag:
			if off+8 > total {
				p.Err = ErrIPv6ExtChain
				return
			}
			if p.FragHdrOff != 0 {
				// Two fragment headers: nothing sane can be built from it.
				p.Err = ErrIPv6ExtChain
				return
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			p.FragHdrOff = off
			p.FragNextOff = nextOff
			p.FragOff = fo &^ 7
			p.MoreFrags = fo&1 != 0
			p.Fragment = p.MoreFrags || p.FragOff != 0
			p.IPID = binary.BigEndian.Uint32(b[off+4 : off+8])
			if p.Fragment && int(p.FragOff)+total-off-8 > 65535 {
				p.Err = ErrIPFragment
				return
			}
			nextOff = off
			next = Proto(b[off])
			off += 8
			if p.FragOff != 0 {
				p.Proto = next
				p.Key.Proto = next
				p.L4Off = off
				return
			}
			continue
		}
		break
	}
	p.Proto = next
	p.Key.Proto = next
	p.L4Off = off
	if next == IPv6NoNext {
		return
	}
	p.decodeL4(b, off)
}

// decodeL4 decodes the transport header at off. For a first fragment it
// needs the tuple bytes only (the rest of the segment is in later
// fragments): a header cut short by fragmentation is not an error there,
// the fields present are decoded and PayloadOff stays at the end.
func (p *Parsed) decodeL4(b []byte, off int) {
	rest := b[off:]
	switch p.Proto {
	case TCP:
		if len(rest) < 20 {
			if len(rest) >= 4 {
				p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
				p.DstPort = binary.BigEndian.Uint16(rest[2:4])
				p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
			}
			if len(rest) < 4 || !p.Fragment {
				p.Err = ErrTCPTruncated
			}
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
		p.DstPort = binary.BigEndian.Uint16(rest[2:4])
		p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
		p.Seq = binary.BigEndian.Uint32(rest[4:8])
		p.Ack = binary.BigEndian.Uint32(rest[8:12])
		doff := int(rest[12]>>4) * 4
		p.TCPFlags = TCPFlags(rest[13])
		p.Window = binary.BigEndian.Uint16(rest[14:16])
		if doff < 20 {
			p.Err = ErrTCPDataOff
			return
		}
		if doff > len(rest) {
			if !p.Fragment {
				p.Err = ErrTCPTruncated
			}
			return
		}
		p.PayloadOff = off + doff
		if doff > 20 {
			parseTCPOptions(&p.TCPOpts, rest[20:doff])
		}
	case UDP, UDPLite:
		if len(rest) < 8 {
			if p.Fragment && len(rest) >= 4 {
				p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
				p.DstPort = binary.BigEndian.Uint16(rest[2:4])
				p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
				return
			}
			p.Err = ErrUDPTruncated
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
		p.DstPort = binary.BigEndian.Uint16(rest[2:4])
		p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
		p.UDPLength = binary.BigEndian.Uint16(rest[4:6])
		p.PayloadOff = off + 8
		if p.Proto == UDP && !p.Fragment {
			ul := int(p.UDPLength)
			if ul < 8 || ul > len(rest) {
				p.Err = ErrUDPLength
				return
			}
		}
	case SCTP:
		if len(rest) < 12 {
			if p.Fragment && len(rest) >= 4 {
				p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
				p.DstPort = binary.BigEndian.Uint16(rest[2:4])
				p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
				return
			}
			p.Err = ErrL4Truncated
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(rest[0:2])
		p.DstPort = binary.BigEndian.Uint16(rest[2:4])
		p.Key.SrcPort, p.Key.DstPort = p.SrcPort, p.DstPort
		p.PayloadOff = off + 12
	case ICMP:
		p.decodeICMP(b, off, false)
	case ICMPv6:
		p.decodeICMP(b, off, true)
	default:
		p.PayloadOff = off
	}
}

func (p *Parsed) decodeICMP(b []byte, off int, v6 bool) {
	rest := b[off:]
	if len(rest) < 8 {
		if v6 {
			p.Err = ErrICMPv6Truncated
		} else {
			p.Err = ErrICMPTruncated
		}
		if len(rest) >= 2 {
			p.ICMPType, p.ICMPCode = rest[0], rest[1]
		}
		return
	}
	p.ICMPType, p.ICMPCode = rest[0], rest[1]
	p.PayloadOff = off + 8
	// Errors quote a packet only when the ICMP version matches the IP
	// version (the kernel runs its ICMP error path only for ICMP over IPv4
	// and ICMPv6 over IPv6). Every other message carries an identifier in
	// bytes 4-5, which is what the kernel's tuple takes for all of them.
	var isErr bool
	if v6 {
		isErr = p.Family == 6 && IsICMPv6Error(p.ICMPType)
	} else {
		isErr = p.Family == 4 && IsICMPError(p.ICMPType)
	}
	if !isErr {
		p.ICMPID = binary.BigEndian.Uint16(rest[4:6])
		p.Key.SrcPort = p.ICMPID
	}
	p.Key.DstPort = uint16(p.ICMPType)<<8 | uint16(p.ICMPCode)
	if isErr {
		p.decodeInner(b, off+8, v6)
	} else if v6 && p.Family == 6 && p.ICMPType == ICMPv6Redirect && p.ICMPCode == 0 {
		p.decodeRedirect6(b, off)
	}
}

// decodeRedirect6 finds the redirected-header option of an ICMPv6 redirect
// (RFC 4861 4.5: target and destination addresses, then options; the
// redirected-header option is type 4 with 6 reserved bytes before the
// quoted packet). The kernel looks only at the first option.
func (p *Parsed) decodeRedirect6(b []byte, off int) {
	o := off + 8 + 32
	if o+8 > len(b) {
		return
	}
	if b[o] != 4 || b[o+1] == 0 {
		return
	}
	p.decodeInner(b, o+8, true)
}

// decodeInner extracts the tuple of the packet quoted in an ICMP error: the
// IP header and the first 8 bytes of its transport header, which is all an
// error is required to quote. Lengths in the quoted header are not checked
// against what is present (errors quote a truncated packet).
func (p *Parsed) decodeInner(b []byte, off int, v6 bool) {
	p.InnerOff = off
	q := b[off:]
	k := &p.Inner
	var l4 int
	if !v6 {
		if len(q) < 20 || q[0]>>4 != 4 {
			p.InnerErr = ErrIPTruncated
			if len(q) >= 1 && q[0]>>4 != 4 {
				p.InnerErr = ErrIPVersion
			}
			return
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < 20 || ihl > len(q) {
			p.InnerErr = ErrIPHeaderLen
			return
		}
		k.Family = 4
		k.Proto = Proto(q[9])
		copy(k.Src[:4], q[12:16])
		copy(k.Dst[:4], q[16:20])
		if binary.BigEndian.Uint16(q[6:8])&0x1fff != 0 {
			// The quoted packet is a non-first fragment: no ports to read.
			p.InnerErr = ErrIPFragment
			return
		}
		l4 = ihl
	} else {
		if len(q) < 40 || q[0]>>4 != 6 {
			p.InnerErr = ErrIPv6Truncated
			if len(q) >= 1 && q[0]>>4 != 6 {
				p.InnerErr = ErrIPVersion
			}
			return
		}
		k.Family = 6
		copy(k.Src[:], q[8:24])
		copy(k.Dst[:], q[24:40])
		next := Proto(q[6])
		o := 40
		for {
			switch next {
			case HopByHop, IPv6Route, IPv6Opts, AH, IPv6Frag:
				if o+8 > len(q) {
					p.InnerErr = ErrIPv6ExtChain
					return
				}
				var hl int
				switch next {
				case AH:
					hl = (int(q[o+1]) + 2) * 4
				case IPv6Frag:
					if binary.BigEndian.Uint16(q[o+2:o+4])&^7 != 0 {
						p.InnerErr = ErrIPFragment
						return
					}
					hl = 8
				default:
					hl = (int(q[o+1]) + 1) * 8
				}
				next = Proto(q[o])
				o += hl
				continue
			case IPv6NoNext:
				p.InnerErr = ErrIPv6ExtChain
				return
			}
			break
		}
		k.Proto = next
		l4 = o
	}
	r := q[min(l4, len(q)):]
	switch k.Proto {
	case TCP, UDP, UDPLite, SCTP:
		if len(r) < 4 {
			p.InnerErr = ErrL4Truncated
			return
		}
		k.SrcPort = binary.BigEndian.Uint16(r[0:2])
		k.DstPort = binary.BigEndian.Uint16(r[2:4])
	case ICMP, ICMPv6:
		if len(r) < 8 {
			p.InnerErr = ErrL4Truncated
			return
		}
		k.DstPort = uint16(r[0])<<8 | uint16(r[1])
		t := r[0]
		isErr := (k.Proto == ICMP && k.Family == 4 && IsICMPError(t)) ||
			(k.Proto == ICMPv6 && k.Family == 6 && IsICMPv6Error(t))
		if !isErr {
			k.SrcPort = binary.BigEndian.Uint16(r[4:6])
		}
	}
}

func parseTCPOptions(o *TCPOptions, b []byte) {
	for len(b) > 0 {
		kind := b[0]
		switch kind {
		case 0: // end of options
			return
		case 1: // no-op
			b = b[1:]
			continue
		}
		if len(b) < 2 {
			return
		}
		l := int(b[1])
		if l < 2 || l > len(b) {
			return
		}
		switch kind {
		case 2:
			if l == 4 {
				o.MSS = binary.BigEndian.Uint16(b[2:4])
				o.HasMSS = true
			}
		case 3:
			if l == 3 {
				o.WScale = b[2]
				o.HasWScale = true
			}
		case 4:
			if l == 2 {
				o.SACKPerm = true
			}
		case 5:
			n := (l - 2) / 8
			if (l-2)%8 == 0 {
				for i := 0; i < n && int(o.NumSACK) < len(o.SACK); i++ {
					o.SACK[o.NumSACK][0] = binary.BigEndian.Uint32(b[2+8*i:])
					o.SACK[o.NumSACK][1] = binary.BigEndian.Uint32(b[6+8*i:])
					o.NumSACK++
				}
			}
		case 8:
			if l == 10 {
				o.HasTS = true
				o.TSVal = binary.BigEndian.Uint32(b[2:6])
				o.TSEcr = binary.BigEndian.Uint32(b[6:10])
			}
		}
		b = b[l:]
	}
}

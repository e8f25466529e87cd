package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"strconv"
)

// FlowKey is the tuple that identifies one direction of a connection, in
// the form Linux's nf_conntrack_tuple has it:
//
//   - TCP, UDP, UDP-Lite, SCTP: addresses and ports;
//   - ICMP and ICMPv6: addresses, SrcPort = the query identifier, DstPort =
//     type<<8 | code (so an echo request and its reply differ in DstPort);
//   - any other protocol: addresses only (ports zero).
//
// It is packed and comparable, with no pointers, strings or net.IP, so it is
// cheap to copy, compare and hash (Tailscale's flowtrack.Tuple measured an
// AddrPort-based key at about twice the cost as a map key). An IPv4 address
// occupies the first 4 bytes of its array; the other 12 are zero. Family
// keeps IPv4 and IPv4-mapped IPv6 apart.
type FlowKey struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            Proto
	Family           uint8 // 4 or 6; 0 for the zero key
}

// Reverse returns the key with source and destination swapped. For ICMP keys
// it keeps the identifier and type/code as they are; use Invert to get the
// key of the reply.
func (k FlowKey) Reverse() FlowKey {
	if k.Proto.IsICMP() {
		k.Src, k.Dst = k.Dst, k.Src
		return k
	}
	k.Src, k.Dst = k.Dst, k.Src
	k.SrcPort, k.DstPort = k.DstPort, k.SrcPort
	return k
}

// Invert returns the key a reply to a packet with key k carries, as the
// kernel's nf_ct_invert_tuple computes it: addresses and ports swapped; for
// ICMP/ICMPv6 the type replaced by its counterpart (echo request <-> echo
// reply, ...). ok is false for ICMP types that have no counterpart (errors,
// router advertisements, ...): such packets cannot belong to a connection.
func (k FlowKey) Invert() (inv FlowKey, ok bool) {
	if !k.Proto.IsICMP() {
		return k.Reverse(), true
	}
	t := uint8(k.DstPort >> 8)
	var r uint8
	if k.Proto == ICMP {
		r = icmp4Inverse[t]
	} else {
		r = icmp6Inverse[t]
	}
	if r == 0 {
		return FlowKey{}, false
	}
	inv = k
	inv.Src, inv.Dst = k.Dst, k.Src
	inv.DstPort = uint16(r-1)<<8 | k.DstPort&0xff
	return inv, true
}

// icmp4Inverse and icmp6Inverse map a query type to its counterpart plus
// one (zero: not invertible).
var icmp4Inverse = [256]uint8{
	ICMPEchoRequest: ICMPEchoReply + 1, ICMPEchoReply: ICMPEchoRequest + 1,
	ICMPTimestamp: ICMPTimestampReply + 1, ICMPTimestampReply: ICMPTimestamp + 1,
	ICMPInfoRequest: ICMPInfoReply + 1, ICMPInfoReply: ICMPInfoRequest + 1,
	ICMPAddrMaskRequest: ICMPAddrMaskReply + 1, ICMPAddrMaskReply: ICMPAddrMaskRequest + 1,
}

var icmp6Inverse = [256]uint8{
	ICMPv6EchoRequest: ICMPv6EchoReply + 1, ICMPv6EchoReply: ICMPv6EchoRequest + 1,
	ICMPv6NodeInfoQuery: ICMPv6NodeInfoResponse + 1, ICMPv6NodeInfoResponse: ICMPv6NodeInfoQuery + 1,
}

// ICMPType returns the ICMP type of an ICMP/ICMPv6 key.
func (k FlowKey) ICMPType() uint8 { return uint8(k.DstPort >> 8) }

// ICMPCode returns the ICMP code of an ICMP/ICMPv6 key.
func (k FlowKey) ICMPCode() uint8 { return uint8(k.DstPort) }

// ICMPID returns the identifier of an ICMP/ICMPv6 key.
func (k FlowKey) ICMPID() uint16 { return k.SrcPort }

// SrcAddr returns the source address.
func (k FlowKey) SrcAddr() netip.Addr { return addrOf(k.Family, &k.Src) }

// DstAddr returns the destination address.
func (k FlowKey) DstAddr() netip.Addr { return addrOf(k.Family, &k.Dst) }

func addrOf(fam uint8, a *[16]byte) netip.Addr {
	switch fam {
	case 4:
		return netip.AddrFrom4([4]byte(a[:4]))
	case 6:
		return netip.AddrFrom16(*a)
	}
	return netip.Addr{}
}

// KeyFromAddrs builds a key from netip values (for tests, the control plane
// and configuration; the packet path fills keys in Decode).
func KeyFromAddrs(proto Proto, src netip.AddrPort, dst netip.AddrPort) FlowKey {
	k := FlowKey{Proto: proto, SrcPort: src.Port(), DstPort: dst.Port()}
	if src.Addr().Is4() {
		k.Family = 4
		a, b := src.Addr().As4(), dst.Addr().As4()
		copy(k.Src[:], a[:])
		copy(k.Dst[:], b[:])
	} else {
		k.Family = 6
		k.Src = src.Addr().As16()
		k.Dst = dst.Addr().As16()
	}
	return k
}

// SymHash returns a hash of k that is the same for both directions of a
// connection: SymHash(k) == SymHash(k') whenever k' is k.Invert() (for
// ICMP only the identifier is hashed, not the type, so a request and its
// reply agree). seed keys the hash so that remote hosts cannot aim flows at
// one worker or bucket.
func (k *FlowKey) SymHash(seed uint64) uint64 {
	sp, dp := uint64(k.SrcPort), uint64(k.DstPort)
	if k.Proto.IsICMP() {
		dp = sp
	}
	s0 := binary.LittleEndian.Uint64(k.Src[0:8])
	s1 := binary.LittleEndian.Uint64(k.Src[8:16])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:8])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:16])
	x := mix(s0^seed, s1^sp)
	y := mix(d0^seed, d1^dp)
	// x^y and x+y are both symmetric in (x, y); mixing them together keeps
	// the result symmetric while not cancelling equal halves.
	return mix(x^y^uint64(k.Proto)<<56^uint64(k.Family)<<48, x+y+seed)
}

// Hash returns a directional hash of k (different for the two directions),
// for tables keyed by one direction's tuple.
func (k *FlowKey) Hash(seed uint64) uint64 {
	s0 := binary.LittleEndian.Uint64(k.Src[0:8])
	s1 := binary.LittleEndian.Uint64(k.Src[8:16])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:8])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:16])
	h := mix(s0^seed, s1^uint64(k.SrcPort)<<16^uint64(k.DstPort))
	h = mix(h^d0, d1^uint64(k.Proto)<<8^uint64(k.Family))
	return h
}

// mix is a 128-bit multiply folded to 64 bits (the wyhash mixer).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// String formats the key as conntrack -L prints a tuple, after the
// protocol name: "tcp src=10.0.0.1 dst=10.0.0.2 sport=1234 dport=80".
func (k FlowKey) String() string {
	b := make([]byte, 0, 96)
	b = append(b, k.Proto.String()...)
	b = append(b, ' ')
	return string(k.AppendTuple(b))
}

// AppendTuple appends the tuple as conntrack -L prints it:
// "src=10.0.0.1 dst=10.0.0.2 sport=1234 dport=80", with
// "type=8 code=0 id=7" for ICMP and the addresses only for other protocols.
func (k *FlowKey) AppendTuple(b []byte) []byte {
	b = append(b, "src="...)
	b = k.SrcAddr().AppendTo(b)
	b = append(b, " dst="...)
	b = k.DstAddr().AppendTo(b)
	switch {
	case k.Proto.IsICMP():
		b = append(b, " type="...)
		b = strconv.AppendUint(b, uint64(k.ICMPType()), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(k.ICMPCode()), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(k.ICMPID()), 10)
	case k.HasPorts():
		b = append(b, " sport="...)
		b = strconv.AppendUint(b, uint64(k.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(k.DstPort), 10)
	}
	return b
}

// HasPorts reports whether the key's protocol carries ports.
func (k FlowKey) HasPorts() bool { return k.Proto.HasPorts() }

// HasPorts reports whether the protocol's tuple carries ports.
func (p Proto) HasPorts() bool {
	return p == TCP || p == UDP || p == UDPLite || p == SCTP
}

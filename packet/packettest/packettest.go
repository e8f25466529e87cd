// Package packettest builds exact packet bytes for tests: TCP, UDP, ICMP
// and ICMPv6 over IPv4 and IPv6 (with IPv4 options and IPv6 extension
// headers), ICMP errors quoting another packet, fragments, and corrupted
// variants. Every builder computes correct lengths and checksums unless a
// corruption helper is applied afterwards.
//
// Addresses are strings: "10.0.0.1:80", "[fd00::1]:80", or without a port
// ("10.0.0.1", "fd00::1") for protocols that have none. Like
// netip.MustParseAddr, the builders panic on malformed test input; they are
// for tests only and are never used on the packet path.
//
// Builders return a fresh slice each call, so tests may modify the result.
package packettest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tunrouter/router/packet"
)

// DefaultTTL is the TTL / hop limit builders use when the options leave it
// zero.
const DefaultTTL = 64

// NoWScale in TCPOpts.WScale means: no window-scale option.
const NoWScale = -1

// Ext is one IPv6 extension header. Data is the header body after its first
// two bytes (next header, length); it is padded with zeros to the header's
// unit (8 bytes, or 4 for AH). A zero-length Data gives the smallest valid
// header of that type (a hop-by-hop or destination-options header holding
// a 6-byte PadN, a routing header of type 0 with no segments left, a
// 16-byte AH with SPI 0x100, sequence number 1 and a zero 4-byte ICV).
//
// For Type == packet.IPv6Frag, Data is ignored and FragOff (bytes, a
// multiple of 8), More and ID fill the fragment header.
type Ext struct {
	Type    packet.Proto
	Data    []byte
	FragOff uint16
	More    bool
	ID      uint32
	// NextHeader, when non-zero, overrides the computed next-header value
	// (to build broken chains).
	NextHeader uint8
}

// Extension-header shorthands.
var (
	HopByHop = Ext{Type: packet.HopByHop}
	Routing  = Ext{Type: packet.IPv6Route}
	DestOpts = Ext{Type: packet.IPv6Opts}
	AuthHdr  = Ext{Type: packet.AH}
)

// FragExt returns a fragment extension header.
func FragExt(off uint16, more bool, id uint32) Ext {
	return Ext{Type: packet.IPv6Frag, FragOff: off, More: more, ID: id}
}

// IPOpts are the IP-level fields shared by all builders. Zero values give
// a plain header: TTL 64, TOS 0, ID 0, DF clear, no options or extension
// headers.
type IPOpts struct {
	TTL       uint8  // 0 means DefaultTTL
	TOS       uint8  // IPv4 TOS / IPv6 traffic class
	ID        uint16 // IPv4 identification
	DF        bool   // IPv4 don't-fragment
	FlowLabel uint32 // IPv6 flow label (20 bits)
	// IPOptions are raw IPv4 options, padded with end-of-options bytes to
	// a multiple of 4 (at most 40 bytes).
	IPOptions []byte
	// Ext are IPv6 extension headers placed between the IPv6 header and
	// the transport header, in order.
	Ext []Ext
}

// TCPOpts describe a TCP segment. TCP options are emitted in the order MSS,
// SACK-permitted, timestamps, window scale, SACK blocks, then Options,
// padded with end-of-options to a multiple of 4 bytes.
type TCPOpts struct {
	Flags    packet.TCPFlags
	Seq, Ack uint32
	Win      uint16
	Urg      uint16
	MSS      uint16 // 0: no MSS option
	// WScale is the window-scale shift. The option is put only on SYN
	// segments (as real stacks do); NoWScale omits it. Use Options to put
	// a window-scale option on other segments.
	WScale   int
	SACKPerm bool
	TS       bool // timestamps option with TSVal and TSEcr
	TSVal    uint32
	TSEcr    uint32
	SACK     [][2]uint32 // SACK blocks (left, right)
	Options  []byte      // raw option bytes appended after the above
	Payload  []byte

	TTL       uint8
	TOS       uint8
	ID        uint16
	DF        bool
	FlowLabel uint32
	IPOptions []byte
	Ext       []Ext
}

func (o *TCPOpts) ip() IPOpts {
	return IPOpts{TTL: o.TTL, TOS: o.TOS, ID: o.ID, DF: o.DF, FlowLabel: o.FlowLabel, IPOptions: o.IPOptions, Ext: o.Ext}
}

// UDPOpts describe a UDP datagram.
type UDPOpts struct {
	Payload []byte
	// NoChecksum leaves the UDP checksum zero ("no checksum", valid over
	// IPv4).
	NoChecksum bool

	TTL       uint8
	TOS       uint8
	ID        uint16
	DF        bool
	FlowLabel uint32
	IPOptions []byte
	Ext       []Ext
}

func (o *UDPOpts) ip() IPOpts {
	return IPOpts{TTL: o.TTL, TOS: o.TOS, ID: o.ID, DF: o.DF, FlowLabel: o.FlowLabel, IPOptions: o.IPOptions, Ext: o.Ext}
}

// ICMPOpts describe an ICMP or ICMPv6 message. Rest is the 32-bit word
// after the checksum (identifier and sequence for queries, the unused
// word, next-hop MTU or pointer for errors); when ID or Seq is non-zero
// they are used instead (Rest = ID<<16 | Seq). Data follows the 8-byte
// header (the echo payload, or the quoted packet of an error).
type ICMPOpts struct {
	Type, Code uint8
	ID, Seq    uint16
	Rest       uint32
	Data       []byte

	TTL       uint8
	TOS       uint8
	IPID      uint16
	DF        bool
	FlowLabel uint32
	IPOptions []byte
	Ext       []Ext
}

func (o *ICMPOpts) ip() IPOpts {
	return IPOpts{TTL: o.TTL, TOS: o.TOS, ID: o.IPID, DF: o.DF, FlowLabel: o.FlowLabel, IPOptions: o.IPOptions, Ext: o.Ext}
}

// Endpoint parses "addr:port", "[v6]:port", "addr" or "v6addr". It panics
// on malformed input.
func Endpoint(s string) (netip.Addr, uint16) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), ap.Port()
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		panic(fmt.Sprintf("packettest: bad address %q", s))
	}
	if a.Zone() != "" {
		panic(fmt.Sprintf("packettest: zoned address %q", s))
	}
	return a, 0
}

func endpoints(src, dst string) (sa netip.Addr, sp uint16, da netip.Addr, dp uint16) {
	sa, sp = Endpoint(src)
	da, dp = Endpoint(dst)
	if sa.Is4() != da.Is4() {
		panic(fmt.Sprintf("packettest: mixed address families %q -> %q", src, dst))
	}
	return
}

func mustFamily(a netip.Addr, want4 bool, fn string) {
	if a.Is4() != want4 {
		panic("packettest: " + fn + " called with the wrong address family")
	}
}

// Key returns the flow key for proto between two endpoints (ICMP keys are
// built with packet.KeyFromAddrs semantics: SrcPort = id, DstPort =
// type<<8|code, so pass them as ports).
func Key(proto packet.Proto, src, dst string) packet.FlowKey {
	sa, sp, da, dp := endpoints(src, dst)
	return packet.KeyFromAddrs(proto, netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp))
}

// ICMPKey returns the flow key of an ICMP/ICMPv6 query or reply.
func ICMPKey(src, dst string, typ, code uint8, id uint16) packet.FlowKey {
	sa, _, da, _ := endpoints(src, dst)
	proto := packet.ICMP
	if sa.Is6() {
		proto = packet.ICMPv6
	}
	return packet.KeyFromAddrs(proto, netip.AddrPortFrom(sa, id), netip.AddrPortFrom(da, uint16(typ)<<8|uint16(code)))
}

// MustDecode decodes b and panics if it does not decode cleanly.
func MustDecode(b []byte) *packet.Parsed {
	p := new(packet.Parsed)
	p.Decode(b)
	if p.Err != packet.ErrNone {
		panic(fmt.Sprintf("packettest: packet does not decode: %v", p.Err))
	}
	return p
}

// TCP builds a TCP segment over IPv4 or IPv6 (chosen by the addresses).
func TCP(src, dst string, o TCPOpts) []byte {
	sa, sp, da, dp := endpoints(src, dst)
	opts := tcpOptions(&o)
	h := make([]byte, 20, 20+len(opts)+len(o.Payload))
	binary.BigEndian.PutUint16(h[0:], sp)
	binary.BigEndian.PutUint16(h[2:], dp)
	binary.BigEndian.PutUint32(h[4:], o.Seq)
	binary.BigEndian.PutUint32(h[8:], o.Ack)
	h[12] = byte((20+len(opts))/4) << 4
	h[13] = byte(o.Flags)
	binary.BigEndian.PutUint16(h[14:], o.Win)
	binary.BigEndian.PutUint16(h[18:], o.Urg)
	h = append(h, opts...)
	h = append(h, o.Payload...)
	return buildIP(sa, da, packet.TCP, h, o.ip(), 16)
}

// TCP4 is TCP for IPv4 addresses (it panics on IPv6 ones).
func TCP4(src, dst string, o TCPOpts) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, true, "TCP4")
	return TCP(src, dst, o)
}

// TCP6 is TCP for IPv6 addresses (it panics on IPv4 ones).
func TCP6(src, dst string, o TCPOpts) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, false, "TCP6")
	return TCP(src, dst, o)
}

func tcpOptions(o *TCPOpts) []byte {
	var b []byte
	if o.MSS != 0 {
		b = append(b, 2, 4, byte(o.MSS>>8), byte(o.MSS))
	}
	if o.SACKPerm {
		b = append(b, 4, 2)
	}
	if o.TS {
		b = append(b, 8, 10)
		b = binary.BigEndian.AppendUint32(b, o.TSVal)
		b = binary.BigEndian.AppendUint32(b, o.TSEcr)
	}
	if o.WScale >= 0 && o.Flags&packet.SYN != 0 {
		b = append(b, 3, 3, byte(o.WScale))
	}
	if len(o.SACK) > 0 {
		b = append(b, 5, byte(2+8*len(o.SACK)))
		for _, s := range o.SACK {
			b = binary.BigEndian.AppendUint32(b, s[0])
			b = binary.BigEndian.AppendUint32(b, s[1])
		}
	}
	b = append(b, o.Options...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	if len(b) > 40 {
		panic(fmt.Sprintf("packettest: %d bytes of TCP options (max 40)", len(b)))
	}
	return b
}

// UDP builds a UDP datagram over IPv4 or IPv6.
func UDP(src, dst string, o UDPOpts) []byte {
	sa, sp, da, dp := endpoints(src, dst)
	h := make([]byte, 8, 8+len(o.Payload))
	binary.BigEndian.PutUint16(h[0:], sp)
	binary.BigEndian.PutUint16(h[2:], dp)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(o.Payload)))
	h = append(h, o.Payload...)
	at := 6
	if o.NoChecksum {
		at = -1
	}
	return buildIP(sa, da, packet.UDP, h, o.ip(), at)
}

// UDP4 builds a plain UDP/IPv4 datagram.
func UDP4(src, dst string, payload []byte) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, true, "UDP4")
	return UDP(src, dst, UDPOpts{Payload: payload})
}

// UDP6 builds a plain UDP/IPv6 datagram.
func UDP6(src, dst string, payload []byte) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, false, "UDP6")
	return UDP(src, dst, UDPOpts{Payload: payload})
}

// ICMP builds an ICMP message over IPv4 or an ICMPv6 message over IPv6.
func ICMP(src, dst string, o ICMPOpts) []byte {
	sa, _, da, _ := endpoints(src, dst)
	h := make([]byte, 8, 8+len(o.Data))
	h[0], h[1] = o.Type, o.Code
	rest := o.Rest
	if o.ID != 0 || o.Seq != 0 {
		rest = uint32(o.ID)<<16 | uint32(o.Seq)
	}
	binary.BigEndian.PutUint32(h[4:], rest)
	h = append(h, o.Data...)
	proto := packet.ICMP
	if sa.Is6() {
		proto = packet.ICMPv6
	}
	return buildIP(sa, da, proto, h, o.ip(), 2)
}

// ICMP4Echo builds an ICMP echo request (type 8) or reply (type 0), or any
// other query type, with an 8-byte payload.
func ICMP4Echo(src, dst string, typ uint8, id, seq uint16) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, true, "ICMP4Echo")
	return ICMP(src, dst, ICMPOpts{Type: typ, ID: id, Seq: seq, Data: []byte("pingdata")})
}

// ICMP6Echo builds an ICMPv6 echo request (128) or reply (129), or any
// other query type, with an 8-byte payload.
func ICMP6Echo(src, dst string, typ uint8, id, seq uint16) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, false, "ICMP6Echo")
	return ICMP(src, dst, ICMPOpts{Type: typ, ID: id, Seq: seq, Data: []byte("pingdata")})
}

// ICMP4Error builds an ICMP error of the given type and code from src to
// dst quoting the bytes quoted (usually a packet dst sent earlier, or a
// prefix of it). For fragmentation-needed use ICMP with Rest = MTU.
func ICMP4Error(src, dst string, typ, code uint8, quoted []byte) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, true, "ICMP4Error")
	return ICMP(src, dst, ICMPOpts{Type: typ, Code: code, Data: quoted})
}

// ICMP6Error builds an ICMPv6 error quoting quoted.
func ICMP6Error(src, dst string, typ, code uint8, quoted []byte) []byte {
	a, _ := Endpoint(src)
	mustFamily(a, false, "ICMP6Error")
	return ICMP(src, dst, ICMPOpts{Type: typ, Code: code, Data: quoted})
}

// ICMP6Redirect builds an ICMPv6 redirect (type 137, code 0, hop limit
// 255) telling dst to send traffic for dest via target, with a
// redirected-header option (type 4) quoting quoted (padded to 8 bytes).
// A nil quoted gives a redirect without options.
func ICMP6Redirect(src, dst, target, dest string, quoted []byte) []byte {
	ta, _ := Endpoint(target)
	de, _ := Endpoint(dest)
	mustFamily(ta, false, "ICMP6Redirect")
	body := make([]byte, 0, 32+8+len(quoted)+8)
	t16, d16 := ta.As16(), de.As16()
	body = append(body, t16[:]...)
	body = append(body, d16[:]...)
	if quoted != nil {
		n := (8 + len(quoted) + 7) / 8
		body = append(body, 4, byte(n), 0, 0, 0, 0, 0, 0)
		body = append(body, quoted...)
		for (len(body)-32)%8 != 0 {
			body = append(body, 0)
		}
	}
	return ICMP(src, dst, ICMPOpts{Type: packet.ICMPv6Redirect, Data: body, TTL: 255})
}

// Raw builds an IP packet carrying payload as protocol proto; no transport
// checksum is computed.
func Raw(src, dst string, proto packet.Proto, payload []byte, o IPOpts) []byte {
	sa, _, da, _ := endpoints(src, dst)
	return buildIP(sa, da, proto, append([]byte(nil), payload...), o, -1)
}

// buildIP wraps the transport segment l4 in an IP header. csumAt is the
// offset of the transport checksum field in l4 (-1: none). ICMP (v4) has
// no pseudo header.
func buildIP(src, dst netip.Addr, proto packet.Proto, l4 []byte, o IPOpts, csumAt int) []byte {
	ttl := o.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if csumAt >= 0 {
		l4[csumAt], l4[csumAt+1] = 0, 0
		var ph uint32
		if proto != packet.ICMP {
			s, d := src.AsSlice(), dst.AsSlice()
			ph = pseudoSum(s, d, proto, len(l4))
		}
		c := ^Sum16(l4, ph)
		if proto == packet.UDP && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumAt:], c)
	}
	if src.Is4() {
		opts := append([]byte(nil), o.IPOptions...)
		for len(opts)%4 != 0 {
			opts = append(opts, 0)
		}
		if len(opts) > 40 {
			panic("packettest: more than 40 bytes of IPv4 options")
		}
		ihl := 20 + len(opts)
		b := make([]byte, ihl, ihl+len(l4))
		b[0] = 0x40 | byte(ihl/4)
		b[1] = o.TOS
		binary.BigEndian.PutUint16(b[2:], uint16(ihl+len(l4)))
		binary.BigEndian.PutUint16(b[4:], o.ID)
		if o.DF {
			b[6] = 0x40
		}
		b[8] = ttl
		b[9] = byte(proto)
		a4, d4 := src.As4(), dst.As4()
		copy(b[12:], a4[:])
		copy(b[16:], d4[:])
		copy(b[20:], opts)
		setIPv4HeaderChecksum(b, ihl)
		return append(b, l4...)
	}
	ext := extBytes(o.Ext, proto)
	b := make([]byte, 40, 40+len(ext)+len(l4))
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(o.TOS)<<20|o.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(ext)+len(l4)))
	b[6] = byte(proto)
	if len(o.Ext) > 0 {
		b[6] = byte(o.Ext[0].Type)
	}
	b[7] = ttl
	s16, d16 := src.As16(), dst.As16()
	copy(b[8:], s16[:])
	copy(b[24:], d16[:])
	b = append(b, ext...)
	return append(b, l4...)
}

// extBytes encodes an extension-header chain ending in proto.
func extBytes(exts []Ext, proto packet.Proto) []byte {
	var b []byte
	for i, e := range exts {
		next := byte(proto)
		if i+1 < len(exts) {
			next = byte(exts[i+1].Type)
		}
		if e.NextHeader != 0 {
			next = e.NextHeader
		}
		switch e.Type {
		case packet.IPv6Frag:
			fo := e.FragOff &^ 7
			if e.More {
				fo |= 1
			}
			b = append(b, next, 0, byte(fo>>8), byte(fo))
			b = binary.BigEndian.AppendUint32(b, e.ID)
		case packet.AH:
			body := e.Data
			if len(body) == 0 {
				// reserved, SPI 0x100, sequence number 1, no ICV
				body = []byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 1}
			}
			n := 2 + len(body)
			for n%8 != 0 { // IPv6 AH: a multiple of 8 bytes (RFC 4302)
				n++
			}
			h := make([]byte, n)
			h[0], h[1] = next, byte(n/4-2)
			copy(h[2:], body)
			b = append(b, h...)
		default:
			body := e.Data
			if len(body) == 0 {
				switch e.Type {
				case packet.HopByHop, packet.IPv6Opts:
					body = []byte{1, 4, 0, 0, 0, 0} // PadN
				default:
					body = make([]byte, 6) // routing type 0, segments left 0
				}
			}
			n := 2 + len(body)
			for n%8 != 0 {
				n++
			}
			h := make([]byte, n)
			h[0], h[1] = next, byte(n/8-1)
			copy(h[2:], body)
			b = append(b, h...)
		}
	}
	return b
}

// The builders compute checksums with this naive code rather than the
// packet package's, so that tests of the decoder and of the production
// checksum code check against an independent implementation.

// Sum16 returns the ones'-complement sum of b (as big-endian 16-bit words,
// an odd final byte padded with zero) added to initial, folded to 16 bits
// and not complemented.
func Sum16(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudoSum returns the pseudo-header sum of an IPv4 or IPv6 packet whose
// source and destination are the raw address bytes src and dst (4 or 16
// bytes each).
func pseudoSum(src, dst []byte, proto packet.Proto, length int) uint32 {
	s := uint32(Sum16(src, 0)) + uint32(Sum16(dst, 0)) + uint32(proto)
	s += uint32(length>>16) + uint32(length&0xffff)
	return uint32(Sum16(nil, s))
}

func setIPv4HeaderChecksum(b []byte, n int) {
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], ^Sum16(b[:n], 0))
}

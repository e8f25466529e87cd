package defrag

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"

	"github.com/tunrouter/router/packet"
)

// Fragment splits the IPv4 or IPv6 packet pkt into fragments of at most
// maxSize bytes each (IP header included), in order, the way a router
// refragments a reassembled datagram for output. For each fragment it calls
// alloc with the fragment's exact size and writes the fragment into the
// first size bytes of the buffer alloc returns. It allocates nothing
// itself.
//
// IPv4: every fragment copies pkt's header, with its identification, TOS,
// TTL and DF bit (a reassembled datagram whose largest fragment had DF
// keeps DF on its fragments, as Linux does); the first fragment keeps all
// options, later ones only those whose copied flag is set (RFC 791).
// IPv6: a fragment header follows the unfragmentable part (the IPv6 header
// and any extension headers up to and including the last routing header,
// or the hop-by-hop header; RFC 8200 4.5), with an identification derived
// from a secret seed and the packet's addresses, length and transport
// header (so that retransmissions of one datagram get the same
// identification and different datagrams almost surely different ones).
//
// A packet that already fits is passed through as a single copy. Fragment
// does not look at DF: deciding between fragmenting and sending
// fragmentation-needed / packet-too-big is the caller's.
//
// It returns false, having possibly written some fragments, when pkt is
// not a well-formed IP packet, when maxSize leaves no room for 8 bytes of
// data after the headers, when an IPv6 packet already has a fragment
// header, or when alloc returns nil or a buffer shorter than asked (the
// caller ran out of buffers).
func Fragment(pkt []byte, maxSize int, alloc func(size int) []byte) bool {
	if len(pkt) < 1 {
		return false
	}
	switch pkt[0] >> 4 {
	case 4:
		return fragment4(pkt, maxSize, alloc)
	case 6:
		return fragment6(pkt, maxSize, alloc)
	}
	return false
}

func fragment4(pkt []byte, maxSize int, alloc func(int) []byte) bool {
	if len(pkt) < 20 {
		return false
	}
	ihl := int(pkt[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total < ihl || total > len(pkt) {
		return false
	}
	if total <= maxSize {
		return passThrough(pkt[:total], alloc)
	}
	var copied [40]byte
	nc := copiedOptions(copied[:], pkt[20:ihl])
	hl2 := 20 + nc
	first := (maxSize - ihl) &^ 7
	later := (maxSize - hl2) &^ 7
	if first < 8 || later < 8 {
		return false
	}
	fo := binary.BigEndian.Uint16(pkt[6:])
	keep := fo & 0x4000 // DF
	base := int(fo&0x1fff) * 8
	wasMore := fo&0x2000 != 0
	data := pkt[ihl:total]
	for off := 0; off < len(data); {
		hl, n := ihl, first
		if off > 0 {
			hl, n = hl2, later
		}
		last := off+n >= len(data)
		if last {
			n = len(data) - off
		}
		size := hl + n
		buf := alloc(size)
		if len(buf) < size {
			return false
		}
		buf = buf[:size]
		copy(buf, pkt[:20])
		if off == 0 {
			copy(buf[20:], pkt[20:ihl])
		} else {
			copy(buf[20:], copied[:nc])
		}
		buf[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(buf[2:], uint16(size))
		f := keep | uint16((base+off)/8)
		if !last || wasMore {
			f |= 0x2000
		}
		binary.BigEndian.PutUint16(buf[6:], f)
		packet.SetIPv4Checksum(buf)
		copy(buf[hl:], data[off:off+n])
		off += n
	}
	return true
}

// copiedOptions writes to dst the IPv4 options of opts whose copied flag
// (the type's top bit) is set, padded with end-of-options to a multiple of
// 4, and returns their length. It stops at the end-of-options option or at
// a malformed option.
func copiedOptions(dst, opts []byte) int {
	n := 0
	for i := 0; i < len(opts); {
		t := opts[i]
		if t == 0 {
			break
		}
		if t == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) {
			break
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			break
		}
		if t&0x80 != 0 {
			n += copy(dst[n:], opts[i:i+l])
		}
		i += l
	}
	for n%4 != 0 {
		dst[n] = 0
		n++
	}
	return n
}

func fragment6(pkt []byte, maxSize int, alloc func(int) []byte) bool {
	if len(pkt) < 40 {
		return false
	}
	total := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	if total > len(pkt) {
		return false
	}
	pkt = pkt[:total]
	if total <= maxSize {
		return passThrough(pkt, alloc)
	}
	uf, nhOff, ok := unfragmentable6(pkt)
	if !ok {
		return false
	}
	per := (maxSize - uf - 8) &^ 7
	if per < 8 {
		return false
	}
	next := pkt[nhOff]
	id := fragID6(pkt)
	data := pkt[uf:]
	for off := 0; off < len(data); off += per {
		n := min(per, len(data)-off)
		more := off+n < len(data)
		size := uf + 8 + n
		buf := alloc(size)
		if len(buf) < size {
			return false
		}
		buf = buf[:size]
		copy(buf, pkt[:uf])
		buf[nhOff] = byte(packet.IPv6Frag)
		binary.BigEndian.PutUint16(buf[4:], uint16(size-40))
		h := buf[uf:]
		h[0], h[1] = next, 0
		fo := uint16(off)
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(h[2:], fo)
		binary.BigEndian.PutUint32(h[4:], id)
		copy(h[8:], data[off:off+n])
	}
	return true
}

// unfragmentable6 returns the length of the unfragmentable part of the
// IPv6 packet pkt (RFC 8200 4.5) and the offset of the next-header byte
// that points past it. ok is false for a malformed chain or a packet that
// already has a fragment header.
func unfragmentable6(pkt []byte) (n, nhOff int, ok bool) {
	next, off := packet.Proto(pkt[6]), 40
	n, nhOff = 40, 6
	for {
		switch next {
		case packet.HopByHop, packet.IPv6Route, packet.IPv6Opts:
		case packet.IPv6Frag:
			return 0, 0, false
		default:
			return n, nhOff, true
		}
		if off+2 > len(pkt) {
			return 0, 0, false
		}
		hl := (int(pkt[off+1]) + 1) * 8
		if off+hl > len(pkt) {
			return 0, 0, false
		}
		if next == packet.HopByHop || next == packet.IPv6Route {
			n, nhOff = off+hl, off
		}
		next = packet.Proto(pkt[off])
		off += hl
	}
}

func passThrough(pkt []byte, alloc func(int) []byte) bool {
	buf := alloc(len(pkt))
	if len(buf) < len(pkt) {
		return false
	}
	copy(buf, pkt)
	return true
}

// idSeed keys fragment identifications so that they cannot be predicted
// (RFC 7739).
var idSeed = rand.Uint64()

// fragID6 derives a fragment identification from the datagram: its
// addresses, length, and the first 24 and last 16 bytes of what follows the
// IPv6 header. Those cover the transport header (ports, TCP sequence
// numbers, and the transport checksum, which depends on every byte of the
// payload; a sum over the payload itself would not do, since a valid
// transport checksum makes that sum the same for every payload).
func fragID6(pkt []byte) uint32 {
	le := binary.LittleEndian
	h := mix(le.Uint64(pkt[8:])^idSeed, le.Uint64(pkt[16:]))
	h = mix(h^le.Uint64(pkt[24:]), le.Uint64(pkt[32:])^uint64(len(pkt)))
	var tail [40]byte
	rest := pkt[40:]
	copy(tail[:24], rest)
	copy(tail[24:], rest[max(0, len(rest)-16):])
	h = mix(h^le.Uint64(tail[0:]), le.Uint64(tail[8:]))
	h = mix(h^le.Uint64(tail[16:]), le.Uint64(tail[24:]))
	h = mix(h^le.Uint64(tail[32:]), idSeed)
	return uint32(h) ^ uint32(h>>32)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0x9e3779b97f4a7c15, b^0xd1b54a32d192ed03)
	return hi ^ lo
}

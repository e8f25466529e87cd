package packettest

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/tunrouter/router/packet"
)

// This file is a deliberately simple fragmenter, written independently of
// the production one in defrag, so that each can check the other.

// Fragment4 splits the IPv4 packet pkt into fragments of at most size bytes
// each (IP header included), in order. The first fragment carries all IP
// options, later ones only the options whose copied flag is set. The DF
// bit is kept as it is. A packet that already fits is returned as a single
// unchanged copy.
func Fragment4(pkt []byte, size int) [][]byte {
	ihl := int(pkt[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if total <= size {
		return [][]byte{Clone(pkt[:total])}
	}
	data := total - ihl
	var out [][]byte
	for off := 0; off < data; {
		hl := ihl
		if off > 0 {
			hl = 20 + len(copiedOptions4(pkt[20:ihl]))
		}
		n := (size - hl) &^ 7
		if n <= 0 {
			panic(fmt.Sprintf("packettest: Fragment4: size %d too small", size))
		}
		if off+n >= data {
			n = data - off
		}
		out = append(out, FragmentAt4(pkt, off, n, off+n < data))
		off += n
	}
	return out
}

// copiedOptions4 returns the IPv4 options with the copied flag set, padded
// to a multiple of 4 bytes.
func copiedOptions4(opts []byte) []byte {
	var out []byte
	for i := 0; i < len(opts); {
		t := opts[i]
		if t == 0 {
			break
		}
		if t == 1 {
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			break
		}
		l := int(opts[i+1])
		if t&0x80 != 0 {
			out = append(out, opts[i:i+l]...)
		}
		i += l
	}
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// FragmentAt4 returns one fragment of the IPv4 packet pkt carrying the n
// payload bytes starting at payload offset off (a multiple of 8), with the
// more-fragments flag set to more. With off 0 the fragment has pkt's full
// header; otherwise only the copied options. Offsets and lengths may go
// past the data of pkt, which is then padded with the byte 0xee (to build
// oversized or overlapping fragments).
func FragmentAt4(pkt []byte, off, n int, more bool) []byte {
	if off%8 != 0 {
		panic("packettest: FragmentAt4: offset not a multiple of 8")
	}
	ihl := int(pkt[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	payload := pkt[ihl:total]
	hdr := Clone(pkt[:ihl])
	if off > 0 {
		opts := copiedOptions4(pkt[20:ihl])
		hdr = append(hdr[:20:20], opts...)
	}
	hl := len(hdr)
	b := append(hdr, sliceOrPad(payload, off, n)...)
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	fo := binary.BigEndian.Uint16(pkt[6:]) & 0x4000 // keep DF
	fo |= uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	setIPv4HeaderChecksum(b, hl)
	return b
}

func sliceOrPad(p []byte, off, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		if off+i < len(p) {
			out[i] = p[off+i]
		} else {
			out[i] = 0xee
		}
	}
	return out
}

// Unfragmentable6 returns the length of the unfragmentable part of the
// IPv6 packet pkt (RFC 8200 section 4.5: the IPv6 header, a hop-by-hop
// header, and everything up to and including the last routing header), and
// the offset of the next-header byte that points past it.
func Unfragmentable6(pkt []byte) (n, nextOff int) {
	next, off := packet.Proto(pkt[6]), 40
	n, nextOff = 40, 6
	for off+2 <= len(pkt) {
		switch next {
		case packet.HopByHop, packet.IPv6Route, packet.IPv6Opts:
		default:
			return n, nextOff
		}
		hl := (int(pkt[off+1]) + 1) * 8
		if next == packet.HopByHop || next == packet.IPv6Route {
			n, nextOff = off+hl, off
		}
		next = packet.Proto(pkt[off])
		off += hl
	}
	return n, nextOff
}

// Fragment6 splits the IPv6 packet pkt into fragments of at most size
// bytes each, with a fragment header after the unfragmentable part and an
// identification derived from the packet's bytes (so that different
// packets get different ones). A packet that already fits is returned as a
// single unchanged copy.
func Fragment6(pkt []byte, size int) [][]byte {
	return Fragment6ID(pkt, size, crc32.ChecksumIEEE(pkt))
}

// Fragment6ID is Fragment6 with a given identification.
func Fragment6ID(pkt []byte, size int, id uint32) [][]byte {
	total := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	if total <= size {
		return [][]byte{Clone(pkt[:total])}
	}
	uf, _ := Unfragmentable6(pkt)
	data := total - uf
	n := (size - uf - 8) &^ 7
	if n <= 0 {
		panic(fmt.Sprintf("packettest: Fragment6: size %d too small", size))
	}
	var out [][]byte
	for off := 0; off < data; off += n {
		m := min(n, data-off)
		out = append(out, FragmentAt6(pkt, id, off, m, off+m < data))
	}
	return out
}

// FragmentAt6 returns one fragment of the IPv6 packet pkt carrying the n
// bytes of its fragmentable part starting at off (a multiple of 8), with
// identification id and the M flag set to more. Bytes past the end of pkt
// are padded with 0xee.
func FragmentAt6(pkt []byte, id uint32, off, n int, more bool) []byte {
	if off%8 != 0 {
		panic("packettest: FragmentAt6: offset not a multiple of 8")
	}
	total := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	uf, nextOff := Unfragmentable6(pkt)
	b := Clone(pkt[:uf])
	next := b[nextOff]
	b[nextOff] = byte(packet.IPv6Frag)
	fo := uint16(off)
	if more {
		fo |= 1
	}
	b = append(b, next, 0, byte(fo>>8), byte(fo))
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, sliceOrPad(pkt[uf:total], off, n)...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

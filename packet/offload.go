package packet

// GSOType is the segmentation offload a packet carries (the virtio-net
// header's gso_type).
type GSOType uint8

// GSO types.
const (
	GSONone  GSOType = iota // a single packet
	GSOTCPv4                // a TCP/IPv4 super-packet to cut into GSOSize segments
	GSOTCPv6                // a TCP/IPv6 super-packet
	GSOUDPL4                // a UDP super-packet (IPv4 or IPv6) to cut into GSOSize datagrams
)

// Offload is the offload metadata that travels with a packet between the
// kernel and a TUN device opened with a virtio-net header: what the kernel
// calls a GSO packet and the state of its transport checksum. The zero
// value is a plain packet whose checksum is whatever its bytes say.
type Offload struct {
	GSO GSOType
	// ECN: the TCP super-packet has CWR set, for the first segment only
	// (the kernel's SKB_GSO_TCP_ECN).
	ECN bool
	// GSOSize is the payload size of each segment (GSO packets only).
	GSOSize uint16
	// HdrLen is the length of the headers (IP and transport) that every
	// segment repeats (GSO packets only).
	HdrLen uint16
	// NeedsCsum: the transport checksum field holds only the pseudo-header
	// sum; the rest is to be computed from CsumStart on and stored at
	// CsumStart+CsumOffset (the kernel's CHECKSUM_PARTIAL). Such a packet
	// came from the host's own stack, so its data is known good: Linux
	// does not verify it either.
	NeedsCsum             bool
	CsumStart, CsumOffset uint16
	// DataValid: the sender verified the transport checksum (the kernel's
	// CHECKSUM_UNNECESSARY).
	DataValid bool
}

// ChecksumKnownGood reports whether the transport checksum need not be
// verified: a partial checksum (the host's stack will or did compute it
// from data it generated) or one already verified.
func (o *Offload) ChecksumKnownGood() bool { return o.NeedsCsum || o.DataValid }

// SegmentLen returns the size of the largest packet a GSO packet of total
// length n is cut into: its headers plus GSOSize (n itself for a plain
// packet, or when the super-packet is not larger than one segment).
func (o *Offload) SegmentLen(n int) int {
	if o.GSO == GSONone || o.GSOSize == 0 {
		return n
	}
	return min(n, int(o.HdrLen)+int(o.GSOSize))
}

package egress

import (
	"encoding/binary"

	"github.com/tunrouter/router/packet"
)

// TCP flags the segmentation rewrites.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// tcpSplitter cuts one TCP super-segment (an IPv4 header without options
// or an IPv6 header without extension headers, a TCP header, and a payload
// of any length) into segments of at most mss payload bytes, the way a
// NIC's TSO does: each segment gets a copy of the headers with its own
// sequence number, IP length, IPv4 identification (incremented per
// segment) and header checksum; FIN and PSH stay on the last segment only,
// CWR on the first only. The transport checksum is computed from scratch:
// netstack hands over only a pseudo-header sum. A payload that fits one
// segment (or none: an ACK, a FIN) gives one segment with its checksum
// completed. Nothing allocates.
type tcpSplitter struct {
	pkt    []byte
	ipLen  int
	hdrLen int
	family uint8
	mss    int
	n      int // number of segments
	next   int // next segment to write
	seq    uint32
	flags  uint8
	id     uint16
	src    [16]byte
	dst    [16]byte
}

// init prepares the cutting of pkt (which must stay unchanged until the
// last segment is written); it reports false if pkt is not such a TCP
// packet or mss is not positive.
func (s *tcpSplitter) init(pkt []byte, mss int) bool {
	*s = tcpSplitter{}
	if len(pkt) < 1 || mss <= 0 {
		return false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 40 || pkt[0]&0x0f != 5 || pkt[9] != 6 ||
			int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return false
		}
		s.ipLen, s.family = 20, 4
		copy(s.src[:], pkt[12:16])
		copy(s.dst[:], pkt[16:20])
		s.id = binary.BigEndian.Uint16(pkt[4:])
	case 6:
		if len(pkt) < 60 || pkt[6] != 6 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return false
		}
		s.ipLen, s.family = 40, 6
		copy(s.src[:], pkt[8:24])
		copy(s.dst[:], pkt[24:40])
	default:
		return false
	}
	tcpLen := int(pkt[s.ipLen+12]>>4) * 4
	if tcpLen < 20 || len(pkt) < s.ipLen+tcpLen {
		return false
	}
	s.pkt = pkt
	s.hdrLen = s.ipLen + tcpLen
	s.mss = mss
	s.n = max(1, (len(pkt)-s.hdrLen+mss-1)/mss)
	s.seq = binary.BigEndian.Uint32(pkt[s.ipLen+4:])
	s.flags = pkt[s.ipLen+13]
	return true
}

// remaining is the number of segments not yet written.
func (s *tcpSplitter) remaining() int { return s.n - s.next }

// nextLen is the length of the next segment.
func (s *tcpSplitter) nextLen() int {
	payload := len(s.pkt) - s.hdrLen
	lo := min(s.next*s.mss, payload)
	hi := min(lo+s.mss, payload)
	return s.hdrLen + hi - lo
}

// writeNext writes the next segment to dst and returns its length, or 0
// if dst is too small or no segment is left.
func (s *tcpSplitter) writeNext(dst []byte) int {
	if s.next >= s.n {
		return 0
	}
	size := s.nextLen()
	if len(dst) < size {
		return 0
	}
	i := s.next
	s.next++
	payload := s.pkt[s.hdrLen:]
	lo := min(i*s.mss, len(payload))
	seg := dst[:size]
	copy(seg, s.pkt[:s.hdrLen])
	copy(seg[s.hdrLen:], payload[lo:lo+size-s.hdrLen])
	tcp := seg[s.ipLen:]
	binary.BigEndian.PutUint32(tcp[4:], s.seq+uint32(lo))
	f := s.flags
	if i != s.n-1 {
		f &^= tcpFIN | tcpPSH
	}
	if i != 0 {
		f &^= tcpCWR
	}
	tcp[13] = f
	if s.family == 4 {
		binary.BigEndian.PutUint16(seg[2:], uint16(size))
		binary.BigEndian.PutUint16(seg[4:], s.id+uint16(i))
		packet.SetIPv4Checksum(seg)
	} else {
		binary.BigEndian.PutUint16(seg[4:], uint16(size-40))
	}
	tcp[16], tcp[17] = 0, 0
	sum := packet.PseudoHeaderSum(s.family, &s.src, &s.dst, packet.TCP, len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], ^packet.Checksum(tcp, sum))
	return size
}

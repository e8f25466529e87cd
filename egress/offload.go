package egress

import (
	"encoding/binary"
	"os"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunrouter/router/packet"
)

// Offload pass-through (pipeline.OffloadDevice). When every device of the
// pipeline moves packets whole with their offload metadata (TUN devices
// with a virtio-net header), so does the egress: netstack's TCP
// super-segments leave it uncut, with their partial checksum, as a TSO
// packet (the TUN's kernel segments it, or delivers it whole), and the
// kernel's TSO packets from inside enter netstack as one segment (no GRO
// needed, no checksum to verify: the sending kernel computes it, or marks
// it as verified). UDP super-datagrams (USO) are cut into datagrams
// first: netstack's UDP has no offload.

// Offloading reports that ReadOffload and WriteOffload work (always).
func (q *Queue) Offloading() bool { return true }

// ReadOffload is Read without cutting: packet i is bufs[i][offset:] (a
// buffer should hold 64 KiB) with its metadata in offs[i]. A super-segment
// that does not fit a buffer is cut as Read would (into the following
// buffers, without metadata).
func (q *Queue) ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error) {
	for {
		if n := q.fillOffload(bufs, sizes, offs, offset); n > 0 {
			return n, nil
		}
		q.intrMu.Lock()
		intr := q.intr
		q.intrMu.Unlock()
		select {
		case <-q.wake:
		case <-intr:
			return 0, os.ErrDeadlineExceeded
		case <-q.closed:
			return 0, os.ErrClosed
		}
	}
}

func (q *Queue) fillOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) int {
	n := 0
	for n < len(bufs) && n < len(sizes) && n < len(offs) {
		if q.cutting {
			m := q.fill(bufs[n:], sizes[n:], offset)
			for i := n; i < n+m; i++ {
				offs[i] = packet.Offload{}
			}
			n += m
			if q.cutting || m == 0 {
				break
			}
			continue
		}
		pkt := q.pop()
		if pkt == nil {
			break
		}
		dst := bufs[n][offset:cap(bufs[n])]
		total := pkt.Size()
		gso := pkt.GSOOptions
		isGSO := (gso.Type == stack.GSOTCPv4 || gso.Type == stack.GSOTCPv6) && gso.NeedsCsum
		if total > len(dst) {
			// Too big for the pipeline's buffers: cut it.
			if q.take(pkt, bufs[n], &sizes[n], offset) {
				offs[n] = packet.Offload{}
				n++
			}
			pkt.DecRef()
			continue
		}
		copyPacket(dst, pkt)
		pkt.DecRef()
		offs[n] = packet.Offload{}
		if isGSO && !tcpOffload(dst[:total], int(gso.MSS), &offs[n]) {
			q.ep.st.malformed.Add(1)
			continue
		}
		if offs[n].GSO != packet.GSONone {
			q.ep.st.superSegments.Add(1)
		}
		sizes[n] = total
		n++
	}
	return n
}

// tcpOffload describes a TCP packet from netstack's offload path (partial
// checksum, maybe a super-segment of mss-sized segments) as the kernel's
// virtio-net header would. It reports false for a packet that is not a
// plain IPv4/IPv6 TCP packet.
func tcpOffload(p []byte, mss int, o *packet.Offload) bool {
	var ipLen int
	gso := packet.GSOTCPv4
	switch {
	case len(p) >= 40 && p[0] == 0x45 && p[9] == 6:
		ipLen = 20
	case len(p) >= 60 && p[0]>>4 == 6 && p[6] == 6:
		ipLen, gso = 40, packet.GSOTCPv6
	default:
		return false
	}
	hdrLen := ipLen + int(p[ipLen+12]>>4)*4
	if hdrLen < ipLen+20 || hdrLen > len(p) || mss <= 0 {
		return false
	}
	*o = packet.Offload{NeedsCsum: true, CsumStart: uint16(ipLen), CsumOffset: 16}
	if len(p)-hdrLen > mss {
		o.GSO, o.GSOSize, o.HdrLen = gso, uint16(mss), uint16(hdrLen)
		o.ECN = p[ipLen+13]&tcpCWR != 0
	}
	return true
}

// WriteOffload hands packets with their offload metadata to netstack. A
// TCP super-packet enters as one segment; a UDP one is cut into its
// datagrams. Checksums the metadata vouches for (partial, or verified by
// the sender) are not verified again.
func (q *Queue) WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error) {
	d := q.ep.dispatcher()
	select {
	case <-q.closed:
		return 0, os.ErrClosed
	default:
	}
	if d == nil {
		q.ep.st.noNIC.Add(uint64(len(bufs)))
		return len(bufs), nil
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.gro.Dispatcher = d
	for i, b := range bufs {
		if len(b) <= offset {
			continue
		}
		p := b[offset:]
		var o packet.Offload
		if i < len(offs) {
			o = offs[i]
		}
		if o.GSO == packet.GSOUDPL4 {
			q.writeUSO(p, &o)
			continue
		}
		q.inject(p, o.ChecksumKnownGood())
	}
	q.gro.Flush()
	q.flushUDP()
	return len(bufs), nil
}

// inject hands one packet to netstack through the queue's GRO (q.wmu
// held); trusted skips the transport checksum check.
func (q *Queue) inject(p []byte, trusted bool) {
	var proto = header.IPv4ProtocolNumber
	switch p[0] >> 4 {
	case 4:
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		q.ep.st.malformed.Add(1)
		return
	}
	q.parsed.Decode(p)
	if q.parsed.Err.IsIPLevel() || !trusted && !q.parsed.L4ChecksumValid() {
		q.ep.st.badChecksum.Add(1)
		return
	}
	if q.dev.ping != nil && isEchoRequest(p) {
		q.dev.ping.request(p)
		return
	}
	if q.dev.udpIn(q, &q.parsed) {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = proto
	pkt.RXChecksumValidated = true
	q.gro.Enqueue(pkt)
	pkt.DecRef()
}

// writeUSO cuts a UDP super-datagram into its datagrams (each GSOSize
// bytes of payload, the last one shorter) and injects them.
func (q *Queue) writeUSO(p []byte, o *packet.Offload) {
	ipLen := int(o.CsumStart)
	hdrLen := ipLen + 8
	size := int(o.GSOSize)
	if size == 0 || hdrLen > len(p) || ipLen < 20 || p[0]>>4 == 4 && ipLen != int(p[0]&0x0f)*4 || p[0]>>4 == 6 && ipLen != 40 {
		q.ep.st.malformed.Add(1)
		return
	}
	payload := p[hdrLen:]
	seg := q.scratch[:0]
	var src, dst [16]byte
	v4 := p[0]>>4 == 4
	if v4 {
		copy(src[:], p[12:16])
		copy(dst[:], p[16:20])
	} else {
		copy(src[:], p[8:24])
		copy(dst[:], p[24:40])
	}
	for i := 0; len(payload) > 0; i++ {
		n := min(size, len(payload))
		seg = append(seg[:0], p[:hdrLen]...)
		seg = append(seg, payload[:n]...)
		payload = payload[n:]
		if v4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
			binary.BigEndian.PutUint16(seg[4:], binary.BigEndian.Uint16(p[4:])+uint16(i))
			packet.SetIPv4Checksum(seg)
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-40))
		}
		u := seg[ipLen:]
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
		u[6], u[7] = 0, 0
		fam := uint8(6)
		if v4 {
			fam = 4
		}
		c := ^packet.Checksum(u, packet.PseudoHeaderSum(fam, &src, &dst, packet.UDP, len(u)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
		q.inject(seg, true)
	}
}

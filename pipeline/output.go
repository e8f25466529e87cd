package pipeline

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/tunrouter/router/packet"
)

// output collects the packets that the workers a reader runs emit for one
// batch, per output device queue, and writes them once the workers are
// released: a worker is held only while its packets are processed, never
// during a device write (which, for a TUN, runs the receiving kernel's
// whole input path). It belongs to one reader.
type output struct {
	p *Pipeline
	// lists[port][queue] are the packets for that device queue; worker w
	// emits to queue w modulo the port's queue count, so that the kernel's
	// flow steering sends the flow's next packets to the queue of its
	// worker's reader.
	lists [][]outList
	dirty []outRef // the lists holding packets, in order of first use
	// heads are big buffers the packets that may start a GRO run are
	// copied into before a write, so that the device can append the
	// following segments of their flow (read buffers hold one packet).
	heads [][]byte
	seen  headSet
	// arena holds packets the workers build (ICMP errors, resets,
	// fragments, echo replies) until they are written.
	arena []byte
	// writeErrs counts failed writes per port.
	writeErrs []atomic.Uint64
}

// outList is the packets for one device queue; flow[i] is a hash of the
// flow of bufs[i] when the device may coalesce it with others (GRO), else
// 0.
type outList struct {
	bufs [][]byte
	flow []uint64
	offl []packet.Offload // with Pipeline.offload: each packet's metadata
}

type outRef struct{ port, queue int }

func newOutput(p *Pipeline) *output {
	o := &output{p: p, lists: make([][]outList, len(p.ports)), writeErrs: make([]atomic.Uint64, len(p.ports))}
	for i, port := range p.ports {
		o.lists[i] = make([]outList, len(port.Queues))
	}
	return o
}

// add queues buf (with bufOffset bytes of headroom) for worker w's queue
// of port.
func (o *output) add(port, w int, buf []byte, flow uint64, off *packet.Offload) {
	ls := o.lists[port]
	q := w % len(ls)
	l := &ls[q]
	if len(l.bufs) == 0 {
		o.dirty = append(o.dirty, outRef{port, q})
	}
	l.bufs = append(l.bufs, buf)
	if o.p.offload {
		l.offl = append(l.offl, *off)
	} else {
		l.flow = append(l.flow, flow)
	}
}

// flush writes every queued packet and empties the arena.
func (o *output) flush() {
	for _, ref := range o.dirty {
		l := &o.lists[ref.port][ref.queue]
		q := o.p.ports[ref.port].Queues[ref.queue]
		var err error
		if o.p.offload {
			if len(l.bufs) > 1 {
				o.coalesceUDP(l)
			}
			_, err = q.(OffloadDevice).WriteOffload(l.bufs, l.offl, bufOffset)
		} else {
			if q.BatchSize() > 1 && len(l.bufs) > 1 {
				o.prepareHeads(l.bufs, l.flow)
			}
			_, err = q.Write(l.bufs, bufOffset)
		}
		if err != nil {
			o.writeErrs[ref.port].Add(1)
		}
		clear(l.bufs)
		l.bufs, l.flow, l.offl = l.bufs[:0], l.flow[:0], l.offl[:0]
	}
	o.dirty = o.dirty[:0]
	o.arena = o.arena[:0]
}

// prepareHeads copies the first packet of every coalescable flow of a
// write batch into a big buffer: the device's GRO appends the flow's
// following segments to it, which needs room a read buffer does not have.
// It costs one copy per flow per batch.
func (o *output) prepareHeads(bufs [][]byte, flows []uint64) {
	o.seen.reset()
	nh := 0
	for i, f := range flows {
		if f == 0 || cap(bufs[i]) >= bigSize || !o.seen.add(f) {
			continue
		}
		if nh == len(o.heads) {
			o.heads = append(o.heads, make([]byte, bigSize))
		}
		h := o.heads[nh][:len(bufs[i])]
		nh++
		copy(h, bufs[i])
		bufs[i] = h
	}
}

// UDP coalescing (GRO) for offload devices: a run of datagrams of one
// flow, as a busy sender queues them, leaves as one UDP GSO
// super-datagram, cut again by the kernel on the other side: one write
// instead of one per datagram. Only datagrams whose checksum is partial
// (the host's stack made them, so their data is good) are merged: the
// super-datagram's checksum is computed afresh, per segment, by the
// kernel.
const maxUDPSegs = 64

// coalesceUDP merges the runs of l into heads, in place.
func (o *output) coalesceUDP(l *outList) {
	nh, w := 0, 0
	for i := 0; i < len(l.bufs); {
		j := i + 1
		hl, size, ok := udpHead(l.bufs[i][bufOffset:], &l.offl[i])
		if ok {
			total := len(l.bufs[i]) - bufOffset
			for j < len(l.bufs) && j-i < maxUDPSegs {
				n := len(l.bufs[j]) - bufOffset
				if total+n-hl > 65535 || !udpJoins(l.bufs[i][bufOffset:], l.bufs[j][bufOffset:], &l.offl[j], hl, size) {
					break
				}
				total += n - hl
				j++
				if n-hl < size {
					break // a shorter datagram ends a run
				}
			}
		}
		if j-i < 2 {
			l.bufs[w], l.offl[w] = l.bufs[i], l.offl[i]
		} else {
			if nh == len(o.heads) {
				o.heads = append(o.heads, make([]byte, bigSize))
			}
			l.bufs[w], l.offl[w] = mergeUDP(o.heads[nh], l.bufs[i:j], hl, size)
			nh++
		}
		w++
		i = j
	}
	clear(l.bufs[w:])
	l.bufs, l.offl = l.bufs[:w], l.offl[:w]
}

// udpHead reports whether pkt (IPv4 without options or IPv6 without
// extension headers, UDP, partial checksum, not GSO) may start a run, with
// its header length and payload size.
func udpHead(pkt []byte, off *packet.Offload) (hl, size int, ok bool) {
	if off.GSO != packet.GSONone || !off.NeedsCsum || len(pkt) < 1 {
		return 0, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 28 || pkt[0]&0x0f != 5 || pkt[9] != byte(packet.UDP) || pkt[6]&0x3f != 0 || pkt[7] != 0 {
			return 0, 0, false // options, not UDP, or a fragment
		}
		hl = 28
	case 6:
		if len(pkt) < 48 || pkt[6] != byte(packet.UDP) {
			return 0, 0, false
		}
		hl = 48
	default:
		return 0, 0, false
	}
	if int(off.CsumStart) != hl-8 || off.CsumOffset != 6 || len(pkt) == hl {
		return 0, 0, false
	}
	return hl, len(pkt) - hl, true
}

// udpJoins reports whether pkt continues the run started by head: same
// addresses, ports and IP header fields (but length, ID and checksum), a
// partial checksum, a payload not larger than the run's.
func udpJoins(head, pkt []byte, off *packet.Offload, hl, size int) bool {
	if off.GSO != packet.GSONone || !off.NeedsCsum || int(off.CsumStart) != hl-8 || off.CsumOffset != 6 {
		return false
	}
	n := len(pkt) - hl
	if n <= 0 || n > size || len(pkt) < hl || pkt[0] != head[0] {
		return false
	}
	if hl == 28 {
		// IPv4: TOS, flags, TTL, protocol, addresses, ports.
		return pkt[1] == head[1] && pkt[6] == head[6] && pkt[7] == head[7] &&
			string(pkt[8:10]) == string(head[8:10]) && string(pkt[12:24]) == string(head[12:24])
	}
	// IPv6: version, class, flow label, next header, hop limit, addresses,
	// ports.
	return string(pkt[0:4]) == string(head[0:4]) && string(pkt[6:44]) == string(head[6:44])
}

// mergeUDP copies a run of datagrams into big (the first one's headers,
// then every payload) and returns it with its offload metadata.
func mergeUDP(big []byte, run [][]byte, hl, size int) ([]byte, packet.Offload) {
	out := big[:bufOffset+hl]
	copy(out[bufOffset:], run[0][bufOffset:bufOffset+hl])
	for _, b := range run {
		out = append(out, b[bufOffset+hl:]...)
	}
	pkt := out[bufOffset:]
	udpLen := len(pkt) - (hl - 8)
	binary.BigEndian.PutUint16(pkt[hl-8+4:], uint16(udpLen))
	var src, dst [16]byte
	fam := uint8(4)
	if hl == 28 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], ^packet.Checksum(pkt[:20], 0))
		copy(src[:4], pkt[12:16])
		copy(dst[:4], pkt[16:20])
	} else {
		fam = 6
		binary.BigEndian.PutUint16(pkt[4:], uint16(udpLen))
		copy(src[:], pkt[8:24])
		copy(dst[:], pkt[24:40])
	}
	// A partial checksum: the pseudo-header sum over the whole UDP length,
	// which the kernel adjusts per segment.
	binary.BigEndian.PutUint16(pkt[hl-8+6:], uint16(packet.PseudoHeaderSum(fam, &src, &dst, packet.UDP, udpLen)))
	return out, packet.Offload{GSO: packet.GSOUDPL4, GSOSize: uint16(size), HdrLen: uint16(hl),
		NeedsCsum: true, CsumStart: uint16(hl - 8), CsumOffset: 6}
}

// scratch returns a buffer of n bytes plus headroom from the arena.
func (o *output) scratch(n int) []byte {
	need := bufOffset + n
	if len(o.arena)+need > cap(o.arena) {
		if cap(o.arena) == 0 || len(o.arena) == 0 {
			o.arena = make([]byte, 0, max(256<<10, 2*need))
		} else {
			// Earlier packets still reference the arena: write them out
			// first, then reuse it.
			o.flush()
			if need > cap(o.arena) {
				o.arena = make([]byte, 0, 2*need)
			}
		}
	}
	s := o.arena[len(o.arena) : len(o.arena)+need]
	o.arena = o.arena[:len(o.arena)+need]
	return s
}

// writeErrors sums the failed writes over the ports.
func (o *output) writeErrors() uint64 {
	var n uint64
	for i := range o.writeErrs {
		n += o.writeErrs[i].Load()
	}
	return n
}

// headSet is a small set of flow hashes for one write batch.
type headSet struct {
	slots [256]uint64
	used  [256]uint8
	n     int
}

func (s *headSet) reset() {
	for _, i := range s.used[:s.n] {
		s.slots[i] = 0
	}
	s.n = 0
}

// add inserts f and reports whether it was new. A full set answers false
// (no more heads are prepared for this batch).
func (s *headSet) add(f uint64) bool {
	i := uint8(f)
	for probe := 0; probe < 256; probe++ {
		switch s.slots[i] {
		case f:
			return false
		case 0:
			if s.n == len(s.used) {
				return false
			}
			s.slots[i] = f
			s.used[s.n] = i
			s.n++
			return true
		}
		i++
	}
	return false
}

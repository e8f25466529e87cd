package pipeline

import (
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

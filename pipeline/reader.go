package pipeline

import (
	"errors"
	"math/bits"
	"os"
	"sync/atomic"
	"time"

	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/packet"
)

// batch is what a reader runs its workers on: the packets of one Read,
// decoded, each marked with the worker that owns it. It belongs to its
// reader, which reuses it for the next Read once the batch's packets are
// written.
type batch struct {
	port  int
	n     int
	now   int64
	bufs  [][]byte // packet i is bufs[i][bufOffset:bufOffset+sizes[i]]
	sizes []int
	pkts  []packet.Parsed
	owner []uint8          // worker of packet i, or noOwner
	frag  []uint16         // for reassembled datagrams: the largest fragment's size, else 0
	offl  []packet.Offload // offload metadata (Pipeline.offload; else zero)
	// slot keeps the read buffer of a slot that holds a reassembled
	// datagram in a big buffer instead (nil otherwise); the reader swaps
	// it back before the next Read.
	slot [][]byte
}

const noOwner = 0xff

// offloadBatch is the most packets a reader takes per batch from a device
// with offload metadata: the first is waited for, the others are those
// already queued in the kernel.
const offloadBatch = 32

func newBatch(size, slot int) *batch {
	b := &batch{
		bufs:  make([][]byte, size),
		sizes: make([]int, size),
		pkts:  make([]packet.Parsed, size),
		owner: make([]uint8, size),
		frag:  make([]uint16, size),
		offl:  make([]packet.Offload, size),
		slot:  make([][]byte, size),
	}
	mem := make([]byte, size*slot)
	for i := range b.bufs {
		b.bufs[i] = mem[i*slot : (i+1)*slot : (i+1)*slot]
	}
	return b
}

// reader reads one device queue.
type reader struct {
	p     *Pipeline
	port  int
	queue int
	dev   Device
	b     *batch
	out   *output
	big   [][]byte // spare big buffers for reassembled datagrams
	defr  *defrag.Table
	// lastReap is when expired incomplete datagrams were last removed.
	lastReap int64
	stats    readerStats
}

type readerStats struct {
	reads, packets, bytes atomic.Uint64
	contended             atomic.Uint64 // batches that waited for a busy worker
	readErrors            atomic.Uint64
	fragHeld              atomic.Uint64
}

func newReader(p *Pipeline, port, queue int, dev Device) *reader {
	size, slot := dev.BatchSize(), slotSize(p.ports)
	if size < 1 {
		size = 1
	}
	if p.offload {
		// Whole GSO packets: fewer, bigger slots.
		size, slot = offloadBatch, bigSize
	}
	return &reader{
		p: p, port: port, queue: queue, dev: dev,
		b:    newBatch(size, slot),
		out:  newOutput(p),
		defr: defrag.New(p.cfg.Defrag),
	}
}

func (r *reader) run() {
	defer r.p.readerWG.Done()
	if r.p.cfg.PinCPUs {
		pinToCPU(r.queue)
	}
	var errRun int
	b := r.b
	for {
		for i := range b.bufs {
			if b.slot[i] != nil {
				r.big = append(r.big, b.bufs[i])
				b.bufs[i], b.slot[i] = b.slot[i], nil
			}
			b.bufs[i] = b.bufs[i][:cap(b.bufs[i])]
		}
		var n int
		var err error
		if r.p.offload {
			n, err = r.dev.(OffloadDevice).ReadOffload(b.bufs, b.sizes, b.offl, bufOffset)
		} else {
			n, err = r.dev.Read(b.bufs, b.sizes, bufOffset)
		}
		if r.p.closed.Load() {
			return
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.stats.readErrors.Add(1)
			errRun++
			if errRun > 1000 {
				r.p.log.Error("device read keeps failing, stopping its reader",
					"device", r.p.ports[r.port].Name, "queue", r.queue, "err", err)
				return
			}
			if errRun == 1 || errRun%100 == 0 {
				r.p.log.Warn("device read failed", "device", r.p.ports[r.port].Name, "queue", r.queue, "err", err)
			}
			continue
		}
		errRun = 0
		if n == 0 {
			continue
		}
		r.dispatch(b, n)
	}
}

// dispatch decodes the n packets of b, reassembles fragments and runs
// every worker that owns one of its packets on b.
//
// Run to completion: the reader runs the workers itself, on its own
// goroutine, taking each worker's mutex for the time it processes the
// worker's packets of the batch (waiting for it when the worker is busy
// with another reader's batch), then writes what they emitted with no
// worker held. No goroutine hand-over, no queue to overflow: when the
// workers are slower than the devices the readers fall behind and the
// kernel's device queues absorb the burst (or drop, as the kernel does for
// any slow device).
func (r *reader) dispatch(b *batch, n int) {
	p := r.p
	now := p.clock()
	b.port, b.n, b.now = r.port, n, now
	r.stats.reads.Add(1)
	r.stats.packets.Add(uint64(n))
	nw := uint64(len(p.workers))
	var mask uint64
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(b.sizes[i])
		pkt := &b.pkts[i]
		pkt.Decode(b.bufs[i][bufOffset : bufOffset+b.sizes[i]])
		b.frag[i] = 0
		if pkt.Fragment && !pkt.Err.IsIPLevel() {
			whole, maxFrag, ok := r.reassemble(pkt, now)
			if !ok {
				b.owner[i] = noOwner
				continue
			}
			if len(whole)+bufOffset > cap(b.bufs[i]) {
				var big []byte
				if n := len(r.big); n > 0 {
					big, r.big = r.big[n-1], r.big[:n-1]
				} else {
					big = make([]byte, bigSize)
				}
				b.slot[i], b.bufs[i] = b.bufs[i], big[:cap(big)]
			}
			m := copy(b.bufs[i][bufOffset:], whole)
			b.sizes[i] = m
			pkt.Decode(b.bufs[i][bufOffset : bufOffset+m])
			b.frag[i] = maxFrag
		}
		w := uint8(steer(pkt, p.seed) % nw)
		b.owner[i] = w
		mask |= 1 << w
	}
	r.stats.bytes.Add(bytes)
	if r.defr.Len() > 0 && now-r.lastReap > int64(100*time.Millisecond) {
		r.lastReap = now
		r.defr.Reap(now)
	}
	for m := mask; m != 0; m &= m - 1 {
		w := p.workers[bits.TrailingZeros64(m)]
		if !w.mu.TryLock() {
			r.stats.contended.Add(1)
			w.waiting.Add(1)
			w.mu.Lock()
			w.waiting.Add(-1)
		}
		w.process(b, r.out)
		w.mu.Unlock()
	}
	// The workers are free again: write what they emitted.
	r.out.flush()
}

// reassemble hands a fragment to the defragmenter; ok is true when it
// completed a datagram, which is returned with the size of its largest
// fragment.
func (r *reader) reassemble(pkt *packet.Parsed, now int64) (whole []byte, maxFrag uint16, ok bool) {
	whole, maxFrag, ok = r.defr.Add(pkt, now)
	if !ok {
		r.stats.fragHeld.Add(1)
	}
	return whole, maxFrag, ok
}

// steer picks the hash that sends a packet to its connection's worker: the
// symmetric hash of its key, or of the quoted packet's key for ICMP
// errors. Undecodable packets are spread by address.
func steer(p *packet.Parsed, seed uint64) uint64 {
	if p.InnerOff != 0 && p.InnerErr == packet.ErrNone {
		return p.Inner.SymHash(seed)
	}
	if p.Err != packet.ErrNone || p.Fragment {
		k := packet.FlowKey{Src: p.Key.Src, Dst: p.Key.Dst, Family: p.Key.Family}
		return k.SymHash(seed)
	}
	return p.Key.SymHash(seed)
}

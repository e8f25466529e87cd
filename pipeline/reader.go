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

// batch is the unit a reader hands to workers: the packets of one Read,
// decoded, each marked with the worker that owns it. A batch goes to every
// worker that owns one of its packets; each decrements refs once when it
// is done, and the last one returns the batch to its reader's free list.
type batch struct {
	port  int
	n     int
	now   int64
	bufs  [][]byte // packet i is bufs[i][bufOffset:bufOffset+sizes[i]]
	sizes []int
	pkts  []packet.Parsed
	owner []uint8  // worker of packet i, or noOwner
	frag  []uint16 // for reassembled datagrams: the largest fragment's size, else 0
	// slot keeps the read buffer of a slot that holds a reassembled
	// datagram in a big buffer instead (nil otherwise); the reader swaps
	// it back before the next Read.
	slot [][]byte
	refs atomic.Int32
	home chan *batch
	src  *reader // the reader the batch belongs to
}

const noOwner = 0xff

func newBatch(src *reader, size, slot int, home chan *batch) *batch {
	b := &batch{
		src:   src,
		bufs:  make([][]byte, size),
		sizes: make([]int, size),
		pkts:  make([]packet.Parsed, size),
		owner: make([]uint8, size),
		frag:  make([]uint16, size),
		slot:  make([][]byte, size),
		home:  home,
	}
	mem := make([]byte, size*slot)
	for i := range b.bufs {
		b.bufs[i] = mem[i*slot : (i+1)*slot : (i+1)*slot]
	}
	return b
}

// release is called once by each recipient (and by the reader for
// recipients it could not reach).
func (b *batch) release() {
	if b.refs.Add(-1) == 0 {
		b.home <- b
	}
}

// reader reads one device queue.
type reader struct {
	p     *Pipeline
	port  int
	queue int
	dev   Device
	free  chan *batch
	big   [][]byte // spare big buffers for reassembled datagrams
	defr  *defrag.Table
	wait  *time.Timer
	// lastReap is when expired incomplete datagrams were last removed.
	lastReap int64
	// pending[w] counts this reader's batches in worker w's queue or
	// being processed from it; the reader runs worker w itself only when
	// it is zero, so that w sees this reader's packets in order.
	pending []atomic.Int32
	inline  []*worker // scratch: workers dispatch runs on this goroutine
	stats   readerStats
}

type readerStats struct {
	reads, packets, bytes atomic.Uint64
	queueFull             atomic.Uint64 // packets dropped: worker queue full
	queueWaits            atomic.Uint64 // batches that waited for a full worker queue
	readErrors            atomic.Uint64
	fragHeld              atomic.Uint64
}

func newReader(p *Pipeline, port, queue int, dev Device) *reader {
	size := dev.BatchSize()
	if size < 1 {
		size = 1
	}
	nb := len(p.workers)*p.cfg.QueueDepth + 2
	r := &reader{
		p: p, port: port, queue: queue, dev: dev,
		free:    make(chan *batch, nb),
		defr:    defrag.New(p.cfg.Defrag),
		pending: make([]atomic.Int32, len(p.workers)),
		inline:  make([]*worker, 0, len(p.workers)),
	}
	slot := slotSize(p.ports)
	for i := 0; i < nb; i++ {
		r.free <- newBatch(r, size, slot, r.free)
	}
	return r
}

func (r *reader) run() {
	defer r.p.readerWG.Done()
	if r.p.cfg.PinCPUs {
		pinToCPU(r.queue)
	}
	var errRun int
	for {
		b := <-r.free
		for i := range b.bufs {
			if b.slot[i] != nil {
				r.big = append(r.big, b.bufs[i])
				b.bufs[i], b.slot[i] = b.slot[i], nil
			}
			b.bufs[i] = b.bufs[i][:cap(b.bufs[i])]
		}
		n, err := r.dev.Read(b.bufs, b.sizes, bufOffset)
		if r.p.closed.Load() {
			r.free <- b
			return
		}
		if err != nil {
			r.free <- b
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
			r.free <- b
			continue
		}
		r.dispatch(b, n)
	}
}

// dispatch decodes the n packets of b, reassembles fragments and hands b
// to every worker that owns one of its packets.
//
// Run to completion: a worker that is free (its lock is available) and
// has none of this reader's earlier batches still queued is run right
// here, on the reader's goroutine, without a hand-over. Only a worker
// busy with another reader's batch gets b through its queue. With
// multi-queue devices the kernel keeps a flow on the queue its replies
// are written to, which is its worker's (Port.Queues), so in the steady
// state each reader runs its own worker and goroutines hand nothing over.
// Ownership is per batch: the per-packet path takes no lock.
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
	if mask == 0 {
		b.home <- b
		return
	}
	b.refs.Store(int32(bits.OnesCount64(mask)))
	// Take every worker that can run here; queue b at once to the others
	// so that they start meanwhile; run the taken ones; then wait for
	// the queues that were full (holding no worker then, so that readers
	// waiting for each other's workers cannot block one another).
	inline, full := r.inline[:0], uint64(0)
	for m := mask; m != 0; m &= m - 1 {
		w := p.workers[bits.TrailingZeros64(m)]
		if r.pending[w.id].Load() == 0 && w.mu.TryLock() {
			inline = append(inline, w)
			continue
		}
		r.pending[w.id].Add(1)
		select {
		case w.in <- b:
		default:
			full |= 1 << w.id
		}
	}
	for i, w := range inline {
		w.process(b)
		w.mu.Unlock()
		inline[i] = nil
	}
	for m := full; m != 0; m &= m - 1 {
		r.enqueueWait(b, p.workers[bits.TrailingZeros64(m)], n)
	}
}

// enqueueWait sends b to worker w's full queue: it absorbs a burst by
// waiting a little (the kernel queues meanwhile), and drops w's packets of
// b only when the queue stays full. pending[w] is already counted.
func (r *reader) enqueueWait(b *batch, w *worker, n int) {
	if r.wait == nil {
		r.wait = time.NewTimer(queueWait)
	} else {
		r.wait.Reset(queueWait)
	}
	select {
	case w.in <- b:
		if !r.wait.Stop() {
			<-r.wait.C
		}
		r.stats.queueWaits.Add(1)
	case <-r.wait.C:
		r.pending[w.id].Add(-1)
		dropped := 0
		for i := 0; i < n; i++ {
			if b.owner[i] == uint8(w.id) {
				dropped++
			}
		}
		r.stats.queueFull.Add(uint64(dropped))
		b.release()
	}
}

// queueWait is how long a reader waits for a full worker queue before it
// drops the batch's packets for that worker.
const queueWait = 2 * time.Millisecond

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

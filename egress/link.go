package egress

import (
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"

	"github.com/tunrouter/router/packet"
)

// gsoMaxSize is the largest TCP super-segment netstack may hand over; the
// queue cuts it into MSS-sized segments (netstack keeps the total below
// this, headers included, so that it fits an IPv4 total length).
const gsoMaxSize = 65535

// linkEP is netstack's network interface, a point-to-point link without
// link-layer headers. Packets netstack sends are placed on the ring of one
// Queue, chosen by a hash of their addresses and ports so that the packets
// of a flow stay in order, for the pipeline to Read. Packets the pipeline
// Writes into a Queue are handed to netstack through that queue's GRO.
//
// It advertises host GSO: netstack's TCP then sends super-segments of up
// to gsoMaxSize with a partial checksum, which Read cuts and checksums
// (one pass over the bytes instead of one trip through netstack per MSS).
type linkEP struct {
	mtu    atomic.Uint32
	queues []*Queue
	st     *counters

	mu   sync.RWMutex
	disp stack.NetworkDispatcher
}

var (
	_ stack.LinkEndpoint = (*linkEP)(nil)
	_ stack.GSOEndpoint  = (*linkEP)(nil)
)

func (e *linkEP) MTU() uint32                      { return e.mtu.Load() }
func (e *linkEP) SetMTU(mtu uint32)                { e.mtu.Store(mtu) }
func (e *linkEP) MaxHeaderLength() uint16          { return 0 }
func (e *linkEP) LinkAddress() tcpip.LinkAddress   { return "" }
func (e *linkEP) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities: receive checksum offload, because Queue.Write verifies
// every checksum itself (netstack's NIC would otherwise clear the mark GRO
// relies on and drop every coalesced segment: the IPv4 header checksum of
// a coalesced segment is not recomputed).
func (e *linkEP) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}
func (e *linkEP) Wait()                                   {}
func (e *linkEP) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (e *linkEP) AddHeader(*stack.PacketBuffer)           {}
func (e *linkEP) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *linkEP) Close()                                  {}
func (e *linkEP) SetOnCloseAction(func())                 {}
func (e *linkEP) GSOMaxSize() uint32                      { return gsoMaxSize }
func (e *linkEP) SupportedGSO() stack.SupportedGSO        { return stack.HostGSOSupported }

// Attach is called by netstack with the NIC's dispatcher (nil when the NIC
// is removed).
func (e *linkEP) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.disp = d
	e.mu.Unlock()
}

func (e *linkEP) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.disp != nil
}

func (e *linkEP) dispatcher() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.disp
}

// WritePackets queues netstack's packets for the pipeline. A queue that is
// full drops the packet (netstack's TCP retransmits it).
func (e *linkEP) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		e.enqueue(pkt)
	}
	return pkts.Len(), nil
}

// enqueue puts pkt (taking a reference) on its flow's queue.
func (e *linkEP) enqueue(pkt *stack.PacketBuffer) {
	q := e.queues[0]
	if len(e.queues) > 1 {
		q = e.queues[flowHash(pkt)%uint32(len(e.queues))]
	}
	q.push(pkt)
}

// flowHash hashes a packet's addresses and, for TCP and UDP, its ports
// (FNV-1a), without allocating.
func flowHash(pkt *stack.PacketBuffer) uint32 {
	h := uint32(2166136261)
	add := func(b []byte) {
		for _, c := range b {
			h = (h ^ uint32(c)) * 16777619
		}
	}
	nh := pkt.NetworkHeader().Slice()
	var proto uint8
	switch {
	case len(nh) >= 20 && nh[0]>>4 == 4:
		add(nh[12:20])
		proto = nh[9]
	case len(nh) >= 40 && nh[0]>>4 == 6:
		add(nh[8:40])
		proto = nh[6]
	}
	if proto == 6 || proto == 17 {
		if th := pkt.TransportHeader().Slice(); len(th) >= 4 {
			add(th[:4])
		}
	}
	return h
}

// Queue is one pipeline queue of an egress device: a pipeline.Device
// (Read, Write, BatchSize) that also implements ReadInterrupter.
//
// Read is meant for one goroutine at a time (the pipeline's reader of the
// queue); Write may be called concurrently (it serialises).
type Queue struct {
	ep    *linkEP
	dev   *Device
	batch int

	// The ring of packets netstack sent, guarded by mu.
	mu       sync.Mutex
	ring     []*stack.PacketBuffer
	head, n  int
	bytes    int
	maxBytes int
	wake     chan struct{} // a token when the ring became non-empty

	// Reader state: a super-segment being cut, in scratch.
	cut     tcpSplitter
	cutting bool
	scratch []byte

	intrMu sync.Mutex
	intr   chan struct{} // closed by InterruptRead
	closed chan struct{} // the device's: closed by Close

	// wmu serialises Write (its GRO state and parse scratch).
	wmu      sync.Mutex
	gro      gro.GRO
	parsed   packet.Parsed
	udpFlows []*fastFlow // fast-path flows with datagrams to send (flushUDP)
}

func newQueue(dev *Device, ep *linkEP, c *Config) *Queue {
	q := &Queue{
		ep:       ep,
		dev:      dev,
		batch:    c.BatchSize,
		ring:     make([]*stack.PacketBuffer, c.QueuePackets),
		maxBytes: c.QueueBytes,
		wake:     make(chan struct{}, 1),
		scratch:  make([]byte, gsoMaxSize+1024),
		intr:     make(chan struct{}),
		closed:   dev.done,
	}
	q.gro.Init(true)
	return q
}

// BatchSize is the most packets a Read returns.
func (q *Queue) BatchSize() int { return q.batch }

// push appends pkt to the ring (taking a reference), or drops it when the
// ring is full or the device closed.
func (q *Queue) push(pkt *stack.PacketBuffer) {
	size := pkt.Size()
	q.mu.Lock()
	if q.ring == nil || q.n == len(q.ring) || q.bytes+size > q.maxBytes {
		q.mu.Unlock()
		q.ep.st.queueFull.Add(1)
		return
	}
	q.ring[(q.head+q.n)%len(q.ring)] = pkt.IncRef()
	q.n++
	q.bytes += size
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop removes the oldest packet from the ring (nil if empty).
func (q *Queue) pop() *stack.PacketBuffer {
	q.mu.Lock()
	if q.n == 0 {
		q.mu.Unlock()
		return nil
	}
	pkt := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	q.bytes -= pkt.Size()
	q.mu.Unlock()
	return pkt
}

// Read returns up to len(bufs) packets netstack sent, each at
// bufs[i][offset:] with its length in sizes[i]; TCP super-segments are cut
// into MSS-sized segments (a super-segment may continue in the next Read).
// It blocks until there is at least one packet, InterruptRead is called
// (os.ErrDeadlineExceeded, then at once on every later call) or the device
// is closed (os.ErrClosed).
func (q *Queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if n := q.fill(bufs, sizes, offset); n > 0 {
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

// InterruptRead makes a blocked Read return, and every later one, without
// closing the device.
func (q *Queue) InterruptRead() error {
	q.intrMu.Lock()
	select {
	case <-q.intr:
	default:
		close(q.intr)
	}
	q.intrMu.Unlock()
	return nil
}

// fill moves packets from the ring into bufs without blocking.
func (q *Queue) fill(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for n < len(bufs) && n < len(sizes) {
		if q.cutting {
			dst := bufs[n][offset:cap(bufs[n])]
			if q.cut.nextLen() > len(dst) {
				// Never fits this device's buffers: drop the rest.
				q.ep.st.tooBig.Add(uint64(q.cut.remaining()))
				q.cutting = false
				continue
			}
			sizes[n] = q.cut.writeNext(dst)
			n++
			if q.cut.remaining() == 0 {
				q.cutting = false
			}
			continue
		}
		pkt := q.pop()
		if pkt == nil {
			break
		}
		if q.take(pkt, bufs[n], &sizes[n], offset) {
			n++
		}
		pkt.DecRef()
	}
	return n
}

// take copies pkt into buf[offset:] and sets *size, or, for a TCP
// super-segment, flattens it and starts cutting it (fill writes the
// segments). It reports whether buf now holds a packet.
func (q *Queue) take(pkt *stack.PacketBuffer, buf []byte, size *int, offset int) bool {
	gso := pkt.GSOOptions
	isGSO := (gso.Type == stack.GSOTCPv4 || gso.Type == stack.GSOTCPv6) && gso.NeedsCsum
	dst := buf[offset:cap(buf)]
	if isGSO {
		dst = q.scratch
	}
	total := pkt.Size()
	if total > len(dst) {
		q.ep.st.tooBig.Add(1)
		return false
	}
	copyPacket(dst, pkt)
	if !isGSO {
		*size = total
		return true
	}
	if !q.cut.init(q.scratch[:total], int(gso.MSS)) {
		q.ep.st.malformed.Add(1)
		return false
	}
	q.ep.st.superSegments.Add(1)
	q.cutting = true
	d := buf[offset:cap(buf)]
	if q.cut.nextLen() > len(d) {
		q.ep.st.tooBig.Add(uint64(q.cut.remaining()))
		q.cutting = false
		return false
	}
	*size = q.cut.writeNext(d)
	if q.cut.remaining() == 0 {
		q.cutting = false
	}
	return true
}

// copyPacket copies the whole of pkt (headers and data) to dst, which must
// be large enough.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) {
	vl, skip := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(dst[n:], s[skip:])
		skip = 0
	}
}

// Write hands the packets bufs[i][offset:] to netstack. TCP segments of a
// flow that follow each other are coalesced first (GRO), so that netstack
// processes one large segment instead of many; ICMP echo requests go to
// the ping relay instead. Packets with a bad IP header or transport
// checksum are dropped (counted). It always reports every packet as written:
// packets netstack cannot use are counted and dropped.
func (q *Queue) Write(bufs [][]byte, offset int) (int, error) {
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
	for _, b := range bufs {
		if len(b) > offset {
			q.inject(b[offset:], false)
		}
	}
	q.gro.Flush()
	q.flushUDP()
	return len(bufs), nil
}

// flushUDP sends what the batch queued on fast-path UDP flows (q.wmu
// held).
func (q *Queue) flushUDP() {
	for i, fl := range q.udpFlows {
		fl.flush()
		q.udpFlows[i] = nil
	}
	q.udpFlows = q.udpFlows[:0]
}

// drain releases the packets left on the ring (after Close).
func (q *Queue) drain() {
	q.mu.Lock()
	ring := q.ring
	q.ring, q.n, q.head, q.bytes = nil, 0, 0, 0
	q.mu.Unlock()
	for _, p := range ring {
		if p != nil {
			p.DecRef()
		}
	}
}

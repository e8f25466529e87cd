package egress

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunrouter/router/packet"
)

// The UDP fast path. UDP needs nothing of a TCP/IP stack but its headers,
// so datagrams from inside bypass netstack: Queue.Write finds the flow by
// its key (creating it on its first datagram) and copies the payload to
// the flow's pending queue; when the write batch ends it sends each flow's
// datagrams without waiting (runs of equal size as one UDP_SEGMENT
// sendmsg, a whole USO super-datagram from the pipeline at once): no
// goroutine hand-over, and measured faster than a sender goroutine per
// flow on this design's two-core benchmark machine. The host's replies are wrapped in IP and UDP headers here and queued for
// the pipeline like netstack's packets. Flows keep conntrack's UDP
// timeouts, MaxFlows bounds them, and each holds at most udpPendingMax
// bytes of a batch (more are dropped, as a full socket buffer drops). Datagrams in fragments go through netstack, which reassembles
// them, and then join their flow (udpFromNetstack). Datagrams to host
// ports forwarded inside are the exception: they belong to netstack
// endpoints (see udpForward) and go there.

// udpPendingMax bounds the bytes a fast flow holds for sending.
const udpPendingMax = 1 << 20

// fastUDP is the fast path's flow table.
type fastUDP struct {
	mu    sync.RWMutex
	flows map[packet.FlowKey]*fastFlow
	// netstack lists the destinations (gateway address and port) of the
	// netstack endpoints of UDP port forwards: datagrams to them are
	// replies inside → host, for netstack.
	netstack map[netip.AddrPort]bool
	ipID     atomic.Uint32
}

// fastFlow is one UDP flow of the fast path.
type fastFlow struct {
	d        *Device
	key      packet.FlowKey
	src, dst netip.AddrPort // the client, and the destination it used
	conn     *net.UDPConn
	rc       syscall.RawConn

	// Pending payloads (end to end) of the current write batch, sent by
	// flush; mu guards them and the send state below.
	mu      sync.Mutex
	buf     []byte
	sizes   []int
	queued  bool // on a queue's list of flows to flush
	dropped uint64
	// The send in progress, for trySend (bound once: no allocation).
	sendFn  func(fd uintptr) bool
	sendBuf []byte
	sendOOB []byte
	sendErr error
	oob     [32]byte

	start   time.Time
	last    atomic.Int64
	replied atomic.Bool
	stop    chan struct{}
	once    sync.Once
}

// udpIn takes a UDP datagram from inside (p decoded, its checksum good)
// on the fast path, for sending when q's write batch ends (q.flushUDP);
// false means netstack handles it.
func (d *Device) udpIn(q *Queue, p *packet.Parsed) bool {
	if p.Proto != packet.UDP || p.Fragment || p.Err != packet.ErrNone {
		return false
	}
	f := &d.fast
	f.mu.RLock()
	fl := f.flows[p.Key]
	fwd := len(f.netstack) > 0 && f.netstack[netip.AddrPortFrom(p.DstAddr(), p.Key.DstPort)]
	f.mu.RUnlock()
	if fwd {
		return false
	}
	if fl == nil {
		fl = d.newFastFlow(p.Key, netip.AddrPortFrom(p.SrcAddr(), p.Key.SrcPort), netip.AddrPortFrom(p.DstAddr(), p.Key.DstPort))
		if fl == nil {
			return true // refused or over the limit: handled (dropped)
		}
	}
	if fl.add(p.Payload()) {
		q.udpFlows = append(q.udpFlows, fl)
	}
	return true
}

// udpFromNetstack is netstack's handler for UDP datagrams that match no
// endpoint: those the fast path let through because they came in
// fragments (netstack reassembled them). They join the fast path's flow.
func (d *Device) udpFromNetstack(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	src := addrPort(id.RemoteAddress, id.RemotePort)
	dst := addrPort(id.LocalAddress, id.LocalPort)
	key := packet.KeyFromAddrs(packet.UDP, src, dst)
	d.fast.mu.RLock()
	fl := d.fast.flows[key]
	d.fast.mu.RUnlock()
	if fl == nil {
		if fl = d.newFastFlow(key, src, dst); fl == nil {
			return true
		}
	}
	fl.add(pkt.Data().AsRange().ToSlice())
	fl.flush()
	return true
}

// newFastFlow opens the host socket of a new flow, or answers a refused
// destination with a port unreachable.
func (d *Device) newFastFlow(key packet.FlowKey, src, dst netip.AddrPort) *fastFlow {
	to, err := d.target(dst)
	if err != nil {
		d.st.udpRefused.Add(1)
		d.sendPortUnreachable(src, dst)
		return nil
	}
	f := &d.fast
	f.mu.Lock()
	if fl := f.flows[key]; fl != nil { // another queue was first
		f.mu.Unlock()
		return fl
	}
	if d.closing() || !d.acquire() {
		f.mu.Unlock()
		return nil
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		f.mu.Unlock()
		d.release()
		d.log.Debug("egress: udp socket failed", "to", to, "err", err)
		// Tell the client at once (a resolver then tries its next
		// server instead of waiting).
		d.sendUnreachable(src, dst, unreachableKind(err))
		return nil
	}
	c.SetReadBuffer(d.cfg.SocketBuffer)
	c.SetWriteBuffer(d.cfg.SocketBuffer)
	rc, err := c.SyscallConn()
	if err != nil {
		f.mu.Unlock()
		c.Close()
		d.release()
		return nil
	}
	fl := &fastFlow{d: d, key: key, src: src, dst: dst, conn: c, rc: rc, stop: make(chan struct{}), start: time.Now()}
	fl.sendFn = fl.trySend
	fl.touch()
	id, ok := d.register(fl.abort)
	if !ok {
		f.mu.Unlock()
		c.Close()
		d.release()
		return nil
	}
	if f.flows == nil {
		f.flows = map[packet.FlowKey]*fastFlow{}
	}
	f.flows[key] = fl
	f.mu.Unlock()
	d.st.udpFlows.Add(1)
	go fl.run(id)
	return fl
}

func (fl *fastFlow) touch() { fl.last.Store(time.Now().UnixNano()) }

// add queues a payload for the next flush; it reports whether the flow
// must be put on the caller's list of flows to flush.
func (fl *fastFlow) add(payload []byte) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if len(fl.buf)+len(payload) > udpPendingMax {
		fl.dropped++
		return false
	}
	fl.buf = append(fl.buf, payload...)
	fl.sizes = append(fl.sizes, len(payload))
	first := !fl.queued
	fl.queued = true
	return first
}

// flush sends the pending payloads without waiting: runs of equal size
// as one sendmsg with UDP_SEGMENT, the others singly; what the socket
// cannot take at once is lost, as UDP does.
func (fl *fastFlow) flush() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.queued = false
	if len(fl.sizes) == 0 {
		return
	}
	fl.touch()
	d := fl.d
	sent, refused := d.sendBatch(fl.buf, fl.sizes, &fl.oob, fl.send)
	d.st.bytesToHost.Add(uint64(sent))
	fl.buf, fl.sizes = fl.buf[:0], fl.sizes[:0]
	if refused {
		// The host reported the port closed (an ICMP error this
		// send collected): tell the client.
		d.sendPortUnreachable(fl.src, fl.dst)
	}
}

// send is sendBatch's way out for the flow: one non-blocking sendmsg.
func (fl *fastFlow) send(data, oob []byte) error {
	fl.sendBuf, fl.sendOOB, fl.sendErr = data, oob, nil
	if err := fl.rc.Write(fl.sendFn); err != nil {
		return err
	}
	fl.sendBuf, fl.sendOOB = nil, nil
	return fl.sendErr
}

func (fl *fastFlow) trySend(fd uintptr) bool {
	_, fl.sendErr = unix.SendmsgN(int(fd), fl.sendBuf, fl.sendOOB, nil, unix.MSG_DONTWAIT)
	return true // never wait: a full socket drops, as UDP does
}

func (fl *fastFlow) abort() {
	fl.once.Do(func() {
		close(fl.stop)
		fl.conn.Close()
	})
}

// timeout is the idle time after which the flow ends, by conntrack's rule:
// the stream timeout once replies were seen and the flow outlived the
// first two seconds, the short one otherwise.
func (fl *fastFlow) timeout() time.Duration {
	if fl.replied.Load() && time.Unix(0, fl.last.Load()).Sub(fl.start) > streamAfter {
		return fl.d.cfg.UDPStreamTimeout
	}
	return fl.d.cfg.UDPTimeout
}

// run receives the flow's replies and times it out; then it leaves the
// table.
func (fl *fastFlow) run(id uint64) {
	d := fl.d
	defer d.unregister(id)
	defer d.release()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fl.receiver()
		fl.abort()
	}()
	t := time.NewTimer(d.cfg.UDPTimeout)
loop:
	for {
		select {
		case <-t.C:
			idle := time.Duration(time.Now().UnixNano() - fl.last.Load())
			to := fl.timeout()
			if idle >= to {
				fl.abort()
				break loop
			}
			t.Reset(to - idle)
		case <-fl.stop:
			t.Stop()
			break loop
		}
	}
	// Leave the table first: a datagram arriving now opens a new flow.
	d.fast.mu.Lock()
	if d.fast.flows[fl.key] == fl {
		delete(d.fast.flows, fl.key)
	}
	d.fast.mu.Unlock()
	<-done
}

// receiver wraps the host's replies and queues them for the pipeline; a
// port unreachable becomes one for the client.
func (fl *fastFlow) receiver() {
	rc, err := fl.conn.SyscallConn()
	if err != nil {
		return
	}
	out := make([]byte, 0, fl.d.cfg.MTU)
	for {
		buf, n, rerr := readHeld(rc)
		if rerr == nil && buf != nil {
			fl.replied.Store(true)
			fl.touch()
			fl.d.sendUDP(fl.dst, fl.src, buf[:n], &out)
			relayBufs.Put(buf)
			fl.d.st.bytesFromHost.Add(uint64(n))
			continue
		}
		if buf != nil {
			relayBufs.Put(buf)
		}
		if errors.Is(rerr, syscall.ECONNREFUSED) {
			fl.d.sendPortUnreachable(fl.src, fl.dst)
			fl.touch()
			continue
		}
		return
	}
}

// sendUDP queues a datagram from `from` to `to` for the pipeline, as IPv4
// fragments or IPv6 fragments when it does not fit the MTU. scratch is
// the caller's reusable buffer.
func (d *Device) sendUDP(from, to netip.AddrPort, payload []byte, scratch *[]byte) {
	v4 := from.Addr().Is4()
	ipLen := 40
	if v4 {
		ipLen = 20
	}
	udpLen := 8 + len(payload)
	if udpLen > 65535 || v4 && ipLen+udpLen > 65535 {
		return
	}
	b := append((*scratch)[:0], make([]byte, ipLen+8)...)
	b = append(b, payload...)
	*scratch = b
	var src, dst [16]byte
	if v4 {
		s, t := from.Addr().As4(), to.Addr().As4()
		copy(src[:], s[:])
		copy(dst[:], t[:])
		b[0], b[8], b[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], uint16(d.fast.ipID.Add(1)))
		copy(b[12:16], s[:])
		copy(b[16:20], t[:])
		packet.SetIPv4Checksum(b)
	} else {
		src, dst = from.Addr().As16(), to.Addr().As16()
		b[0], b[6], b[7] = 0x60, 17, 64
		binary.BigEndian.PutUint16(b[4:], uint16(udpLen))
		copy(b[8:24], src[:])
		copy(b[24:40], dst[:])
	}
	u := b[ipLen:]
	binary.BigEndian.PutUint16(u[0:], from.Port())
	binary.BigEndian.PutUint16(u[2:], to.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	fam := uint8(6)
	if v4 {
		fam = 4
	}
	c := ^packet.Checksum(u, packet.PseudoHeaderSum(fam, &src, &dst, packet.UDP, udpLen))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	if v4 || len(b) <= d.cfg.MTU {
		// IPv4 datagrams larger than the MTU are fragmented by the
		// pipeline on their way out.
		d.sendRaw(b)
		return
	}
	d.sendFragments6(b)
}

// sendFragments6 cuts an IPv6 packet without extension headers into
// fragments that fit the MTU (RFC 8200 section 4.5) and queues them.
func (d *Device) sendFragments6(b []byte) {
	id := d.fast.ipID.Add(1)
	payload := b[40:]
	chunk := (d.cfg.MTU - 40 - 8) &^ 7
	if chunk <= 0 {
		return
	}
	frag := make([]byte, 0, d.cfg.MTU)
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		frag = append(frag[:0], b[:40]...)
		frag[6] = 44 // fragment header
		binary.BigEndian.PutUint16(frag[4:], uint16(8+end-off))
		var fh [8]byte
		fh[0] = 17
		m := uint16(off)
		if end < len(payload) {
			m |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], m)
		binary.BigEndian.PutUint32(fh[4:], id)
		frag = append(frag, fh[:]...)
		frag = append(frag, payload[off:end]...)
		d.sendRaw(frag)
	}
}

// udpNetstack marks a destination (a UDP port forward's netstack
// endpoint) whose datagrams from inside go to netstack.
func (d *Device) udpNetstack(dst netip.AddrPort, on bool) {
	d.fast.mu.Lock()
	defer d.fast.mu.Unlock()
	if d.fast.netstack == nil {
		d.fast.netstack = map[netip.AddrPort]bool{}
	}
	if on {
		d.fast.netstack[dst] = true
	} else {
		delete(d.fast.netstack, dst)
	}
}

// streamAfter is how long after its first datagram a UDP flow that has
// seen replies must still be active to get the stream timeout (conntrack
// marks such a flow ASSURED).
const streamAfter = 2 * time.Second

// udpBatchMax is the most datagrams toHost takes at once (the kernel's
// UDP_MAX_SEGMENTS is at least 64).
const udpBatchMax = 64

// udpGSOMax is the most payload one UDP_SEGMENT send may carry.
const udpGSOMax = 65535 - 8 - 40

// sendBatch sends datagrams (laid end to end in buf, their sizes in
// sizes) through send: runs of the same size (plus one shorter last one)
// in one message with UDP_SEGMENT when the host allows it, the others one
// per message. It returns the payload bytes sent and whether the host
// reported the destination port closed. scratch holds the control
// message.
func (d *Device) sendBatch(buf []byte, sizes []int, scratch *[32]byte, send func(data, oob []byte) error) (int, bool) {
	sent := 0
	off := 0
	refused := false
	for i := 0; i < len(sizes); {
		size := sizes[i]
		j, total := i+1, size
		if size > 0 && !d.noUDPGSO.Load() {
			for j < len(sizes) && j-i < udpBatchMax && sizes[j] <= size && total+sizes[j] <= udpGSOMax {
				total += sizes[j]
				j++
				if sizes[j-1] < size {
					break // a shorter datagram ends the run
				}
			}
		}
		data := buf[off : off+total]
		var err error
		if j-i > 1 {
			err = send(data, udpSegmentCmsg(scratch[:0], size))
			if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) {
				// No UDP segmentation offload here: one by one.
				d.noUDPGSO.Store(true)
				d.log.Debug("egress: UDP segmentation offload unavailable, sending datagrams singly", "err", err)
				j, total, data = i+1, size, data[:size]
				err = send(data, nil)
			}
		} else {
			err = send(data, nil)
		}
		switch {
		case err == nil:
			sent += total
		case errors.Is(err, unix.ECONNREFUSED):
			refused = true
		}
		// Other errors (a full socket, a closed flow) lose the
		// datagrams, as UDP does.
		off += total
		i = j
	}
	return sent, refused
}

// udpSegmentCmsg appends a UDP_SEGMENT control message for segments of
// size bytes.
func udpSegmentCmsg(b []byte, size int) []byte {
	space := unix.CmsgSpace(2)
	b = b[:space]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = uint16(size)
	return b
}

// unreachKind is the kind of destination unreachable the egress reports.
type unreachKind uint8

const (
	unreachPort unreachKind = iota
	unreachNet
	unreachHost
	unreachAdmin
)

// unreachableKind maps the error of a host socket to what the client is
// told.
func unreachableKind(err error) unreachKind {
	switch {
	case errors.Is(err, unix.ENETUNREACH):
		return unreachNet
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return unreachAdmin
	}
	return unreachHost
}

// sendPortUnreachable sends the client an ICMP port unreachable from dst
// about a datagram it sent from src to dst.
func (d *Device) sendPortUnreachable(src, dst netip.AddrPort) {
	d.sendUnreachable(src, dst, unreachPort)
}

// sendUnreachable sends the client an ICMP destination unreachable of the
// kind about a datagram it sent from src to dst (from dst itself for a
// refused port, else from the gateway of its family, as a router would;
// the quoted datagram is rebuilt from the addresses: its payload is not
// kept).
func (d *Device) sendUnreachable(src, dst netip.AddrPort, kind unreachKind) {
	var orig [48]byte
	var o []byte
	if src.Addr().Is4() {
		o = orig[:28]
		o[0], o[8], o[9] = 0x45, 64, 17
		o[2], o[3] = 0, 28
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(o[12:], s4[:])
		copy(o[16:], d4[:])
		packet.SetIPv4Checksum(o)
		putPorts(o[20:], src.Port(), dst.Port())
	} else {
		o = orig[:48]
		o[0], o[5], o[6], o[7] = 0x60, 8, 17, 64
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		copy(o[8:], s16[:])
		copy(o[24:], d16[:])
		putPorts(o[40:], src.Port(), dst.Port())
	}
	var p packet.Parsed
	p.Decode(o)
	v4 := src.Addr().Is4()
	typ, code := uint8(packet.ICMPDestUnreachable), uint8(packet.ICMPPortUnreachable)
	if !v4 {
		typ, code = packet.ICMPv6DestUnreachable, packet.ICMPv6PortUnreachable
	}
	pick := func(c4, c6 uint8) uint8 {
		if v4 {
			return c4
		}
		return c6
	}
	switch kind {
	case unreachNet:
		code = pick(packet.ICMPNetUnreachable, packet.ICMPv6NoRoute)
	case unreachHost:
		code = pick(packet.ICMPHostUnreachable, packet.ICMPv6AddrUnreachable)
	case unreachAdmin:
		code = pick(packet.ICMPAdminProhibited, packet.ICMPv6AdminProhibited)
	}
	sender := dst.Addr()
	if kind != unreachPort {
		if gw := gatewayOf(d.cfg.Gateways, v4); gw.IsValid() {
			sender = gw
		}
	}
	var scratch [160]byte
	var from [16]byte
	if sender.Is4() {
		a := sender.As4()
		copy(from[:], a[:])
	} else {
		from = sender.As16()
	}
	msg, ok := packet.AppendICMPError(scratch[:0], &p, typ, code, 0, from)
	if !ok {
		return
	}
	d.st.udpICMPSent.Add(1)
	d.sendRaw(msg)
}

// putPorts writes a UDP header with the ports and a length of 8.
func putPorts(b []byte, sport, dport uint16) {
	b[0], b[1] = byte(sport>>8), byte(sport)
	b[2], b[3] = byte(dport>>8), byte(dport)
	b[4], b[5] = 0, 8
	b[6], b[7] = 0, 0
}

// sendRaw queues a packet the egress built itself (an ICMP message) for
// the pipeline, as if netstack had sent it.
func (d *Device) sendRaw(b []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	d.ep.enqueue(pkt)
	pkt.DecRef()
}

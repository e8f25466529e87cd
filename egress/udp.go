package egress

import (
	"bytes"
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
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tunrouter/router/packet"
)

// streamAfter is how long after its first datagram a UDP flow that has
// seen replies must still be active to get the stream timeout (conntrack
// marks such a flow ASSURED).
const streamAfter = 2 * time.Second

// handleUDP is netstack's UDP forwarder callback, called for a datagram
// that belongs to no flow yet. It must not block: the relay runs on its
// own goroutine. Refused destinations get an ICMP port unreachable.
func (d *Device) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	src := addrPort(id.RemoteAddress, id.RemotePort)
	to, err := d.target(dst)
	if err != nil {
		d.st.udpRefused.Add(1)
		return false
	}
	if d.closing() || !d.acquire() {
		return true
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		d.release()
		return true
	}
	d.st.udpFlows.Add(1)
	f := &udpFlow{d: d, ep: ep, wq: &wq, src: src, dst: dst, stop: make(chan struct{})}
	id2, ok := d.register(f.abort)
	if !ok {
		ep.Close()
		d.release()
		return true
	}
	go func() {
		defer d.unregister(id2)
		defer d.release()
		f.run(to)
	}()
	return true
}

// udpFlow relays one UDP flow between a netstack endpoint connected to the
// client and a connected host socket.
type udpFlow struct {
	d        *Device
	ep       tcpip.Endpoint
	wq       *waiter.Queue
	src, dst netip.AddrPort // the client, and the destination it used
	conn     *net.UDPConn

	start   time.Time
	last    atomic.Int64 // Unix nanoseconds of the last datagram
	replied atomic.Bool
	stop    chan struct{}
	once    sync.Once
	connMu  sync.Mutex
	oob     [32]byte // toHost's control message
}

func (f *udpFlow) touch() { f.last.Store(time.Now().UnixNano()) }

func (f *udpFlow) abort() {
	f.once.Do(func() {
		close(f.stop)
		f.connMu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.connMu.Unlock()
		f.ep.Close()
	})
}

// timeout is the idle time after which the flow ends, by conntrack's rule:
// the stream timeout once replies were seen and the flow outlived the
// first two seconds, the short one otherwise.
func (f *udpFlow) timeout() time.Duration {
	if f.replied.Load() && time.Unix(0, f.last.Load()).Sub(f.start) > streamAfter {
		return f.d.cfg.UDPStreamTimeout
	}
	return f.d.cfg.UDPTimeout
}

func (f *udpFlow) run(to netip.AddrPort) {
	f.start = time.Now()
	f.touch()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		f.d.log.Debug("egress: udp socket failed", "to", to, "err", err)
		f.abort()
		return
	}
	c.SetReadBuffer(f.d.cfg.SocketBuffer)
	c.SetWriteBuffer(f.d.cfg.SocketBuffer)
	f.connMu.Lock()
	f.conn = c
	f.connMu.Unlock()
	select {
	case <-f.stop: // aborted before the socket existed
		c.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		f.toHost()
		f.abort()
	}()
	go func() {
		defer wg.Done()
		f.fromHost()
		f.abort()
	}()
	// The idle timer.
	t := time.NewTimer(f.d.cfg.UDPTimeout)
loop:
	for {
		select {
		case <-t.C:
			idle := time.Duration(time.Now().UnixNano() - f.last.Load())
			to := f.timeout()
			if idle >= to {
				f.abort()
				break loop
			}
			t.Reset(to - idle)
		case <-f.stop:
			t.Stop()
			break loop
		}
	}
	wg.Wait()
}

// toHost sends the client's datagrams through the host socket. Whatever
// netstack has queued is taken at once (up to udpBatch datagrams), and runs
// of equal-sized datagrams go out in one sendmsg with UDP segmentation
// offload (UDP_SEGMENT): the host's stack then handles them as one packet
// until it delivers them.
func (f *udpFlow) toHost() {
	we, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&we)
	defer f.wq.EventUnregister(&we)
	var b udpBatch
	for {
		big := bigBufs.Get().(*[2 * relayBufSize]byte)
		b.reset(big[:])
		var err tcpip.Error
		for b.n < udpBatchMax && b.used <= relayBufSize {
			w := tcpip.SliceWriter(b.buf[b.used:])
			var res tcpip.ReadResult
			res, err = f.ep.Read(&w, tcpip.ReadOptions{})
			if err != nil {
				break
			}
			b.add(res.Count)
		}
		if b.n > 0 {
			f.touch()
			sent, closed := f.d.sendBatch(f.conn, &b, &f.oob)
			f.d.st.bytesToHost.Add(uint64(sent))
			if closed {
				bigBufs.Put(big)
				return
			}
		}
		bigBufs.Put(big)
		if err == nil {
			continue // the batch was full
		}
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok {
			return
		}
		select {
		case <-notify:
		case <-f.stop:
			return
		}
	}
}

// udpBatchMax is the most datagrams toHost takes at once (the kernel's
// UDP_MAX_SEGMENTS is at least 64).
const udpBatchMax = 64

// bigBufs hold a batch of datagrams: there is always room for one more of
// the largest size while the batch holds less than relayBufSize bytes.
var bigBufs = sync.Pool{New: func() any { return new([2 * relayBufSize]byte) }}

// udpBatch is datagrams laid end to end in buf.
type udpBatch struct {
	buf   []byte
	used  int
	n     int
	sizes [udpBatchMax]int
}

func (b *udpBatch) reset(buf []byte) { b.buf, b.used, b.n = buf, 0, 0 }

func (b *udpBatch) add(size int) {
	b.sizes[b.n] = size
	b.n++
	b.used += size
}

// udpGSOMax is the most payload one UDP_SEGMENT send may carry.
const udpGSOMax = 65535 - 8 - 40

// sendBatch sends the datagrams of b on c: runs of the same size (plus one
// shorter last one) in one sendmsg with UDP_SEGMENT when the host allows
// it, single datagrams with write. It returns the payload bytes sent and
// whether c is closed. scratch holds the control message.
func (d *Device) sendBatch(c *net.UDPConn, b *udpBatch, scratch *[32]byte) (int, bool) {
	sent := 0
	off := 0
	for i := 0; i < b.n; {
		size := b.sizes[i]
		j, total := i+1, size
		if size > 0 && !d.noUDPGSO.Load() {
			for j < b.n && j-i < udpBatchMax && b.sizes[j] <= size && total+b.sizes[j] <= udpGSOMax {
				total += b.sizes[j]
				j++
				if b.sizes[j-1] < size {
					break // a shorter datagram ends the run
				}
			}
		}
		data := b.buf[off : off+total]
		var err error
		if j-i > 1 {
			oob := udpSegmentCmsg(scratch[:0], size)
			_, _, err = c.WriteMsgUDP(data, oob, nil)
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNREFUSED) {
				// No UDP segmentation offload here: send them one by one.
				d.noUDPGSO.Store(true)
				d.log.Debug("egress: UDP segmentation offload unavailable, sending datagrams singly", "err", err)
				j = i + 1
				total = size
				data = data[:size]
				_, err = c.Write(data)
			}
		} else {
			_, err = c.Write(data)
		}
		if errors.Is(err, net.ErrClosed) {
			return sent, true
		}
		if err == nil {
			sent += total
		}
		// Other errors (a refused port reported by an earlier ICMP) lose
		// the datagrams, as UDP does.
		off += total
		i = j
	}
	return sent, false
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

// fromHost passes the host's replies to the client; a port unreachable the
// host socket reports goes to the client as one.
func (f *udpFlow) fromHost() {
	rc, err := f.conn.SyscallConn()
	if err != nil {
		return
	}
	for {
		buf, n, rerr := readHeld(rc)
		if rerr == nil && buf != nil {
			_, werr := f.ep.Write(bytes.NewReader(buf[:n]), tcpip.WriteOptions{})
			relayBufs.Put(buf)
			f.replied.Store(true)
			f.touch()
			if werr == nil {
				f.d.st.bytesFromHost.Add(uint64(n))
			}
			continue
		}
		if buf != nil {
			relayBufs.Put(buf)
		}
		if errors.Is(rerr, syscall.ECONNREFUSED) {
			f.d.sendPortUnreachable(f.src, f.dst)
			f.touch()
			continue
		}
		return
	}
}

// sendPortUnreachable sends the client an ICMP port unreachable from dst
// about a datagram it sent from src to dst (the quoted datagram is
// rebuilt from the addresses: its payload is not kept).
func (d *Device) sendPortUnreachable(src, dst netip.AddrPort) {
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
	typ, code := uint8(packet.ICMPDestUnreachable), uint8(packet.ICMPPortUnreachable)
	if src.Addr().Is6() {
		typ, code = packet.ICMPv6DestUnreachable, packet.ICMPv6PortUnreachable
	}
	var scratch [160]byte
	var from [16]byte
	if dst.Addr().Is4() {
		a := dst.Addr().As4()
		copy(from[:], a[:])
	} else {
		from = dst.Addr().As16()
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

package inprocess

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// host is one gVisor netstack host: its sockets (net) and the device that
// connects it to a pipeline port (dev).
type host struct {
	name  string
	net   *netstack.Net
	dev   *hostDev
	addrs []netip.Addr
}

// newHost creates a netstack host with the given addresses. The caller
// closes it (rig does, after quiescing).
func newHost(t testing.TB, name string, mtu int, addrs ...string) *host {
	t.Helper()
	h := &host{name: name}
	for _, a := range addrs {
		h.addrs = append(h.addrs, netip.MustParseAddr(a))
	}
	dev, tnet, err := netstack.CreateNetTUN(h.addrs, nil, mtu)
	if err != nil {
		t.Fatalf("netstack host %s: %v", name, err)
	}
	h.net = tnet
	h.dev = newHostDev(dev, mtu, 16)
	return h
}

// addr returns the host's first address of the family (4 or 6).
func (h *host) addr(family int) netip.Addr {
	for _, a := range h.addrs {
		if (family == 4) == a.Is4() {
			return a
		}
	}
	panic("host " + h.name + " has no address of that family")
}

// hostDev adapts a netstack tun.Device to pipeline.Device.
//
// Why not hand the netstack device to the pipeline directly:
//
//   - Its Read blocks until the stack sends a packet and only Close ends
//     it, so Pipeline.Close could not stop the readers while the hosts
//     live on. hostDev implements pipeline.ReadInterrupter instead, as the
//     product's TUN devices do.
//   - Its Close races with packets the stack is sending at that moment
//     (WriteNotify sends on a channel that Close closes: a data race, or a
//     "send on closed channel" panic; wireguard-go has no fix for it yet).
//     A pump goroutine therefore drains the stack all the time, also while
//     the device is closed, and records every packet under mu; close
//     happens only once the stacks are quiet and after taking mu, so every
//     send the stack made is ordered before the channel is closed.
//   - Its BatchSize is 1; hostDev returns up to batch packets per Read, so
//     the pipeline's batch paths run.
//   - Nothing would hold packets back when the workers fall behind (they
//     do under the race detector): the readers would drop them (worker
//     queue full), and netstack's TCP sender sometimes stalls for many
//     seconds after such losses (gVisor issue 6113: RACK with a tiny RTT).
//     hostDev takes a credit from gate for every packet it hands to the
//     pipeline and the tracer returns it when a worker has handled the
//     packet, so at most cap(gate) packets are inside the pipeline, no
//     more than a worker queue holds batches: no worker queue overflows,
//     and the pump's deep queue absorbs the bursts instead. (A fragment
//     the pipeline holds for reassembly keeps its credit; the tests send
//     none.) The tests check forwarding; the pipeline's own tests cover
//     its queue-full drops.
type hostDev struct {
	tun   tun.Device
	mtu   int
	batch int

	ready chan []byte // packets the stack sent, for Read
	free  chan []byte // spare pump buffers
	// gate holds the credits for packets inside the pipeline, shared by
	// the devices of a rig (nil: no limit).
	gate chan struct{}

	intrMu sync.Mutex
	intr   chan struct{} // closed by InterruptRead

	pumpDone chan struct{}

	// mu is taken by the pump after each packet it receives from the
	// stack (see close).
	mu        sync.Mutex
	fromStack uint64    // packets the stack sent
	lastFrom  time.Time // when the last one came
	overflow  uint64    // packets dropped because nobody read them

	// sealed is set by a test when the pipeline must not write any more;
	// writes after it are counted in late.
	sealed atomic.Bool
	late   atomic.Uint64
}

func newHostDev(dev tun.Device, mtu, batch int) *hostDev {
	d := &hostDev{
		tun:      dev,
		mtu:      mtu,
		batch:    batch,
		ready:    make(chan []byte, 4096),
		free:     make(chan []byte, 1024),
		intr:     make(chan struct{}),
		pumpDone: make(chan struct{}),
	}
	go d.pump()
	return d
}

// pump moves the stack's packets to ready until the device is closed.
// When nobody reads (no pipeline running), they are dropped as a full
// device queue would drop them.
func (d *hostDev) pump() {
	defer close(d.pumpDone)
	bufs := [][]byte{nil}
	sizes := []int{0}
	for {
		var buf []byte
		select {
		case buf = <-d.free:
		default:
			buf = make([]byte, d.mtu+64)
		}
		bufs[0] = buf[:cap(buf)]
		if _, err := d.tun.Read(bufs, sizes, 0); err != nil {
			return // closed
		}
		d.mu.Lock()
		d.fromStack++
		d.lastFrom = time.Now()
		d.mu.Unlock()
		select {
		case d.ready <- buf[:sizes[0]]:
		default:
			d.mu.Lock()
			d.overflow++
			d.mu.Unlock()
			d.recycle(buf)
		}
	}
}

func (d *hostDev) recycle(b []byte) {
	select {
	case d.free <- b[:cap(b)]:
	default:
	}
}

// Read returns up to batch packets the stack sent; it blocks until there
// is one (and a credit for it) or InterruptRead is called.
func (d *hostDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.intrMu.Lock()
	intr := d.intr
	d.intrMu.Unlock()
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-intr:
			return 0, os.ErrDeadlineExceeded
		}
	}
	var pkt []byte
	select {
	case pkt = <-d.ready:
	case <-intr:
		d.credit()
		return 0, os.ErrDeadlineExceeded
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		d.recycle(pkt)
		n++
		if n == len(bufs) || n == d.batch || !d.takeCredit() {
			return n, nil
		}
		select {
		case pkt = <-d.ready:
		default:
			d.credit()
			return n, nil
		}
	}
}

// takeCredit takes a credit if one is free.
func (d *hostDev) takeCredit() bool {
	if d.gate == nil {
		return true
	}
	select {
	case <-d.gate:
		return true
	default:
		return false
	}
}

// credit returns a credit.
func (d *hostDev) credit() {
	if d.gate == nil {
		return
	}
	select {
	case d.gate <- struct{}{}:
	default:
	}
}

// Write hands the packets to the stack (which copies them).
func (d *hostDev) Write(bufs [][]byte, offset int) (int, error) {
	if d.sealed.Load() {
		d.late.Add(uint64(len(bufs)))
	}
	return d.tun.Write(bufs, offset)
}

// BatchSize is the most packets one Read returns.
func (d *hostDev) BatchSize() int { return d.batch }

// InterruptRead makes blocked and future Reads return an error until
// resume is called (pipeline.ReadInterrupter).
func (d *hostDev) InterruptRead() error {
	d.intrMu.Lock()
	defer d.intrMu.Unlock()
	select {
	case <-d.intr:
	default:
		close(d.intr)
	}
	return nil
}

// resume re-arms Read after InterruptRead, for a new pipeline.
func (d *hostDev) resume() {
	d.intrMu.Lock()
	defer d.intrMu.Unlock()
	select {
	case <-d.intr:
		d.intr = make(chan struct{})
	default:
	}
}

// activity returns how many packets the stack sent, how many of them the
// pump dropped because nobody read them, and when the last one came.
func (d *hostDev) activity() (sent, dropped uint64, last time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fromStack, d.overflow, d.lastFrom
}

// close closes the netstack device (and its stack) and waits for the pump
// to stop. Call it when the stack has been quiet for a while (see
// rig.quiesce), so that no send is under way.
func (d *hostDev) close() {
	// Taking mu acquires what the pump released after each packet it
	// received: every send the stack made so far happens before the close
	// of the channel inside tun.Close.
	d.activity()
	d.tun.Close()
	<-d.pumpDone
}

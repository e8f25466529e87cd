package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// relayBufSize is the size of the buffers that carry data between a host
// socket and netstack. A flow holds one only while data moves: waiting
// for data costs no buffer.
const relayBufSize = 64 << 10

var relayBufs = sync.Pool{New: func() any { return new([relayBufSize]byte) }}

// handleTCP is netstack's TCP forwarder callback, run on its own goroutine
// for each new connection from inside: it connects to the mapped host
// address first and completes the client's handshake only if that worked
// (a reset otherwise), then relays until both sides are done.
func (d *Device) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	to, err := d.target(dst)
	if err != nil {
		d.st.tcpRefused.Add(1)
		r.Complete(true)
		return
	}
	if !d.enter() {
		r.Complete(true)
		return
	}
	defer d.exit()
	if !d.acquire() {
		r.Complete(true)
		return
	}
	c, err := d.dialTCP(to)
	if err != nil {
		d.release()
		d.st.tcpDialFailed.Add(1)
		d.log.Debug("egress: tcp dial failed", "from", addrPort(id.RemoteAddress, id.RemotePort), "to", dst, "host", to, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The client gave up (or sent a reset) while we dialled, or
		// the device is closing.
		r.Complete(true)
		c.SetLinger(0)
		c.Close()
		d.release()
		return
	}
	r.Complete(false)
	d.st.tcpFlows.Add(1)
	d.relayTCP(ep, &wq, c)
}

// dialTCP connects to a host address, bounded by DialTimeout and by Close.
func (d *Device) dialTCP(to netip.AddrPort) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.DialTimeout)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// tcpFlow relays one TCP connection between a netstack endpoint (the
// client inside) and a host socket.
type tcpFlow struct {
	d    *Device
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	conn *net.TCPConn

	last    atomic.Int64 // time of the last data, Unix nanoseconds
	aborted atomic.Bool
	stop    chan struct{} // closed by abort
	once    sync.Once
	timer   *time.Timer // half-closed idle timer
	timerMu sync.Mutex
}

// relayTCP runs a flow until both directions have ended, then releases
// its slot.
func (d *Device) relayTCP(ep tcpip.Endpoint, wq *waiter.Queue, c *net.TCPConn) {
	f := &tcpFlow{d: d, ep: ep, wq: wq, conn: c, stop: make(chan struct{})}
	f.touch()
	defer d.release()
	id, ok := d.register(f.abort)
	if !ok {
		f.abort()
		f.finish()
		return
	}
	defer d.unregister(id)
	toHost := make(chan struct{})
	go func() {
		defer close(toHost)
		f.toHost()
	}()
	f.fromHost()
	<-toHost
	f.finish()
}

func (f *tcpFlow) touch() { f.last.Store(time.Now().UnixNano()) }

// finish releases both sides after the two directions have ended. An
// abort in progress completes first (its resets must not turn into plain
// closes); a later one does nothing.
func (f *tcpFlow) finish() {
	f.once.Do(func() {})
	f.timerMu.Lock()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.timerMu.Unlock()
	f.conn.Close()
	f.ep.Close()
}

// abort resets both sides: the client and the host server each get a
// reset. Both directions then end.
func (f *tcpFlow) abort() {
	f.once.Do(func() {
		f.aborted.Store(true)
		f.resetInside()
		f.resetHost()
		close(f.stop)
	})
}

func (f *tcpFlow) resetHost() {
	f.conn.SetLinger(0)
	f.conn.Close()
}

func (f *tcpFlow) resetInside() {
	f.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	f.ep.Close()
}

// halfClosed starts the idle timer once one direction has ended normally:
// if no data moves for TCPHalfClosedTimeout, the flow is reset.
func (f *tcpFlow) halfClosed() {
	timeout := f.d.cfg.TCPHalfClosedTimeout
	f.timerMu.Lock()
	defer f.timerMu.Unlock()
	if f.timer != nil {
		return
	}
	var check func()
	check = func() {
		idle := time.Duration(time.Now().UnixNano() - f.last.Load())
		if idle >= timeout {
			f.d.log.Debug("egress: half-closed tcp flow idle, resetting", "idle", idle)
			f.abort()
			return
		}
		f.timerMu.Lock()
		f.timer.Reset(timeout - idle)
		f.timerMu.Unlock()
	}
	f.timer = time.AfterFunc(timeout, check)
}

// toHost copies what the client sends to the host socket. The client's
// FIN becomes a half-close of the host socket, its reset a reset of the
// host connection; a host socket that fails resets the client.
func (f *tcpFlow) toHost() {
	we, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&we)
	defer f.wq.EventUnregister(&we)
	for {
		buf := relayBufs.Get().(*[relayBufSize]byte)
		w := tcpip.SliceWriter(buf[:])
		res, err := f.ep.Read(&w, tcpip.ReadOptions{})
		if err == nil && res.Count > 0 {
			_, werr := f.conn.Write(buf[:res.Count])
			relayBufs.Put(buf)
			if werr != nil {
				if !f.aborted.Load() {
					// The host side is gone: reset the client.
					f.d.st.tcpResets.Add(1)
					f.abort()
				}
				return
			}
			f.d.st.bytesToHost.Add(uint64(res.Count))
			f.touch()
			continue
		}
		relayBufs.Put(buf)
		if f.aborted.Load() {
			return
		}
		switch err.(type) {
		case *tcpip.ErrWouldBlock:
			select {
			case <-notify:
			case <-f.stop:
				return
			}
		case *tcpip.ErrClosedForReceive:
			// The client's FIN: pass the half-close on.
			f.conn.CloseWrite()
			f.halfClosed()
			return
		case *tcpip.ErrConnectionReset, *tcpip.ErrConnectionAborted:
			f.d.st.tcpResets.Add(1)
			f.abort()
			return
		default:
			f.abort()
			return
		}
	}
}

// fromHost copies what the host server sends into netstack. The server's
// FIN becomes a FIN to the client, its reset a reset of the client.
func (f *tcpFlow) fromHost() {
	rc, err := f.conn.SyscallConn()
	if err != nil {
		f.abort()
		return
	}
	we, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&we)
	defer f.wq.EventUnregister(&we)
	for {
		buf, n, rerr := readHeld(rc)
		if n > 0 {
			werr := f.writeInside(buf[:n], notify)
			relayBufs.Put(buf)
			if werr != nil {
				if !f.aborted.Load() {
					f.d.st.tcpResets.Add(1)
					f.abort()
				}
				return
			}
			f.d.st.bytesFromHost.Add(uint64(n))
			f.touch()
			continue
		}
		if buf != nil {
			relayBufs.Put(buf)
		}
		if f.aborted.Load() {
			return
		}
		switch {
		case rerr == nil || errors.Is(rerr, io.EOF):
			// The server's FIN.
			f.ep.Shutdown(tcpip.ShutdownWrite)
			f.halfClosed()
			return
		case errors.Is(rerr, syscall.ECONNRESET):
			f.d.st.tcpResets.Add(1)
			f.abort()
			return
		default:
			f.abort()
			return
		}
	}
}

// readHeld reads from a host socket into a pooled buffer that it takes only
// once the socket is readable, so that a flow waiting for data holds no
// buffer. n == 0 with a nil error is the end of the stream.
func readHeld(rc syscall.RawConn) (*[relayBufSize]byte, int, error) {
	var buf *[relayBufSize]byte
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		buf = relayBufs.Get().(*[relayBufSize]byte)
		for {
			n, rerr = unix.Read(int(fd), buf[:])
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			relayBufs.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	if err != nil {
		return buf, 0, err
	}
	if rerr != nil {
		return buf, 0, rerr
	}
	if n < 0 {
		n = 0
	}
	return buf, n, nil
}

// writeInside writes b into netstack, waiting for send-buffer space.
func (f *tcpFlow) writeInside(b []byte, notify <-chan struct{}) error {
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		_, err := f.ep.Write(r, tcpip.WriteOptions{})
		switch err.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			select {
			case <-notify:
			case <-f.stop:
				return net.ErrClosed
			}
		default:
			return errors.New(err.String())
		}
	}
	return nil
}

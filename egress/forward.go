package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// startForwards opens the port-forward listeners and starts serving them.
func (d *Device) startForwards() error {
	for _, fw := range d.cfg.Forwards {
		switch fw.Proto {
		case "tcp":
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(fw.Host))
			if err != nil {
				return fmt.Errorf("egress: forward tcp %v -> %v: %w", fw.Host, fw.Inside, err)
			}
			id, ok := d.register(func() { ln.Close() })
			if !ok {
				ln.Close()
				return net.ErrClosed
			}
			go func() {
				defer d.unregister(id)
				d.serveTCPForward(ln, fw.Inside)
			}()
		case "udp":
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(fw.Host))
			if err != nil {
				return fmt.Errorf("egress: forward udp %v -> %v: %w", fw.Host, fw.Inside, err)
			}
			c.SetReadBuffer(d.cfg.SocketBuffer)
			c.SetWriteBuffer(d.cfg.SocketBuffer)
			u := &udpForward{d: d, conn: c, inside: fw.Inside, peers: map[netip.AddrPort]*udpPeer{}}
			id, ok := d.register(u.close)
			if !ok {
				c.Close()
				return net.ErrClosed
			}
			go func() {
				defer d.unregister(id)
				u.serve()
			}()
		}
	}
	return nil
}

// serveTCPForward accepts host connections and relays each to inside,
// from the gateway address of its family.
func (d *Device) serveTCPForward(ln *net.TCPListener, inside netip.AddrPort) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("egress: forward accept failed", "listen", ln.Addr(), "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !d.enter() {
			c.SetLinger(0)
			c.Close()
			return
		}
		if !d.acquire() {
			d.exit()
			c.SetLinger(0)
			c.Close()
			continue
		}
		d.st.forwarded.Add(1)
		go func() {
			defer d.exit()
			ep, wq, err := d.dialInside(inside)
			if err != nil {
				d.log.Debug("egress: forward connect inside failed", "inside", inside, "err", err)
				c.SetLinger(0)
				c.Close()
				d.release()
				return
			}
			d.relayTCP(ep, wq, c)
		}()
	}
}

// dialInside opens a netstack TCP connection from the gateway address of
// inside's family to inside.
func (d *Device) dialInside(inside netip.AddrPort) (tcpip.Endpoint, *waiter.Queue, error) {
	gw := gatewayOf(d.cfg.Gateways, inside.Addr().Is4())
	local, proto := fullAddr(netip.AddrPortFrom(gw, 0))
	remote, _ := fullAddr(inside)
	wq := new(waiter.Queue)
	ep, terr := d.stack.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, nil, errors.New(terr.String())
	}
	if terr := ep.Bind(local); terr != nil {
		ep.Close()
		return nil, nil, errors.New(terr.String())
	}
	we, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	terr = ep.Connect(remote)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.DialTimeout)
		defer cancel()
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, nil, ctx.Err()
		}
	}
	if terr != nil {
		ep.Close()
		return nil, nil, errors.New(terr.String())
	}
	return ep, wq, nil
}

// udpForward relays datagrams between a host UDP port and inside: each
// host peer gets its own netstack endpoint (from the gateway address, an
// ephemeral port) so that replies find their way back, with the UDP idle
// timeouts.
type udpForward struct {
	d      *Device
	conn   *net.UDPConn
	inside netip.AddrPort

	mu    sync.Mutex
	peers map[netip.AddrPort]*udpPeer
	done  bool
}

type udpPeer struct {
	local   netip.AddrPort // its address inside (the gateway, a port)
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	start   time.Time
	last    atomic.Int64
	replied atomic.Bool
	once    sync.Once
}

func (u *udpForward) close() {
	u.mu.Lock()
	u.done = true
	peers := u.peers
	u.peers = map[netip.AddrPort]*udpPeer{}
	u.mu.Unlock()
	u.conn.Close()
	for _, p := range peers {
		p.ep.Close()
	}
}

func (u *udpForward) serve() {
	buf := make([]byte, relayBufSize)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		p := u.peer(from)
		if p == nil {
			continue
		}
		p.last.Store(time.Now().UnixNano())
		if _, terr := p.ep.Write(bytes.NewReader(buf[:n]), tcpip.WriteOptions{}); terr == nil {
			u.d.st.bytesToHost.Add(uint64(n))
		}
	}
}

// peer returns the netstack endpoint for a host peer, creating it.
func (u *udpForward) peer(from netip.AddrPort) *udpPeer {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil
	}
	if p := u.peers[from]; p != nil {
		return p
	}
	d := u.d
	if !d.acquire() {
		return nil
	}
	gw := gatewayOf(d.cfg.Gateways, u.inside.Addr().Is4())
	local, proto := fullAddr(netip.AddrPortFrom(gw, 0))
	remote, _ := fullAddr(u.inside)
	wq := new(waiter.Queue)
	ep, terr := d.stack.NewEndpoint(udp.ProtocolNumber, proto, wq)
	if terr == nil {
		if terr = ep.Bind(local); terr == nil {
			terr = ep.Connect(remote)
		}
		if terr != nil {
			ep.Close()
		}
	}
	if terr != nil {
		d.release()
		d.log.Debug("egress: forward udp endpoint failed", "inside", u.inside, "err", terr)
		return nil
	}
	p := &udpPeer{ep: ep, wq: wq, start: time.Now()}
	if la, err := ep.GetLocalAddress(); err == nil {
		p.local = addrPort(la.Addr, la.Port)
		d.udpNetstack(p.local, true)
	}
	p.last.Store(time.Now().UnixNano())
	u.peers[from] = p
	d.st.forwarded.Add(1)
	go u.replies(from, p)
	return p
}

// replies sends what inside answers back to the host peer, until the
// peer has been idle for the UDP timeout.
func (u *udpForward) replies(from netip.AddrPort, p *udpPeer) {
	d := u.d
	defer d.release()
	we, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	p.wq.EventRegister(&we)
	defer p.wq.EventUnregister(&we)
	t := time.NewTimer(d.cfg.UDPTimeout)
	defer t.Stop()
	buf := make([]byte, relayBufSize)
	for {
		w := tcpip.SliceWriter(buf)
		res, err := p.ep.Read(&w, tcpip.ReadOptions{})
		if err == nil {
			p.replied.Store(true)
			p.last.Store(time.Now().UnixNano())
			if _, werr := u.conn.WriteToUDPAddrPort(buf[:res.Count], from); werr == nil {
				d.st.bytesFromHost.Add(uint64(res.Count))
			}
			continue
		}
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok {
			break
		}
		select {
		case <-notify:
			continue
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, p.last.Load()))
		to := d.cfg.UDPTimeout
		if p.replied.Load() && time.Unix(0, p.last.Load()).Sub(p.start) > streamAfter {
			to = d.cfg.UDPStreamTimeout
		}
		if idle < to {
			t.Reset(to - idle)
			continue
		}
		break
	}
	u.mu.Lock()
	if u.peers[from] == p {
		delete(u.peers, from)
	}
	u.mu.Unlock()
	if p.local.IsValid() {
		d.udpNetstack(p.local, false)
	}
	p.ep.Close()
}

package egress

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tunrouter/router/packet"
)

// The tests wire a client netstack (the "inside", 10.0.2.100 and
// fd00::100) straight to an egress device, without a pipeline; the test
// process's own network namespace is the host, and its servers listen on
// the loopback.
var (
	clientAddr  = netip.MustParseAddr("10.0.2.100")
	clientAddr6 = netip.MustParseAddr("fd00::100")
	gateway     = netip.MustParseAddr("10.0.2.2")
	gateway6    = netip.MustParseAddr("fd00::2")
	dnsAddr     = netip.MustParseAddr("10.0.2.3")
)

type rig struct {
	t      testing.TB
	dev    *Device
	client *stack.Stack
	ep     *channel.Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// baseConfig is a device with both gateways mapped to the host's loopback.
func baseConfig() Config {
	return Config{Gateways: []netip.Addr{gateway, gateway6}, HostLoopback: true, Queues: 2}
}

// newRig starts an egress device with cfg and a client stack attached to
// its queues (packets of the client go to queue 0; all queues are read).
func newRig(t testing.TB, cfg Config, mtu int) *rig { return newRigMode(t, cfg, mtu, false) }

// newRigMode is newRig; with offload the queues are used through their
// offload methods, and what the egress reads is segmented and checksummed
// the way the kernel treats a virtio-net header (kernelSegments).
func newRigMode(t testing.TB, cfg Config, mtu int, offload bool) *rig {
	t.Helper()
	if cfg.MTU == 0 {
		cfg.MTU = mtu
	}
	dev, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := &rig{t: t, dev: dev}
	r.client = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	r.client.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	r.ep = channel.New(1024, uint32(mtu), "")
	if err := r.client.CreateNIC(1, r.ep); err != nil {
		t.Fatalf("client NIC: %v", err)
	}
	for _, a := range []netip.Addr{clientAddr, clientAddr6} {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := r.client.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("client address: %v", err)
		}
	}
	r.client.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	// Client to egress, in batches as the pipeline writes them.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		q := dev.Queues()[0]
		bufs := make([][]byte, 0, 64)
		for {
			pkt := r.ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			bufs = bufs[:0]
			for pkt != nil && len(bufs) < cap(bufs) {
				v := pkt.ToView()
				pkt.DecRef()
				b := make([]byte, 16+v.Size())
				copy(b[16:], v.AsSlice())
				v.Release()
				bufs = append(bufs, b)
				pkt = r.ep.Read()
			}
			if pkt != nil {
				pkt.DecRef()
			}
			if offload {
				q.WriteOffload(bufs, make([]packet.Offload, len(bufs)), 16)
			} else {
				q.Write(bufs, 16)
			}
		}
	}()
	// Egress to client.
	for _, q := range dev.Queues() {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			bufs := make([][]byte, q.BatchSize())
			for i := range bufs {
				bufs[i] = make([]byte, 16+65536)
			}
			sizes := make([]int, len(bufs))
			offs := make([]packet.Offload, len(bufs))
			for {
				var n int
				var err error
				if offload {
					n, err = q.ReadOffload(bufs, sizes, offs, 16)
				} else {
					n, err = q.Read(bufs, sizes, 16)
				}
				if err != nil {
					return
				}
				var pkts [][]byte
				for i := 0; i < n; i++ {
					p := bufs[i][16 : 16+sizes[i]]
					if offload {
						pkts = append(pkts, kernelSegments(t, p, offs[i])...)
					} else {
						pkts = append(pkts, p)
					}
				}
				for _, p := range pkts {
					proto := ipv4.ProtocolNumber
					if p[0]>>4 == 6 {
						proto = ipv6.ProtocolNumber
					}
					pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
					r.ep.InjectInbound(proto, pkt)
					pkt.DecRef()
				}
			}
		}()
	}
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.dev.Close()
	r.cancel()
	r.wg.Wait()
	r.client.Close()
	r.client.Wait()
}

func fullAddrOf(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

// dial connects from the client.
func (r *rig) dial(to netip.AddrPort) (*gonet.TCPConn, error) {
	fa, proto := fullAddrOf(to)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, r.client, fa, proto)
}

// dialUDP opens a connected client UDP socket.
func (r *rig) dialUDP(to netip.AddrPort) *gonet.UDPConn {
	r.t.Helper()
	fa, proto := fullAddrOf(to)
	c, err := gonet.DialUDP(r.client, nil, &fa, proto)
	if err != nil {
		r.t.Fatalf("client udp: %v", err)
	}
	return c
}

// listen listens in the client stack.
func (r *rig) listen(at netip.AddrPort) *gonet.TCPListener {
	r.t.Helper()
	fa, proto := fullAddrOf(at)
	l, err := gonet.ListenTCP(r.client, fa, proto)
	if err != nil {
		r.t.Fatalf("client listen: %v", err)
	}
	return l
}

// hostListen listens on the host's loopback (IPv4 or IPv6).
func hostListen(t testing.TB, network string) *net.TCPListener {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

// viaGateway is the address inside that reaches a host loopback address.
func viaGateway(host net.Addr) netip.AddrPort {
	ap := host.(interface{ AddrPort() netip.AddrPort }).AddrPort()
	if ap.Addr().Unmap().Is4() {
		return netip.AddrPortFrom(gateway, ap.Port())
	}
	return netip.AddrPortFrom(gateway6, ap.Port())
}

// freePort returns a port that was free on the host's loopback.
func freePort(t testing.TB, network string) uint16 {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return uint16(c.LocalAddr().(*net.UDPAddr).Port)
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return uint16(l.Addr().(*net.TCPAddr).Port)
	}
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the one NIC of the egress's stack.
const nicID tcpip.NICID = 1

// maxPendingDials bounds the TCP connections being dialled at once (SYNs
// beyond it are ignored; the client retransmits them).
const maxPendingDials = 1024

// Device is an egress device. Build it with New, hand Queues to the
// pipeline as one port, and Close it after the pipeline has stopped.
type Device struct {
	cfg      Config
	log      *slog.Logger
	stack    *stack.Stack
	ep       *linkEP
	queues   []*Queue
	ping     *pinger
	upstream []netip.AddrPort
	st       counters

	active atomic.Int64 // flows holding a slot of MaxFlows
	// noUDPGSO: the host refused UDP_SEGMENT once; send datagrams singly.
	noUDPGSO atomic.Bool
	fast     fastUDP // the UDP fast path (udpfast.go)

	done      chan struct{}   // closed by Close
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // relay goroutines and listeners

	regMu     sync.Mutex
	reg       map[uint64]func() // what Close must abort: flows and listeners
	regNext   uint64
	listeners []net.Listener
	udpLns    []*net.UDPConn
}

// counters are the device's statistics.
type counters struct {
	tcpFlows, tcpRefused, tcpDialFailed, tcpResets atomic.Uint64
	udpFlows, udpRefused, udpICMPSent              atomic.Uint64
	pingSessions, pingDropped                      atomic.Uint64
	flowLimit                                      atomic.Uint64
	forwarded                                      atomic.Uint64
	bytesToHost, bytesFromHost                     atomic.Uint64
	queueFull, tooBig, malformed, noNIC            atomic.Uint64
	badChecksum                                    atomic.Uint64
	superSegments                                  atomic.Uint64
}

// Stats are the device's counters.
type Stats struct {
	TCPFlows      uint64 // TCP connections relayed (from inside)
	TCPRefused    uint64 // refused by the address mapping (reset)
	TCPDialFailed uint64 // the host connection failed (reset)
	TCPResets     uint64 // resets passed on, either way
	UDPFlows      uint64 // UDP flows relayed (from inside)
	UDPRefused    uint64 // refused by the address mapping
	UDPICMPSent   uint64 // port unreachables passed on from the host
	PingSessions  uint64 // ICMP echo sessions relayed
	PingDropped   uint64 // echo requests dropped (no ping socket, limits)
	FlowLimit     uint64 // flows refused because MaxFlows were active
	Forwarded     uint64 // port-forwarded connections and UDP peers
	ActiveFlows   int64
	BytesToHost   uint64 // payload relayed from inside to host sockets
	BytesFromHost uint64 // payload relayed from host sockets inside
	// Packets netstack sent that did not reach the pipeline: queue full,
	// too big for the read buffers, not understood, no NIC.
	QueueFull, TooBig, Malformed, NoNIC uint64
	SuperSegments                       uint64 // TCP super-segments cut
	// BadChecksum counts packets from the pipeline dropped for a bad IP
	// header or transport checksum.
	BadChecksum uint64
}

// New builds an egress device: its netstack, its port-forward listeners
// (an error if one cannot listen) and its queues. log may be nil.
func New(cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{
		cfg:  cfg,
		log:  log,
		done: make(chan struct{}),
		reg:  map[uint64]func(){},
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.upstream = cfg.DNSUpstream
	if len(cfg.DNS) > 0 && len(d.upstream) == 0 {
		ups, err := resolvConf("/etc/resolv.conf")
		if err != nil || len(ups) == 0 {
			return nil, fmt.Errorf("egress: DNS forwarder: no upstream given and none in /etc/resolv.conf (%v)", err)
		}
		d.upstream = ups
	}
	d.ep = &linkEP{st: &d.st}
	d.ep.mtu.Store(uint32(cfg.MTU))
	for i := 0; i < cfg.Queues; i++ {
		d.queues = append(d.queues, newQueue(d, d.ep, &cfg))
	}
	d.ep.queues = d.queues
	if err := d.newStack(); err != nil {
		return nil, err
	}
	if !cfg.NoPing {
		d.ping = newPinger(d)
	}
	if err := d.startForwards(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) newStack() error {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	d.stack = s
	opts := []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPSACKEnabled(true)),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: min(1<<20, d.cfg.TCPBuffer), Max: d.cfg.TCPBuffer},
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: min(1<<20, d.cfg.TCPBuffer), Max: d.cfg.TCPBuffer},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("egress: netstack TCP option %T: %v", o, err)
		}
	}
	if err := s.CreateNICWithOptions(nicID, d.ep, stack.NICOptions{Name: "egress"}); err != nil {
		return fmt.Errorf("egress: create netstack NIC: %v", err)
	}
	// Promiscuous: accept packets to any address; spoofing: send from any
	// address (the original destination of each relayed flow).
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("egress: promiscuous mode: %v", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("egress: spoofing: %v", err)
	}
	for _, a := range append(append([]netip.Addr{}, d.cfg.Gateways...), d.cfg.DNS...) {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if a.Is6() {
			pa.Protocol = ipv6.ProtocolNumber
		}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("egress: address %v: %v", a, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	tf := tcp.NewForwarder(s, 0, maxPendingDials, d.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, d.udpFromNetstack)
	return nil
}

func ptr[T any](v T) *T { return &v }

// Queues returns the device's queues, for a pipeline port.
func (d *Device) Queues() []*Queue { return d.queues }

// MTU returns the device's MTU.
func (d *Device) MTU() int { return d.cfg.MTU }

// Stats returns a snapshot of the counters.
func (d *Device) Stats() Stats {
	c := &d.st
	return Stats{
		TCPFlows: c.tcpFlows.Load(), TCPRefused: c.tcpRefused.Load(), TCPDialFailed: c.tcpDialFailed.Load(),
		TCPResets: c.tcpResets.Load(), UDPFlows: c.udpFlows.Load(), UDPRefused: c.udpRefused.Load(),
		UDPICMPSent: c.udpICMPSent.Load(), PingSessions: c.pingSessions.Load(), PingDropped: c.pingDropped.Load(),
		FlowLimit: c.flowLimit.Load(), Forwarded: c.forwarded.Load(), ActiveFlows: d.active.Load(),
		BytesToHost: c.bytesToHost.Load(), BytesFromHost: c.bytesFromHost.Load(),
		QueueFull: c.queueFull.Load(), TooBig: c.tooBig.Load(), Malformed: c.malformed.Load(), NoNIC: c.noNIC.Load(),
		SuperSegments: c.superSegments.Load(), BadChecksum: c.badChecksum.Load(),
	}
}

// Close stops the listeners, resets every relayed flow, shuts netstack
// down and releases the queued packets. Reads then return os.ErrClosed.
// Close the pipeline first. Close is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		close(d.done)
		d.cancel()
		d.regMu.Lock()
		aborts := make([]func(), 0, len(d.reg))
		for _, f := range d.reg {
			aborts = append(aborts, f)
		}
		d.reg = nil
		d.regMu.Unlock()
		for _, f := range aborts {
			f()
		}
		if d.ping != nil {
			d.ping.close()
		}
		// Closing the stack also ends the handshakes the TCP forwarder
		// is waiting on (no packet reaches netstack any more).
		if d.stack != nil {
			d.stack.Close()
		}
		d.wg.Wait()
		if d.stack != nil {
			d.stack.Wait()
		}
		for _, q := range d.queues {
			q.drain()
		}
	})
	return nil
}

// register records an abort function for Close and counts its owner in
// the goroutines Close waits for; it returns an id for unregister, or false
// if the device is closing (abort is then not kept).
func (d *Device) register(abort func()) (uint64, bool) {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	if d.reg == nil {
		return 0, false
	}
	d.regNext++
	d.reg[d.regNext] = abort
	d.wg.Add(1)
	return d.regNext, true
}

// unregister ends what register started.
func (d *Device) unregister(id uint64) {
	d.regMu.Lock()
	if d.reg != nil {
		delete(d.reg, id)
	}
	d.regMu.Unlock()
	d.wg.Done()
}

// enter counts a goroutine that Close must wait for; false if the device
// is closing (the goroutine must then not start its work).
func (d *Device) enter() bool {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	if d.reg == nil {
		return false
	}
	d.wg.Add(1)
	return true
}

// exit ends what enter started.
func (d *Device) exit() { d.wg.Done() }

// acquire takes a flow slot; false when MaxFlows are active.
func (d *Device) acquire() bool {
	if d.active.Add(1) > int64(d.cfg.MaxFlows) {
		d.active.Add(-1)
		d.st.flowLimit.Add(1)
		return false
	}
	return true
}

func (d *Device) release() { d.active.Add(-1) }

// closing reports whether Close was called.
func (d *Device) closing() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// isGateway and isDNS classify the egress's own addresses.
func (d *Device) isGateway(a netip.Addr) bool {
	for _, g := range d.cfg.Gateways {
		if g == a {
			return true
		}
	}
	return false
}

func (d *Device) isDNS(a netip.Addr) bool {
	for _, g := range d.cfg.DNS {
		if g == a {
			return true
		}
	}
	return false
}

// errRefused says why a flow is not relayed.
var errRefused = errors.New("refused by the egress address mapping")

// target maps the destination a client inside used to the host address
// the flow is relayed to: a gateway address to the host's loopback (when
// HostLoopback), a DNS address on port 53 to the first upstream resolver,
// anything else to itself.
func (d *Device) target(dst netip.AddrPort) (netip.AddrPort, error) {
	a := dst.Addr()
	switch {
	case d.isGateway(a):
		if !d.cfg.HostLoopback {
			return netip.AddrPort{}, errRefused
		}
		if a.Is4() {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), nil
		}
		return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()), nil
	case d.isDNS(a):
		if dst.Port() != 53 || len(d.upstream) == 0 {
			return netip.AddrPort{}, errRefused
		}
		return d.upstream[0], nil
	case !usableInside(a):
		return netip.AddrPort{}, errRefused
	}
	return dst, nil
}

// addrPort converts a netstack address and port.
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

// fullAddr converts to a netstack address on the NIC, with its protocol.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

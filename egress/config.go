package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config configures an egress device. The zero value plus one gateway
// address is usable; New fills in the defaults below.
type Config struct {
	// Gateways are the egress's own addresses on the inside (slirp4netns'
	// 10.0.2.2): clients use them as their gateway. Connections to a
	// gateway address go to the host's loopback when HostLoopback is set
	// (the IPv4 ones to 127.0.0.1, the IPv6 ones to ::1, same port), and
	// port-forwarded connections come from them.
	Gateways []netip.Addr
	// HostLoopback maps the gateway addresses to the host's loopback.
	// Without it, connections to a gateway address are refused (a TCP
	// reset, or an ICMP port unreachable for UDP).
	HostLoopback bool
	// DNS are the addresses inside at which the DNS forwarder answers on
	// port 53 (UDP and TCP), relaying to DNSUpstream (slirp4netns'
	// 10.0.2.3). Empty: no DNS forwarder. They must not be gateways.
	DNS []netip.Addr
	// DNSUpstream are the resolvers the forwarder relays to, in order of
	// preference; empty means the nameservers of /etc/resolv.conf (read
	// when the device is created).
	DNSUpstream []netip.AddrPort
	// Forwards are the host ports forwarded to addresses inside.
	Forwards []Forward

	// MTU is the largest packet exchanged with the pipeline, and the MTU of
	// netstack's interface (its TCP advertises MTU-40 as MSS). 0 means
	// 1500. It should be at least the MTU of the devices whose traffic is
	// routed to the egress: larger packets would be too big for it.
	MTU int
	// Queues is the number of pipeline queues (0: 1). Each has its own
	// receive-offload state and its share of the packets netstack sends
	// (by flow), so that pipeline readers and workers run in parallel.
	Queues int
	// BatchSize is the most packets one Read returns (0: 64).
	BatchSize int
	// QueuePackets and QueueBytes bound the packets netstack has sent that
	// the pipeline has not yet read, per queue (0: 4096 packets, 32 MiB).
	// Beyond them netstack's packets are dropped (and retransmitted).
	QueuePackets int
	QueueBytes   int

	// MaxFlows bounds the relayed TCP and UDP flows and ICMP echo
	// sessions together (0: 4096). New flows beyond it are refused: TCP
	// with a reset, UDP and ICMP silently.
	MaxFlows int
	// TCPBuffer is the most each netstack TCP endpoint buffers per
	// direction, in bytes (0: 4 MiB); receive buffers grow to it with
	// receive-buffer auto-tuning.
	TCPBuffer int
	// SocketBuffer is the SO_SNDBUF and SO_RCVBUF asked for on host
	// sockets (0: 4 MiB; the kernel caps it at net.core.[rw]mem_max).
	SocketBuffer int
	// DialTimeout bounds a host connection attempt; the client's SYN is
	// answered only once it succeeded (0: 20 s).
	DialTimeout time.Duration
	// UDPTimeout is how long a UDP flow without replies, or one that is
	// only a short request/response exchange, lives after its last
	// datagram; UDPStreamTimeout applies once datagrams have passed both
	// ways over more than two seconds (conntrack's nf_conntrack_udp_timeout
	// and _stream: 0 means 30 s and 120 s).
	UDPTimeout       time.Duration
	UDPStreamTimeout time.Duration
	// ICMPTimeout is how long an echo session lives after its last
	// request or reply (0: 30 s, conntrack's nf_conntrack_icmp_timeout).
	ICMPTimeout time.Duration
	// TCPHalfClosedTimeout is how long a TCP flow that one side has closed
	// may stay idle before both sides are reset (0: 120 s, conntrack's
	// tcp_fin_wait). Data moving either way restarts it.
	TCPHalfClosedTimeout time.Duration
	// NoPing disables the relaying of ICMP echo through the host's
	// unprivileged ping sockets (net.ipv4.ping_group_range); echo
	// requests are then dropped.
	NoPing bool
}

// Forward forwards a host port to an address inside, like slirp4netns'
// hostfwd and pasta's -t/-u: the egress listens on Host and, for each
// connection (TCP) or peer (UDP), opens a flow from its gateway address
// of Inside's family to Inside. These flows enter the pipeline from the
// egress device like any other, so conntrack and the filter see them.
type Forward struct {
	Proto  string // "tcp" or "udp"
	Host   netip.AddrPort
	Inside netip.AddrPort
}

// Defaults.
const (
	DefaultMTU          = 1500
	DefaultBatchSize    = 64
	DefaultQueuePackets = 4096
	DefaultQueueBytes   = 32 << 20
	DefaultMaxFlows     = 4096
	DefaultTCPBuffer    = 4 << 20
	DefaultSocketBuffer = 4 << 20
	DefaultDialTimeout  = 20 * time.Second
	DefaultUDPTimeout   = 30 * time.Second
	DefaultUDPStream    = 120 * time.Second
	DefaultICMPTimeout  = 30 * time.Second
	DefaultHalfClosed   = 120 * time.Second
	// MaxMTU is the largest MTU (an IPv4 datagram's limit).
	MaxMTU = 65535
)

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&c.MTU, DefaultMTU)
	set(&c.Queues, 1)
	set(&c.BatchSize, DefaultBatchSize)
	set(&c.QueuePackets, DefaultQueuePackets)
	set(&c.QueueBytes, DefaultQueueBytes)
	set(&c.MaxFlows, DefaultMaxFlows)
	set(&c.TCPBuffer, DefaultTCPBuffer)
	set(&c.SocketBuffer, DefaultSocketBuffer)
	setD(&c.DialTimeout, DefaultDialTimeout)
	setD(&c.UDPTimeout, DefaultUDPTimeout)
	setD(&c.UDPStreamTimeout, DefaultUDPStream)
	setD(&c.ICMPTimeout, DefaultICMPTimeout)
	setD(&c.TCPHalfClosedTimeout, DefaultHalfClosed)
	return c
}

// Validate reports every problem with c (nil if none).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Gateways) == 0 {
		bad("egress: at least one gateway address is needed")
	}
	own := map[netip.Addr]string{}
	for _, g := range c.Gateways {
		switch {
		case !g.IsValid() || g.Zone() != "" || g.Is4In6():
			bad("egress: invalid gateway address %v", g)
		case !usableInside(g):
			bad("egress: gateway %v is not a unicast address", g)
		case own[g] != "":
			bad("egress: gateway %v is given twice", g)
		default:
			own[g] = "gateway"
		}
	}
	for _, a := range c.DNS {
		switch {
		case !a.IsValid() || a.Zone() != "" || a.Is4In6():
			bad("egress: invalid DNS address %v", a)
		case !usableInside(a):
			bad("egress: DNS address %v is not a unicast address", a)
		case own[a] != "":
			bad("egress: DNS address %v is also a %s address", a, own[a])
		default:
			own[a] = "DNS"
		}
	}
	for _, u := range c.DNSUpstream {
		if !u.IsValid() || u.Port() == 0 {
			bad("egress: invalid DNS upstream %v", u)
		}
	}
	type key struct {
		proto string
		port  uint16
	}
	hosts := map[key][]netip.Addr{}
	for i, f := range c.Forwards {
		switch f.Proto {
		case "tcp", "udp":
		default:
			bad("egress: forward %d: proto %q (want tcp or udp)", i, f.Proto)
		}
		if !f.Host.IsValid() || f.Host.Port() == 0 {
			bad("egress: forward %d: host %v needs an address and a port", i, f.Host)
		}
		if !f.Inside.IsValid() || f.Inside.Port() == 0 || !usableInside(f.Inside.Addr()) {
			bad("egress: forward %d: inside %v needs a unicast address and a port", i, f.Inside)
		} else if gatewayOf(c.Gateways, f.Inside.Addr().Is4()) == (netip.Addr{}) {
			bad("egress: forward %d: no gateway address of %v's family to connect from", i, f.Inside)
		} else if own[f.Inside.Addr()] != "" {
			bad("egress: forward %d: inside %v is the egress's own %s address", i, f.Inside, own[f.Inside.Addr()])
		}
		k := key{f.Proto, f.Host.Port()}
		for _, a := range hosts[k] {
			if a == f.Host.Addr() || a.IsUnspecified() || f.Host.Addr().IsUnspecified() {
				bad("egress: forward %d: %s %v is already forwarded", i, f.Proto, f.Host)
				break
			}
		}
		hosts[k] = append(hosts[k], f.Host.Addr())
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > MaxMTU) {
		bad("egress: MTU %d out of range 1280..%d", c.MTU, MaxMTU)
	}
	for _, v := range []struct {
		name string
		v    int
	}{{"queues", c.Queues}, {"batch size", c.BatchSize}, {"queue packets", c.QueuePackets},
		{"queue bytes", c.QueueBytes}, {"max flows", c.MaxFlows}, {"TCP buffer", c.TCPBuffer},
		{"socket buffer", c.SocketBuffer}} {
		if v.v < 0 {
			bad("egress: %s %d must not be negative (0 = default)", v.name, v.v)
		}
	}
	if c.Queues > 64 {
		bad("egress: %d queues (at most 64)", c.Queues)
	}
	return errors.Join(errs...)
}

// usableInside reports whether a is an address a flow inside can use:
// unicast, not loopback, not unspecified.
func usableInside(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		!(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// gatewayOf returns the first gateway of the family (IPv4 if v4).
func gatewayOf(gws []netip.Addr, v4 bool) netip.Addr {
	for _, g := range gws {
		if g.Is4() == v4 {
			return g
		}
	}
	return netip.Addr{}
}

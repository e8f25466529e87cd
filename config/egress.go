package config

import (
	"net/netip"
	"strings"
	"time"
)

// Egress is the configuration of a `kind = "egress"` device: the router's
// rootless egress, a userspace TCP/IP stack whose flows are relayed
// through the host's own sockets (see package egress). Routes send traffic
// to it like to any device.
type Egress struct {
	// Gateways are its own addresses inside (slirp4netns' 10.0.2.2).
	Gateways []netip.Addr
	// HostLoopback maps connections to a gateway address to the host's
	// loopback, same port (default true).
	HostLoopback bool
	// DNS are addresses inside at which a DNS forwarder answers on port
	// 53 (slirp4netns' 10.0.2.3), relaying to DNSUpstream (default: the
	// nameservers of /etc/resolv.conf).
	DNS         []netip.Addr
	DNSUpstream []netip.AddrPort
	// Forwards are host ports forwarded inside ([[device.forward]]).
	Forwards []Forward
	// MaxFlows, TCPBuffer and SocketBuffer bound the relay (0: the egress
	// package's defaults).
	MaxFlows     int
	TCPBuffer    int
	SocketBuffer int
	// Ping relays ICMP echo through the host's unprivileged ping sockets
	// (default true).
	Ping bool
	// DialTimeout bounds a host connection attempt; HalfClosedTimeout is
	// how long a half-closed TCP flow may stay idle (0: defaults).
	DialTimeout       time.Duration
	HalfClosedTimeout time.Duration
}

// Forward forwards a host port to an address inside.
type Forward struct {
	Proto  string // "tcp" or "udp"
	Host   netip.AddrPort
	Inside netip.AddrPort
}

type fileForward struct {
	Proto  string `toml:"proto"`
	Host   string `toml:"host"`
	Inside string `toml:"inside"`
}

// egressKeys are the device keys only an egress device takes; tunKeys
// those only a TUN device takes.
var (
	egressKeys = []string{"gateway", "host_loopback", "dns", "dns_upstream", "max_flows", "tcp_buffer",
		"socket_buffer", "ping", "dial_timeout", "half_closed_timeout", "forward"}
	tunKeys = []string{"netns", "addresses", "routes", "router_addresses", "offload", "fd", "launcher_socket"}
)

// deviceKind checks and converts the options that depend on the device's
// kind: an egress device's own options, a TUN device's launcher socket;
// each kind's keys are refused on the other.
func (c *collector) deviceKind(path string, fd *fileDevice, d *Device) {
	if d.Kind != "egress" {
		for _, k := range egressKeys {
			if c.deviceHas(fd, k) {
				c.errorf(pathJoin(path, k), "%s is an option of egress devices (kind = \"egress\")", k)
			}
		}
		if fd.LauncherSocket != "" {
			d.LauncherSocket = fd.LauncherSocket
			switch {
			case !strings.HasPrefix(fd.LauncherSocket, "/"):
				c.errorf(pathJoin(path, "launcher_socket"), "launcher_socket %q must be an absolute path", fd.LauncherSocket)
			case fd.FD != nil:
				c.errorf(pathJoin(path, "launcher_socket"), "launcher_socket and fd both say where the TUN descriptor comes from: give one")
			case fd.Netns != "":
				c.errorf(pathJoin(path, "launcher_socket"), "launcher_socket conflicts with netns: the launcher creates the device in its own namespace")
			}
		}
		return
	}
	for _, k := range tunKeys {
		if c.deviceHas(fd, k) {
			c.errorf(pathJoin(path, k), "%s is an option of TUN devices, not of egress devices", k)
		}
	}
	if fd.MTU == nil {
		d.MTU = 0 // the largest MTU of the TUN devices (the daemon resolves it)
	} else if d.MTU < 1280 {
		c.errorf(pathJoin(path, "mtu"), "mtu %d is below 1280, the egress's minimum", d.MTU)
	}
	d.Offload = false
	e := &Egress{HostLoopback: true, Ping: true}
	if fd.HostLoopback != nil {
		e.HostLoopback = *fd.HostLoopback
	}
	if fd.Ping != nil {
		e.Ping = *fd.Ping
	}
	own := map[netip.Addr]string{}
	addrs := func(key string, l *strList, dst *[]netip.Addr) {
		for j, s := range l.Vals {
			kp := l.elemPath(pathJoin(path, key), j)
			a, err := netip.ParseAddr(s)
			switch {
			case err != nil || a.Zone() != "":
				c.errorf(kp, "invalid address %q: want an address like 10.0.2.2 or fd00::2", s)
				continue
			case a.Is4In6():
				c.errorf(kp, "address %s is an IPv4-mapped IPv6 address; use the IPv4 form", s)
				continue
			case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
				c.errorf(kp, "address %s is not a unicast address", a)
				continue
			}
			if prev := own[a]; prev != "" {
				c.errorf(kp, "address %s is already given at %s", a, prev)
				continue
			}
			own[a] = kp
			*dst = append(*dst, a)
		}
	}
	addrs("gateway", &fd.Gateway, &e.Gateways)
	if len(fd.Gateway.Vals) == 0 {
		c.errorf(path, "an egress device needs a gateway address (gateway = \"10.0.2.2\"): clients inside route through it")
	}
	addrs("dns", &fd.DNS, &e.DNS)
	for j, s := range fd.DNSUpstream.Vals {
		kp := fd.DNSUpstream.elemPath(pathJoin(path, "dns_upstream"), j)
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil || a.Zone() != "" {
				c.errorf(kp, "invalid resolver %q: want an address or address:port, like 127.0.0.53 or [::1]:53", s)
				continue
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if ap.Port() == 0 {
			c.errorf(kp, "resolver %s has port 0", s)
			continue
		}
		e.DNSUpstream = append(e.DNSUpstream, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	if len(e.DNSUpstream) > 0 && len(e.DNS) == 0 {
		c.errorf(pathJoin(path, "dns_upstream"), "dns_upstream without dns: give the address inside at which the forwarder answers (dns = \"10.0.2.3\")")
	}
	intOpt := func(key string, v *int, dst *int, lo, hi int) {
		if v == nil {
			return
		}
		if *v < lo || *v > hi {
			c.errorf(pathJoin(path, key), "%s %d out of range %d..%d (0 = default)", key, *v, lo, hi)
			return
		}
		*dst = *v
	}
	intOpt("max_flows", fd.MaxFlows, &e.MaxFlows, 0, 1<<20)
	intOpt("tcp_buffer", fd.TCPBuffer, &e.TCPBuffer, 0, 1<<30)
	intOpt("socket_buffer", fd.SocketBuffer, &e.SocketBuffer, 0, 1<<30)
	if fd.Queues > 64 {
		c.errorf(pathJoin(path, "queues"), "queues %d out of range 0..64 for an egress device", fd.Queues)
	}
	e.DialTimeout, e.HalfClosedTimeout = fd.DialTimeout.D, fd.HalfClosedTimeout.D
	type hostKey struct {
		proto string
		port  uint16
	}
	hosts := map[hostKey][]netip.Addr{}
	for j, ff := range fd.Forward {
		fp := pathIndex(pathJoin(path, "forward"), j)
		f := Forward{Proto: strings.ToLower(ff.Proto)}
		ok := true
		switch f.Proto {
		case "tcp", "udp":
		case "":
			c.errorf(fp, "forward needs a proto (\"tcp\" or \"udp\")")
			ok = false
		default:
			c.errorf(pathJoin(fp, "proto"), "unknown proto %q (want tcp or udp)", ff.Proto)
			ok = false
		}
		h, err := netip.ParseAddrPort(ff.Host)
		if err != nil || h.Port() == 0 || h.Addr().Zone() != "" {
			c.errorf(pathJoin(fp, "host"), "invalid host %q: want the host address and port to listen on, like 127.0.0.1:8080 or [::]:8080", ff.Host)
			ok = false
		}
		in, err := netip.ParseAddrPort(ff.Inside)
		switch {
		case err != nil || in.Port() == 0 || in.Addr().Zone() != "":
			c.errorf(pathJoin(fp, "inside"), "invalid inside %q: want the address and port inside, like 10.0.2.100:80", ff.Inside)
			ok = false
		case in.Addr().Is4In6() || in.Addr().IsUnspecified() || in.Addr().IsLoopback() || in.Addr().IsMulticast():
			c.errorf(pathJoin(fp, "inside"), "inside %s is not a unicast address", in.Addr())
			ok = false
		case own[in.Addr()] != "":
			c.errorf(pathJoin(fp, "inside"), "inside %s is the egress's own address (%s)", in.Addr(), own[in.Addr()])
			ok = false
		default:
			fam := false
			for _, g := range e.Gateways {
				fam = fam || g.Is4() == in.Addr().Is4()
			}
			if !fam && len(e.Gateways) > 0 {
				c.errorf(pathJoin(fp, "inside"), "no gateway address of %s's family: forwarded connections come from the gateway", in.Addr())
				ok = false
			}
		}
		if !ok {
			continue
		}
		f.Host = netip.AddrPortFrom(h.Addr().Unmap(), h.Port())
		f.Inside = in
		k := hostKey{f.Proto, f.Host.Port()}
		for _, a := range hosts[k] {
			if a == f.Host.Addr() || a.IsUnspecified() || f.Host.Addr().IsUnspecified() {
				c.errorf(pathJoin(fp, "host"), "%s %s is already forwarded", f.Proto, f.Host)
				ok = false
				break
			}
		}
		if ok {
			hosts[k] = append(hosts[k], f.Host.Addr())
			e.Forwards = append(e.Forwards, f)
		}
	}
	d.Egress = e
}

// deviceHas reports whether the file gave key for the device.
func (c *collector) deviceHas(fd *fileDevice, key string) bool {
	switch key {
	case "gateway":
		return fd.Gateway.Set
	case "host_loopback":
		return fd.HostLoopback != nil
	case "dns":
		return fd.DNS.Set
	case "dns_upstream":
		return fd.DNSUpstream.Set
	case "max_flows":
		return fd.MaxFlows != nil
	case "tcp_buffer":
		return fd.TCPBuffer != nil
	case "socket_buffer":
		return fd.SocketBuffer != nil
	case "ping":
		return fd.Ping != nil
	case "dial_timeout":
		return fd.DialTimeout.Set
	case "half_closed_timeout":
		return fd.HalfClosedTimeout.Set
	case "forward":
		return fd.Forward != nil
	case "netns":
		return fd.Netns != ""
	case "addresses":
		return fd.Addresses != nil
	case "routes":
		return fd.Routes != nil
	case "router_addresses":
		return fd.RouterAddresses != nil
	case "offload":
		return fd.Offload != nil
	case "fd":
		return fd.FD != nil
	case "launcher_socket":
		return fd.LauncherSocket != ""
	}
	return false
}

// egressChecks compares the egress devices with the others: their own
// addresses must not be anybody else's.
func (c *collector) egressChecks(cfg *Config) {
	for i, d := range cfg.Devices {
		if d.Egress == nil {
			continue
		}
		path := pathIndex("device", i)
		for _, a := range append(append([]netip.Addr{}, d.Egress.Gateways...), d.Egress.DNS...) {
			for _, o := range cfg.Devices {
				for _, p := range o.Addresses {
					if p.Addr() == a {
						c.errorf(path, "address %s of egress device %q is also a host-side address of device %q", a, d.Name, o.Name)
					}
				}
				for _, r := range o.RouterAddrs {
					if r == a {
						c.errorf(path, "address %s of egress device %q is also a router address of device %q: the router would answer for it itself", a, d.Name, o.Name)
					}
				}
			}
		}
	}
}

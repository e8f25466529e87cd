package tundev

import (
	"net/netip"
	"strings"
)

// Limits enforced by Config validation; they mirror the Linux tun driver.
const (
	// MaxQueues is the largest queue count a multi-queue TUN device accepts.
	MaxQueues = 256
	// MinMTU and MaxMTU bound Config.MTU (the tun driver's limits).
	MinMTU = 68
	MaxMTU = 65535
	// MinIPv6MTU is the smallest MTU with which the kernel keeps IPv6
	// enabled on a link; Open rejects smaller MTUs when IPv6 prefixes are
	// configured.
	MinIPv6MTU = 1280
	// DefaultMTU is used when Config.MTU is zero for a created device.
	DefaultMTU = 1500
	// MinOffset is the smallest offset (headroom in front of each packet)
	// that Queue Write accepts when offloads are on: the virtio-net header
	// is written there. Read accepts any offset. Use it (or more) always,
	// so the same buffers work with and without offloads.
	MinOffset = 10
	// maxNameLen is IFNAMSIZ-1.
	maxNameLen = 15
)

// Config describes the TUN device to open. The zero value plus a Name is a
// usable single-queue device with offloads, in the current namespace, left
// down and unaddressed.
type Config struct {
	// Name is the interface name. Empty lets the kernel choose (tun0,
	// tun1, ...); a name containing one "%d" is a kernel template. Device.Name
	// reports the result. In adopt mode (FD) it is ignored: the name comes
	// from the descriptor.
	Name string

	// Netns is the network namespace to create the device in: a path such
	// as /run/netns/blue or /proc/PID/ns/net, or a bare name that is looked
	// up under /run/netns. Empty means the namespace of the calling process.
	// In adopt mode the device's own namespace is found through the
	// descriptor (TUNGETDEVNETNS); Netns is only the fallback when the
	// kernel refuses that.
	Netns string

	// MTU of the link. Zero means DefaultMTU for a created device and
	// "leave unchanged" for an adopted one.
	MTU int

	// Addresses are assigned to the link (address and prefix length, such
	// as 10.0.0.1/24 or fd00::1/64). Existing equal addresses are kept.
	Addresses []netip.Prefix

	// Routes are routed to the link (scope link, no gateway). Each must be
	// a masked prefix (10.1.0.0/16, not 10.1.2.3/16). Routes need Up: the
	// kernel refuses IPv4 routes through a down link.
	Routes []netip.Prefix

	// Queues is the number of queues; 0 and 1 both mean one. More than one
	// opens the device with IFF_MULTI_QUEUE and returns one wireguard
	// tun.Device per queue; the kernel spreads flows across queues by hash.
	// Must be 1 (or 0) in adopt mode.
	Queues int

	// NoOffload opens the queues without IFF_VNET_HDR: no TSO/USO, no GRO,
	// one packet per Read and per write(2). Offloads are on by default. In
	// adopt mode the descriptor's flags decide and NoOffload is ignored;
	// Device.Offloads tells what is in effect.
	NoOffload bool

	// FD, when positive, adopts an inherited, already attached TUN file
	// descriptor (from a rootless launcher) instead of creating a device.
	// It must have been attached with IFF_TUN|IFF_NO_PI, optionally with
	// IFF_VNET_HDR (and the default 10-byte header size). IFF_NO_PI is the
	// launcher's responsibility: the kernel does not report it back (the
	// bit doubles as IFF_NOFILTER in TUNGETIFF), so Open cannot check it.
	// On success the Device owns the descriptor and Close closes it; the
	// link itself is not removed. On failure the descriptor is left open
	// and untouched. MTU, Addresses, Routes and Up are still applied when
	// set (which needs CAP_NET_ADMIN over the device's namespace).
	FD int

	// Up brings the link administratively up after addressing it.
	Up bool

	// Unmanaged (adopt mode only) takes the descriptor without reaching
	// the link's namespace at all: no netlink, no link lookup, no
	// configuration, no offload check, no events. It is for a descriptor
	// from a rootless launcher whose user-owned namespace this process
	// cannot enter (the launcher configured the link). MTU, Addresses,
	// Routes and Up must be unset; Device.MTU then reports an error.
	Unmanaged bool
}

// queues returns the effective queue count.
func (c *Config) queues() int {
	if c.Queues <= 1 {
		return 1
	}
	return c.Queues
}

// validate checks c without touching the system.
func (c *Config) validate() error {
	adopt := c.FD > 0
	if !adopt {
		if err := validName(c.Name); err != nil {
			return err
		}
	}
	if c.FD < 0 {
		return invalidf("FD %d is negative (use 0 to create a device)", c.FD)
	}
	if c.Queues < 0 || c.Queues > MaxQueues {
		return invalidf("Queues %d out of range 0..%d", c.Queues, MaxQueues)
	}
	if c.Unmanaged && (!adopt || c.MTU != 0 || len(c.Addresses) > 0 || len(c.Routes) > 0 || c.Up) {
		return invalidf("Unmanaged needs FD and no MTU, Addresses, Routes or Up: nothing is configured")
	}
	if adopt && c.queues() > 1 {
		return invalidf("Queues %d with FD: an adopted descriptor is a single queue", c.Queues)
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return invalidf("MTU %d out of range %d..%d", c.MTU, MinMTU, MaxMTU)
	}
	has6 := false
	for _, p := range c.Addresses {
		if !p.IsValid() {
			return invalidf("address %v is not a valid prefix", p)
		}
		if p.Addr().Is4In6() {
			return invalidf("address %v is an IPv4-mapped IPv6 address; use the IPv4 form", p)
		}
		if p.Addr().Is6() {
			has6 = true
		}
	}
	for _, p := range c.Routes {
		if !p.IsValid() || p.Addr().Is4In6() {
			return invalidf("route %v is not a valid prefix", p)
		}
		if p.Masked() != p {
			return invalidf("route %v has host bits set (did you mean %v?)", p, p.Masked())
		}
		if p.Addr().Is6() {
			has6 = true
		}
	}
	if len(c.Routes) > 0 && !c.Up {
		return invalidf("Routes need Up: the kernel does not route through a down link")
	}
	mtu := c.MTU
	if mtu == 0 && !adopt {
		mtu = DefaultMTU
	}
	if has6 && mtu != 0 && mtu < MinIPv6MTU {
		return invalidf("MTU %d is below %d, the IPv6 minimum, but IPv6 prefixes are configured", mtu, MinIPv6MTU)
	}
	return nil
}

// validName applies the kernel's rules for interface names (dev_valid_name)
// plus the "%d" template rule of dev_alloc_name.
func validName(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > maxNameLen {
		return invalidf("name %q longer than %d bytes", name, maxNameLen)
	}
	if name == "." || name == ".." {
		return invalidf("name %q is reserved", name)
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if b == '/' || b == ':' || b <= ' ' || b == 0x7f {
			return invalidf("name %q contains %q", name, b)
		}
	}
	if n := strings.Count(name, "%"); n > 1 || (n == 1 && !strings.Contains(name, "%d")) {
		return invalidf("name %q: only one %%d template is allowed", name)
	}
	return nil
}

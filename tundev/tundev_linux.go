package tundev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// cloneDevice is the TUN clone device. It is a variable only so that tests
// can point it at a missing path.
var cloneDevice = "/dev/net/tun"

// virtioNetHdrLen is the size of the virtio-net header that wireguard's tun
// package exchanges with the kernel (struct virtio_net_hdr). An adopted
// descriptor must use exactly this size.
const virtioNetHdrLen = 10

// TCP offload flags wireguard sets on IFF_VNET_HDR queues (TUNSETOFFLOAD);
// Open sets them first to get a classified error if the kernel refuses.
const tcpOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// Device is an open TUN device: one or more queues plus the link's control
// state. Create it with Open; release it with Close.
type Device struct {
	name    string
	index   int
	netns   string // Config.Netns as given ("" = current namespace)
	created bool
	vnetHdr bool

	queues    []tun.Device // handed out by Queues (wrapped)
	raw       []tun.Device // the wireguard devices; closed by Close
	adoptedFD int          // the caller's descriptor in adopt mode, else -1

	ns netns.NsHandle // the device's namespace; None means the current one

	// ctlMu guards nl and ctl, which Close releases.
	ctlMu sync.Mutex
	nl    *netlink.Handle // netlink socket bound to the device's namespace
	ctl   int             // datagram socket in the device's namespace, for ethtool ioctls

	events    chan Event
	stop      chan struct{} // closed by Close: stop monitoring
	watchDone chan struct{} // closed when runWatcher has returned

	closeOnce sync.Once
	closeErr  error
}

// queue is one wireguard TUN queue with two corrections:
//
//   - MTU asks the device's own namespace over netlink: wireguard's looks
//     the name up in the calling thread's namespace, which is wrong (or
//     another link) for a device created elsewhere.
//   - Read reports os.ErrClosed once the link has been deleted under it
//     (ip link del): the detached descriptor then polls as an error and
//     wireguard would return a generic "not pollable" error forever.
//
// Everything else, including the hot path of Read and Write, is
// wireguard's.
type queue struct {
	tun.Device
	d  *Device
	rd offloadReader // ReadOffload's state (offload_io_linux.go)
}

func (q *queue) MTU() (int, error) { return q.d.MTU() }

func (q *queue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := q.Device.Read(bufs, sizes, offset)
	if err != nil && n == 0 && !errors.Is(err, os.ErrClosed) && !errors.Is(err, tun.ErrTooManySegments) && q.detached() {
		err = fmt.Errorf("tundev: %s was removed: %w (%v)", q.d.subject(), os.ErrClosed, err)
	}
	return n, err
}

// InterruptRead makes a Read blocked on the queue return (with
// os.ErrDeadlineExceeded), and every later one, without closing the
// descriptor: the pipeline stops its readers this way, writes what is
// still queued, and only then closes the device.
func (q *queue) InterruptRead() error {
	return q.File().SetReadDeadline(time.Unix(1, 0))
}

// detached reports whether the queue's descriptor is no longer attached to
// a device (TUNGETIFF fails with EBADFD).
func (q *queue) detached() bool {
	sc, err := q.File().SyscallConn()
	if err != nil {
		return true
	}
	var ierr error
	if err := sc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ierr = unix.NewIfreq(""); ierr == nil {
			ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
		}
	}); err != nil {
		return true
	}
	return errors.Is(ierr, unix.EBADFD)
}

// Open creates (or, with Config.FD, adopts) a TUN device, configures it and
// starts monitoring its link state. Errors wrap ErrInvalidConfig, ErrNoTUN,
// ErrPermission, ErrDeviceBusy, ErrNoNetns, ErrNotTUN or ErrOffload where
// one applies. On error nothing is left behind: a created device is gone
// and an adopted descriptor is still open.
func Open(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.FD > 0 {
		return adopt(&cfg)
	}
	return create(&cfg)
}

func newDevice(cfg *Config, ns netns.NsHandle) *Device {
	return &Device{
		netns:     cfg.Netns,
		ns:        ns,
		adoptedFD: -1,
		ctl:       -1,
		events:    make(chan Event, eventBuffer),
	}
}

func create(cfg *Config) (_ *Device, err error) {
	ns, err := openNetns(cfg.Netns)
	if err != nil {
		return nil, err
	}
	d := newDevice(cfg, ns)
	d.created = true
	d.vnetHdr = !cfg.NoOffload
	d.name = cfg.Name
	defer func() {
		if err != nil {
			d.Close() // releases whatever exists so far, including ns
		}
	}()

	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if d.vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	n := cfg.queues()
	if n > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	fds := make([]int, 0, n)
	err = inNetns(ns, func() error {
		// Opening /dev/net/tun binds the queue to this namespace;
		// TUNSETIFF then creates (first queue, exclusively) or
		// attaches to (further queues) the device by name.
		for i := 0; i < n; i++ {
			f := flags
			if i == 0 {
				f |= unix.IFF_TUN_EXCL
			}
			fd, got, err := openQueue(d.name, f, d.where())
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			d.name = got
		}
		var err error
		d.ctl, err = controlSocket(d.where())
		return err
	})
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	for i, fd := range fds {
		q, err := wrapQueue(fd, d.vnetHdr, d.subject())
		if err != nil {
			for _, rest := range fds[i+1:] {
				unix.Close(rest)
			}
			return nil, err
		}
		d.raw = append(d.raw, q)
	}
	if err := d.setup(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// controlSocket returns a socket bound to the calling thread's network
// namespace, for device ioctls (SIOCETHTOOL) by name in that namespace. A
// Unix datagram socket works on every kernel, with or without IPv4.
func controlSocket(where string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, wrapSys("control socket in", where, err)
	}
	return fd, nil
}

// openQueue opens the clone device and attaches it to the TUN device
// called name (an empty name or a %d template lets the kernel choose). It
// returns the descriptor and the device's actual name.
func openQueue(name string, flags uint16, where string) (int, string, error) {
	fd, err := unix.Open(cloneDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", wrapOpenClone(cloneDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", invalidf("name %q: %v", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", wrapSys("create TUN device", fmt.Sprintf("%q in %s", name, where), err)
	}
	return fd, ifr.Name(), nil
}

// wrapQueue hands an attached queue descriptor to wireguard's tun package.
// Everything that can fail inside CreateUnmonitoredTUNFromFD is done here
// first, because once that function has wrapped fd in an *os.File, an
// error leaves the descriptor owned by that file's finalizer and it must
// not be closed here. On errors of its own, wrapQueue closes fd.
func wrapQueue(fd int, vnetHdr bool, subject string) (tun.Device, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, wrapSys("set non-blocking", subject, err)
	}
	if vnetHdr {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcpOffloads); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tundev: enable offloads on %s: %w: %w", subject, ErrOffload, err)
		}
	}
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("tundev: wrap queue of %s: %w", subject, err)
	}
	if vnetHdr && dev.BatchSize() <= 1 {
		dev.Close()
		return nil, fmt.Errorf("tundev: %s: %w: batch size %d", subject, ErrOffload, dev.BatchSize())
	}
	return dev, nil
}

// adopt takes over an inherited TUN descriptor.
func adopt(cfg *Config) (_ *Device, err error) {
	fd, err := unix.FcntlInt(uintptr(cfg.FD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tundev: adopt fd %d: %w: %w", cfg.FD, ErrNotTUN, err)
	}
	owned := false // whether fd has been handed to wireguard
	defer func() {
		if err != nil && !owned {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tundev: adopt fd %d: %w: TUNGETIFF: %w", cfg.FD, ErrNotTUN, err)
	}
	// IFF_NO_PI cannot be checked: TUNGETIFF reports the same bit for
	// IFF_NOFILTER, which is always set on TUN (not TAP) descriptors.
	flags := ifr.Uint16()
	if flags&unix.IFF_TUN == 0 {
		return nil, fmt.Errorf("tundev: adopt fd %d: %w: %q is a TAP device", cfg.FD, ErrNotTUN, ifr.Name())
	}
	vnet := flags&unix.IFF_VNET_HDR != 0
	if vnet {
		sz, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
		if err != nil || sz != virtioNetHdrLen {
			return nil, fmt.Errorf("tundev: adopt fd %d: %w: virtio-net header size %d (need %d), err=%v",
				cfg.FD, ErrNotTUN, sz, virtioNetHdrLen, err)
		}
	}

	if cfg.Unmanaged {
		d := newDevice(cfg, netns.None())
		d.name, d.vnetHdr = ifr.Name(), vnet
		owned = true
		q, err := wrapQueue(fd, vnet, fmt.Sprintf("%q (unmanaged)", d.name))
		if err != nil {
			return nil, err
		}
		d.raw = append(d.raw, q)
		d.queues = append(d.queues, &queue{Device: q, d: d})
		d.adoptedFD = cfg.FD
		return d, nil
	}
	// Find the device's namespace through the descriptor; fall back to
	// Config.Netns (or the current namespace) if the kernel refuses.
	ns := netns.None()
	if nsfd, err := unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS); err == nil {
		ns = netns.NsHandle(nsfd)
	} else if ns, err = openNetns(cfg.Netns); err != nil {
		return nil, err
	}
	d := newDevice(cfg, ns)
	d.name = ifr.Name()
	d.vnetHdr = vnet
	defer func() {
		if err != nil {
			d.Close() // adoptedFD is still -1: the caller's fd stays open
		}
	}()
	err = inNetns(ns, func() error {
		var err error
		d.ctl, err = controlSocket(d.where())
		return err
	})
	if err != nil {
		return nil, err
	}
	owned = true // wrapQueue closes or keeps fd from here on
	q, err := wrapQueue(fd, vnet, d.subject())
	if err != nil {
		return nil, err
	}
	d.raw = append(d.raw, q)
	if err := d.setup(cfg); err != nil {
		return nil, err
	}
	d.adoptedFD = cfg.FD
	return d, nil
}

// setup runs after the queues exist: it opens the netlink handle, applies
// the link configuration, verifies offloads and starts monitoring.
func (d *Device) setup(cfg *Config) error {
	h, err := netlink.NewHandleAt(d.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return wrapSys("netlink socket in", d.where(), err)
	}
	d.ctlMu.Lock()
	d.nl = h
	d.ctlMu.Unlock()
	link, err := h.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("tundev: find link %s: %w", d.subject(), err)
	}
	if _, ok := link.(*netlink.Tuntap); !ok {
		return fmt.Errorf("tundev: %s: %w: link is of type %q (descriptor from another namespace?)",
			d.subject(), ErrNotTUN, link.Type())
	}
	d.index = link.Attrs().Index
	for _, q := range d.raw {
		d.queues = append(d.queues, &queue{Device: q, d: d})
	}
	if err := d.configure(cfg, link); err != nil {
		return err
	}
	if d.vnetHdr {
		o, err := d.Offloads()
		if err != nil {
			return fmt.Errorf("tundev: read offloads of %s: %w", d.subject(), err)
		}
		if !o.Checksum || !o.TSO4 || !o.TSO6 {
			return fmt.Errorf("tundev: %s: %w (%v); set NoOffload to run without", d.subject(), ErrOffload, o)
		}
	}
	return d.startWatcher()
}

// configure applies MTU, addresses, link state and routes, in the order
// the kernel needs (routes last, after the link is up).
func (d *Device) configure(cfg *Config, link netlink.Link) error {
	mtu := cfg.MTU
	if mtu == 0 && d.created {
		mtu = DefaultMTU
	}
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := d.nl.LinkSetMTU(link, mtu); err != nil {
			return wrapSys("set MTU of", d.subject(), err)
		}
	}
	for _, p := range cfg.Addresses {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// TUN links are NOARP, so the kernel skips duplicate
			// address detection anyway; say so explicitly so the
			// address is never tentative.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := d.nl.AddrReplace(link, a); err != nil {
			return wrapSys("add address "+p.String()+" to", d.subject(), err)
		}
	}
	if cfg.Up {
		if err := d.nl.LinkSetUp(link); err != nil {
			return wrapSys("bring up", d.subject(), err)
		}
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{LinkIndex: d.index, Dst: ipNet(p)}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := d.nl.RouteReplace(r); err != nil {
			return wrapSys("add route "+p.String()+" via", d.subject(), err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// where describes the device's namespace for messages.
func (d *Device) where() string {
	if d.netns == "" {
		if d.ns.IsOpen() {
			return "the descriptor's namespace"
		}
		return "the current namespace"
	}
	return "netns " + netnsPath(d.netns)
}

// subject names the device for messages.
func (d *Device) subject() string { return fmt.Sprintf("%q in %s", d.name, d.where()) }

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Index returns the interface index in the device's namespace.
func (d *Device) Index() int { return d.index }

// Created reports whether Open created the device (it disappears on Close)
// rather than adopting a descriptor.
func (d *Device) Created() bool { return d.created }

// Queues returns the device's queues, one wireguard tun.Device each. Use
// them for Read, Write and BatchSize; closing one detaches that queue only.
// Their Events channels carry nothing (they are unmonitored): use
// Device.Events. The slice is a copy.
func (d *Device) Queues() []tun.Device {
	return append([]tun.Device(nil), d.queues...)
}

// BatchSize is the largest number of packets one Read or Write on a queue
// handles: conn.IdealBatchSize (128) with offloads, 1 without. It is the
// same for every queue and never changes.
func (d *Device) BatchSize() int {
	if len(d.raw) == 0 {
		return 1
	}
	return d.raw[0].BatchSize()
}

// MTU returns the link's current MTU, asked over netlink in the device's
// namespace.
func (d *Device) MTU() (int, error) {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.nl == nil {
		return 0, os.ErrClosed
	}
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		return 0, fmt.Errorf("tundev: MTU of %s: %w", d.subject(), err)
	}
	return link.Attrs().MTU, nil
}

// LinkStats returns the kernel's counters of the link, asked over netlink
// in the device's namespace. From the kernel's side of a TUN device, "tx"
// is what it handed to the router and "rx" what the router wrote; TxDropped
// counts packets the kernel dropped because the router did not read them
// fast enough (its queue of txqueuelen packets was full): the pipeline's
// backpressure ends there.
func (d *Device) LinkStats() (LinkStats, error) {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.nl == nil {
		return LinkStats{}, os.ErrClosed
	}
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		return LinkStats{}, fmt.Errorf("tundev: statistics of %s: %w", d.subject(), err)
	}
	st := link.Attrs().Statistics
	if st == nil {
		return LinkStats{}, fmt.Errorf("tundev: no statistics for %s", d.subject())
	}
	return LinkStats{RxPackets: st.RxPackets, TxPackets: st.TxPackets, RxDropped: st.RxDropped,
		TxDropped: st.TxDropped, RxErrors: st.RxErrors, TxErrors: st.TxErrors}, nil
}

// Offloads returns the offloads the kernel has active on the link now.
func (d *Device) Offloads() (Offloads, error) {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.ctl < 0 {
		return Offloads{VNetHdr: d.vnetHdr}, os.ErrClosed
	}
	return readOffloads(d.ctl, d.name, d.vnetHdr)
}

// Events returns the channel of link state changes (see Event). It is
// closed by Close. If the consumer falls behind, older events are dropped
// and the newest is kept.
func (d *Device) Events() <-chan Event { return d.events }

// Close stops monitoring and closes every queue and the control sockets.
// A created device disappears from the kernel when its last queue closes;
// for an adopted descriptor only the descriptor is closed. Pending Reads
// and Writes return os.ErrClosed. Close is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.stop != nil {
			close(d.stop)
			<-d.watchDone
		} else {
			close(d.events)
		}
		for _, q := range d.raw {
			if err := q.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if d.adoptedFD >= 0 {
			if err := unix.Close(d.adoptedFD); err != nil {
				errs = append(errs, fmt.Errorf("close adopted fd %d: %w", d.adoptedFD, err))
			}
		}
		d.ctlMu.Lock()
		if d.nl != nil {
			d.nl.Close()
			d.nl = nil
		}
		if d.ctl >= 0 {
			unix.Close(d.ctl)
			d.ctl = -1
		}
		d.ctlMu.Unlock()
		if d.ns.IsOpen() {
			d.ns.Close()
		}
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("tundev: close %s: %w", d.subject(), err)
		}
	})
	return d.closeErr
}

package tundev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tunrouter/router/tundev/tundevtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// testOffset is the headroom the tests leave in front of every packet.
const testOffset = 16

var (
	nsAddr4   = netip.MustParsePrefix("10.77.0.1/24")
	nsAddr6   = netip.MustParsePrefix("fd77::1/64")
	route4    = netip.MustParsePrefix("10.78.0.0/16")
	route6    = netip.MustParsePrefix("fd78::/48")
	remote4   = netip.MustParseAddr("10.78.1.2") // routed into the TUN
	localAddr = nsAddr4.Addr()
)

// openTest opens cfg and closes the device when the test ends.
func openTest(t *testing.T, cfg Config) *Device {
	t.Helper()
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// nsHandle opens a netlink handle in the namespace at path.
func nsHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// received is one packet read from a queue.
type received struct {
	queue int
	batch int // number of packets the Read that returned it yielded
	data  []byte
}

// startReaders reads all queues of d in the background until d is closed
// and delivers copies of the packets. The readers are stopped and waited
// for in t.Cleanup (which closes d first).
func startReaders(t *testing.T, d *Device) <-chan received {
	t.Helper()
	out := make(chan received, 4096)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for qi, q := range d.Queues() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs := q.BatchSize()
			bufs := make([][]byte, bs)
			sizes := make([]int, bs)
			for i := range bufs {
				bufs[i] = make([]byte, testOffset+65535)
			}
			for {
				n, err := q.Read(bufs, sizes, testOffset)
				for i := 0; i < n; i++ {
					p := received{queue: qi, batch: n, data: bytes.Clone(bufs[i][testOffset : testOffset+sizes[i]])}
					select {
					case out <- p:
					case <-quit:
						return
					}
				}
				if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
					return
				}
			}
		}()
	}
	t.Cleanup(func() {
		d.Close()
		close(quit)
		wg.Wait()
	})
	return out
}

// waitFor returns the first packet from ch that match accepts.
func waitFor(t *testing.T, ch <-chan received, what string, match func(received, pkt4) bool) received {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-ch:
			if p, ok := parse4(r.data); ok && match(r, p) {
				return r
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
			return received{}
		}
	}
}

// writePacket writes one packet (built by fill into a buffer with
// testOffset headroom) to q.
func writePacket(t *testing.T, q tun.Device, fill func(b []byte) int) {
	t.Helper()
	b := make([]byte, testOffset+65535)
	n := fill(b[testOffset:])
	if _, err := q.Write([][]byte{b[:testOffset+n]}, testOffset); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// udpFromNetns creates a UDP socket inside the namespace at path,
// connected to dst.
func udpFromNetns(t *testing.T, path string, dst netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := tundevtest.InNetns(path, func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		t.Fatalf("udp socket in %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tunFlags(t *testing.T, q tun.Device) uint16 {
	t.Helper()
	name, err := q.Name()
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq(name)
	sc, err := q.File().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ierr error
	if err := sc.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("TUNGETIFF: %v", ierr)
	}
	return ifr.Uint16()
}

func TestOpenInNetns(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	tests := []struct {
		name      string
		queues    int
		noOffload bool
	}{
		{"single-offload", 1, false},
		{"single-no-offload", 1, true},
		{"multiqueue-2-offload", 2, false},
		{"multiqueue-2-no-offload", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nsName, nsPath := tundevtest.NewNetns(t, "tundev")
			const mtu = 1400
			d := openTest(t, Config{
				Name:      "rt0",
				Netns:     nsPath,
				MTU:       mtu,
				Addresses: []netip.Prefix{nsAddr4, nsAddr6},
				Routes:    []netip.Prefix{route4, route6},
				Queues:    tt.queues,
				NoOffload: tt.noOffload,
				Up:        true,
			})
			if d.Name() != "rt0" || !d.Created() {
				t.Fatalf("Name()=%q Created()=%v", d.Name(), d.Created())
			}

			// The link lives in the namespace, not in ours.
			h := nsHandle(t, nsPath)
			link, err := h.LinkByName("rt0")
			if err != nil {
				t.Fatalf("link not in %s: %v", nsName, err)
			}
			if _, err := netlink.LinkByName("rt0"); err == nil {
				t.Errorf("rt0 also visible in the test's own namespace")
			}
			attrs := link.Attrs()
			if attrs.Index != d.Index() {
				t.Errorf("Index()=%d, link index %d", d.Index(), attrs.Index)
			}
			if _, ok := link.(*netlink.Tuntap); !ok {
				t.Errorf("link type %q, want tuntap", link.Type())
			}
			if attrs.Flags&net.FlagUp == 0 || attrs.RawFlags&unix.IFF_RUNNING == 0 {
				t.Errorf("link flags %v (raw %#x): want up and running", attrs.Flags, attrs.RawFlags)
			}
			if attrs.MTU != mtu {
				t.Errorf("link MTU %d, want %d", attrs.MTU, mtu)
			}
			if got, err := d.MTU(); err != nil || got != mtu {
				t.Errorf("Device.MTU() = %d, %v; want %d", got, err, mtu)
			}
			addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []netip.Prefix{nsAddr4, nsAddr6} {
				found := false
				for _, a := range addrs {
					ip, _ := netip.AddrFromSlice(a.IP)
					ones, _ := a.Mask.Size()
					if netip.PrefixFrom(ip.Unmap(), ones) == want {
						found = true
					}
				}
				if !found {
					t.Errorf("address %v missing; have %v", want, addrs)
				}
			}
			routes, err := h.RouteList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []netip.Prefix{route4, route6} {
				found := false
				for _, r := range routes {
					if r.Dst == nil || r.LinkIndex != attrs.Index {
						continue
					}
					ip, _ := netip.AddrFromSlice(r.Dst.IP)
					ones, _ := r.Dst.Mask.Size()
					if netip.PrefixFrom(ip.Unmap(), ones) == want {
						found = true
					}
				}
				if !found {
					t.Errorf("route %v via rt0 missing; have %v", want, routes)
				}
			}

			// Queues, flags and batch size.
			qs := d.Queues()
			if len(qs) != tt.queues {
				t.Fatalf("%d queues, want %d", len(qs), tt.queues)
			}
			wantBatch := 128
			if tt.noOffload {
				wantBatch = 1
			}
			if d.BatchSize() != wantBatch {
				t.Errorf("BatchSize()=%d, want %d", d.BatchSize(), wantBatch)
			}
			for i, q := range qs {
				f := tunFlags(t, q)
				if got, want := f&unix.IFF_MULTI_QUEUE != 0, tt.queues > 1; got != want {
					t.Errorf("queue %d: IFF_MULTI_QUEUE=%v, want %v (flags %#x)", i, got, want, f)
				}
				if got, want := f&unix.IFF_VNET_HDR != 0, !tt.noOffload; got != want {
					t.Errorf("queue %d: IFF_VNET_HDR=%v, want %v", i, got, want)
				}
				if q.BatchSize() != wantBatch {
					t.Errorf("queue %d: BatchSize()=%d, want %d", i, q.BatchSize(), wantBatch)
				}
				if m, err := q.MTU(); err != nil || m != mtu {
					t.Errorf("queue %d: MTU() = %d, %v; want %d (namespace-aware)", i, m, err, mtu)
				}
			}

			pkts := startReaders(t, d)

			// Kernel -> device: UDP datagrams from sockets in the namespace
			// to an address routed into the TUN. Several flows, so that a
			// multi-queue device spreads them over its queues.
			flows := 1
			if tt.queues > 1 {
				flows = 64
			}
			queuesSeen := map[int]bool{}
			for i := 0; i < flows; i++ {
				c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9999))
				msg := fmt.Appendf(nil, "hello %d", i)
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("send: %v", err)
				}
				r := waitFor(t, pkts, string(msg), func(r received, p pkt4) bool {
					_, dport := p.ports()
					return p.proto == protoUDP && p.dst == remote4 && dport == 9999 && bytes.Equal(p.l4[8:], msg)
				})
				p, _ := parse4(r.data)
				if p.src != localAddr || !ipHeaderOK(r.data) || !p.l4ChecksumOK() {
					t.Errorf("UDP packet src %v (want %v), ip csum ok %v, udp csum ok %v",
						p.src, localAddr, ipHeaderOK(r.data), p.l4ChecksumOK())
				}
				queuesSeen[r.queue] = true
			}
			if len(queuesSeen) != tt.queues {
				t.Errorf("packets of %d flows arrived on queues %v, want all %d queues used", flows, queuesSeen, tt.queues)
			}

			// Device -> kernel -> device: an ICMP echo request to the
			// namespace's own address, written to every queue, is answered
			// through the TUN.
			for qi, q := range qs {
				id, seq := uint16(0x4242), uint16(qi+1)
				payload := []byte("tundev echo payload")
				writePacket(t, q, func(b []byte) int { return echo4(b, remote4, localAddr, id, seq, payload) })
				r := waitFor(t, pkts, "echo reply", func(r received, p pkt4) bool {
					return p.proto == protoICMP && p.dst == remote4 && len(p.l4) >= 8 &&
						p.l4[0] == 0 && uint16(p.l4[6])<<8|uint16(p.l4[7]) == seq
				})
				p, _ := parse4(r.data)
				if p.src != localAddr || uint16(p.l4[4])<<8|uint16(p.l4[5]) != id ||
					!bytes.Equal(p.l4[8:], payload) || csum(p.l4, 0) != 0 || !ipHeaderOK(r.data) {
					t.Errorf("queue %d: bad echo reply % x", qi, r.data)
				}
			}

			// Close removes the created link with the last queue.
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := h.LinkByName("rt0"); err == nil {
				t.Errorf("rt0 still exists after Close")
			}
			if _, ok := <-d.Events(); ok {
				// Drain: events may be buffered, but the channel must be closed.
				for range d.Events() {
				}
			}
			if err := d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := qs[0].Read([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Close: %v, want os.ErrClosed", err)
			}
			checkNoWatchers(t)
		})
	}
}

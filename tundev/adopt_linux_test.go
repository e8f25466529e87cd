package tundev

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// launcherTUN plays a rootless launcher: it opens a TUN device called name
// inside the namespace at nsPath with the given TUNSETIFF flags and returns
// the descriptor. persist makes the device outlive its descriptors.
func launcherTUN(t *testing.T, nsPath, name string, flags uint16, persist bool) int {
	t.Helper()
	fd := -1
	err := tundevtest.InNetns(nsPath, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if name == "-" { // leave unattached
			return nil
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return err
		}
		if persist {
			return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("launcher TUN %q: %v", name, err)
	}
	return fd
}

func TestAdoptFD(t *testing.T) {
	tundevtest.RequirePrivileges(t)

	t.Run("configured-by-launcher", func(t *testing.T) {
		nsName, nsPath := tundevtest.NewNetns(t, "tundev")
		fd := launcherTUN(t, nsPath, "adopt0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR, false)
		tundevtest.IP(t, nsName, "addr", "add", "10.79.0.1/24", "dev", "adopt0")
		tundevtest.IP(t, nsName, "link", "set", "adopt0", "up")

		// No Netns given: the device's namespace is found through the
		// descriptor.
		d, err := Open(Config{FD: fd})
		if err != nil {
			unix.Close(fd)
			t.Fatalf("adopt: %v", err)
		}
		t.Cleanup(func() { d.Close() })
		if d.Name() != "adopt0" || d.Created() {
			t.Errorf("Name()=%q Created()=%v, want adopt0, false", d.Name(), d.Created())
		}
		if d.BatchSize() != 128 {
			t.Errorf("BatchSize()=%d, want 128 for an IFF_VNET_HDR descriptor", d.BatchSize())
		}
		if o, err := d.Offloads(); err != nil || !o.VNetHdr || !o.TSO4 || !o.TSO6 {
			t.Errorf("Offloads() = %v, %v; want vnet header and TSO enabled on the adopted queue", o, err)
		}
		if m, err := d.MTU(); err != nil || m != 1500 {
			t.Errorf("MTU() = %d, %v; want 1500 from the device's namespace", m, err)
		}
		select {
		case ev := <-d.Events():
			if ev.Kind != EventUp {
				t.Errorf("first event %v, want up", ev)
			}
		case <-timeout():
			t.Fatal("no initial event")
		}

		pkts := startReaders(t, d)
		dst := netip.MustParseAddrPort("10.79.0.2:7")
		c := udpFromNetns(t, nsPath, dst)
		if _, err := c.Write([]byte("adopted")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pkts, "datagram on adopted queue", func(r received, p pkt4) bool {
			return p.proto == protoUDP && p.dst == dst.Addr() && string(p.l4[8:]) == "adopted"
		})

		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if tundevtest.FDOpen(fd) {
			t.Errorf("adopted fd %d still open after Close", fd)
		}
		h := nsHandle(t, nsPath)
		if _, err := h.LinkByName("adopt0"); err == nil {
			t.Errorf("non-persistent adopted device still exists after its only descriptor was closed")
		}
	})

	t.Run("persistent-configured-by-router", func(t *testing.T) {
		nsName, nsPath := tundevtest.NewNetns(t, "tundev")
		fd := launcherTUN(t, nsPath, "adopt1", unix.IFF_TUN|unix.IFF_NO_PI, true)
		d, err := Open(Config{
			FD:        fd,
			Netns:     nsPath,
			MTU:       1300,
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.79.1.1/24")},
			Routes:    []netip.Prefix{netip.MustParsePrefix("10.80.0.0/16")},
			Up:        true,
		})
		if err != nil {
			unix.Close(fd)
			t.Fatalf("adopt: %v", err)
		}
		t.Cleanup(func() { d.Close() })
		if d.BatchSize() != 1 {
			t.Errorf("BatchSize()=%d, want 1 for a descriptor without IFF_VNET_HDR", d.BatchSize())
		}
		if o, err := d.Offloads(); err != nil || o.VNetHdr || o.TSO4 {
			t.Errorf("Offloads() = %v, %v; want none", o, err)
		}
		h := nsHandle(t, nsPath)
		link, err := h.LinkByName("adopt1")
		if err != nil {
			t.Fatal(err)
		}
		if link.Attrs().MTU != 1300 || link.Attrs().OperState == netlink.OperDown {
			t.Errorf("adopted link MTU %d oper %v, want 1300 and not down", link.Attrs().MTU, link.Attrs().OperState)
		}
		if out := tundevtest.IP(t, nsName, "route", "show", "10.80.0.0/16"); out == "" {
			t.Errorf("route 10.80.0.0/16 not installed")
		}

		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if tundevtest.FDOpen(fd) {
			t.Errorf("adopted fd %d still open after Close", fd)
		}
		// Only the descriptor was closed: the persistent link stays.
		if _, err := h.LinkByName("adopt1"); err != nil {
			t.Errorf("persistent link gone after Close of the adopted fd: %v", err)
		}
		if err := exec.Command("ip", "-n", nsName, "link", "del", "adopt1").Run(); err != nil {
			t.Errorf("delete persistent link: %v", err)
		}
	})
}

func TestAdoptErrors(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	_, nsPath := tundevtest.NewNetns(t, "tundev")

	pipeFD := func(t *testing.T) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		fd, err := unix.Dup(int(r.Fd()))
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	tests := []struct {
		name string
		fd   func(t *testing.T) int
	}{
		{"pipe", pipeFD},
		{"unattached-clone-device", func(t *testing.T) int { return launcherTUN(t, nsPath, "-", 0, false) }},
		{"tap", func(t *testing.T) int { return launcherTUN(t, nsPath, "tap0", unix.IFF_TAP|unix.IFF_NO_PI, false) }},
		{"vnet-header-size-12", func(t *testing.T) int {
			fd := launcherTUN(t, nsPath, "vnet12", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR, false)
			if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, 12); err != nil {
				t.Fatal(err)
			}
			return fd
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := tt.fd(t)
			defer unix.Close(fd)
			d, err := Open(Config{FD: fd})
			if err == nil {
				d.Close()
				t.Fatalf("Open adopted %s: no error", tt.name)
			}
			if !errors.Is(err, ErrNotTUN) {
				t.Errorf("error %v, want ErrNotTUN", err)
			}
			if !tundevtest.FDOpen(fd) {
				t.Errorf("a failed adoption closed the caller's descriptor")
			}
		})
	}
	t.Run("closed-descriptor", func(t *testing.T) {
		fd := pipeFD(t)
		unix.Close(fd)
		if _, err := Open(Config{FD: fd}); !errors.Is(err, ErrNotTUN) || !errors.Is(err, unix.EBADF) {
			t.Errorf("error %v, want ErrNotTUN wrapping EBADF", err)
		}
	})
	checkNoWatchers(t)
}

package tundev

import (
	"errors"
	"os"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
	"golang.org/x/sys/unix"
)

// TestAdoptUnmanaged: a descriptor is adopted without touching its link's
// namespace (as for a rootless launcher's device the router cannot reach):
// the queue works, with its offloads, and nothing link-level is known.
func TestAdoptUnmanaged(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	fd := launcherTUN(t, nsPath, "unmgd0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR, false)
	tundevtest.IP(t, nsName, "link", "set", "unmgd0", "up")
	d, err := Open(Config{FD: fd, Unmanaged: true})
	if err != nil {
		unix.Close(fd)
		t.Fatalf("adopt: %v", err)
	}
	if d.Name() != "unmgd0" || d.BatchSize() != 128 {
		t.Errorf("Name()=%q BatchSize()=%d", d.Name(), d.BatchSize())
	}
	if q, ok := d.Queues()[0].(interface{ Offloading() bool }); !ok || !q.Offloading() {
		t.Error("the queue of a virtio-net-header descriptor does not offload")
	}
	if _, err := d.MTU(); err == nil {
		t.Error("MTU() of an unmanaged device answered")
	}
	// A packet written to the queue appears on the link: its TX counter
	// in the namespace moves.
	pkt := make([]byte, 10+28)
	p := pkt[10:]
	p[0], p[8], p[9] = 0x45, 64, 17
	p[3] = 28
	copy(p[12:], []byte{10, 99, 0, 1})
	copy(p[16:], []byte{10, 99, 0, 2})
	if _, err := d.Queues()[0].Write([][]byte{pkt}, 10); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if tundevtest.FDOpen(fd) {
		t.Error("Close left the adopted descriptor open")
	}
	if _, err := d.MTU(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("MTU after Close: %v", err)
	}
}

func TestUnmanagedValidation(t *testing.T) {
	for _, c := range []Config{
		{Unmanaged: true},
		{Unmanaged: true, FD: 5, MTU: 1500},
		{Unmanaged: true, FD: 5, Up: true},
	} {
		if _, err := Open(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", c, err)
		}
	}
}

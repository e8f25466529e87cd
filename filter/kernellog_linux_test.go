//go:build klogtest

package filter

// Capture of testdata/kernel_log.txt. Run as root, on a scratch machine
// (it sets net.netfilter.nf_log_all_netns for the duration):
//
//	go test -c -tags klogtest -o /tmp/klog.test ./filter
//	ip netns add klog && echo 1 > /proc/sys/net/netfilter/nf_log_all_netns
//	ip netns exec klog /tmp/klog.test -test.run TestKernelLogCapture &
//	sleep 1; ip netns exec klog sh -c 'ip link set tunlog0 up &&
//	  nft add table inet t &&
//	  nft add chain inet t pre "{ type filter hook prerouting priority 0; }" &&
//	  nft add rule inet t pre log prefix \"KLOG: \"'
//	wait; echo 0 > /proc/sys/net/netfilter/nf_log_all_netns; ip netns del klog
//	dmesg | grep 'KLOG: ' | sed 's/^\[[^]]*\] //; s/ $//' > filter/testdata/kernel_log.txt

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestKernelLogCapture(t *testing.T) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var ifr [40]byte
	copy(ifr[:], "tunlog0")
	*(*uint16)(unsafe.Pointer(&ifr[16])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		t.Fatal(e)
	}
	time.Sleep(3 * time.Second) // time to bring the link up and add the rule
	for i, p := range kernelLogPackets() {
		if _, err := unix.Write(fd, p); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}

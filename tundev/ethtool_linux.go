package tundev

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offloads reports which offloads are in effect on a device, as the kernel
// sees them (the active features of the link, like `ethtool -k`).
type Offloads struct {
	// VNetHdr: the queues were opened with IFF_VNET_HDR, so the kernel may
	// hand over and accept super-packets and BatchSize is larger than one.
	VNetHdr bool
	// Checksum: the device accepts packets whose checksum is left to it
	// (tx-checksum-ip-generic); a prerequisite for TSO/USO.
	Checksum bool
	// TSO4 and TSO6: TCP segmentation offload for IPv4 and IPv6
	// (tx-tcp-segmentation, tx-tcp6-segmentation).
	TSO4, TSO6 bool
	// USO: UDP segmentation offload (tx-udp-segmentation, Linux 6.2+).
	USO bool
}

func (o Offloads) String() string {
	return fmt.Sprintf("vnet_hdr=%v csum=%v tso4=%v tso6=%v uso=%v", o.VNetHdr, o.Checksum, o.TSO4, o.TSO6, o.USO)
}

// ethSSFeatures is ETH_SS_FEATURES from <linux/ethtool.h>.
const ethSSFeatures = 4

// ifreqData is struct ifreq with the ifr_data member: the name followed by
// a pointer, padded to the size of the union.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolIoctl issues SIOCETHTOOL on fd (a socket in the device's
// namespace) for interface name, with data pointing at the command struct.
func ethtoolIoctl(fd int, name string, data unsafe.Pointer) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	ifr.data = data
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if e != 0 {
		return e
	}
	return nil
}

// ethtoolFeatures returns the active netdev features of name by feature
// string ("tx-tcp-segmentation": true). It uses the ioctl interface:
// ETHTOOL_GSSET_INFO for the count, ETHTOOL_GSTRINGS for the names and
// ETHTOOL_GFEATURES for the bits, so no bit numbers are hard-coded.
func ethtoolFeatures(fd int, name string) (map[string]bool, error) {
	var info struct {
		cmd, reserved uint32
		mask          uint64
		data          [1]uint32
	}
	info.cmd = unix.ETHTOOL_GSSET_INFO
	info.mask = 1 << ethSSFeatures
	if err := ethtoolIoctl(fd, name, unsafe.Pointer(&info)); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if info.mask&(1<<ethSSFeatures) == 0 || info.data[0] == 0 || info.data[0] > 4096 {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: no feature strings")
	}
	n := int(info.data[0])

	const strLen = 32 // ETH_GSTRING_LEN
	strs := make([]byte, 12+n*strLen)
	binary.NativeEndian.PutUint32(strs[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(strs[4:], ethSSFeatures)
	binary.NativeEndian.PutUint32(strs[8:], uint32(n))
	if err := ethtoolIoctl(fd, name, unsafe.Pointer(&strs[0])); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	if got := int(binary.NativeEndian.Uint32(strs[8:])); got < n {
		n = got
	}

	words := (n + 31) / 32
	// struct ethtool_gfeatures: cmd, size, then size blocks of
	// {available, requested, active, never_changed}.
	feat := make([]uint32, 2+4*words)
	feat[0] = unix.ETHTOOL_GFEATURES
	feat[1] = uint32(words)
	if err := ethtoolIoctl(fd, name, unsafe.Pointer(&feat[0])); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}

	out := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		s := strs[12+i*strLen : 12+(i+1)*strLen]
		fname := unix.ByteSliceToString(s)
		if fname == "" {
			continue
		}
		active := feat[2+4*(i/32)+2]
		out[fname] = active&(1<<(i%32)) != 0
	}
	return out, nil
}

// readOffloads queries the kernel for the offloads active on name.
func readOffloads(fd int, name string, vnetHdr bool) (Offloads, error) {
	f, err := ethtoolFeatures(fd, name)
	if err != nil {
		return Offloads{VNetHdr: vnetHdr}, err
	}
	return Offloads{
		VNetHdr:  vnetHdr,
		Checksum: f["tx-checksum-ip-generic"],
		TSO4:     f["tx-tcp-segmentation"],
		TSO6:     f["tx-tcp6-segmentation"],
		USO:      f["tx-udp-segmentation"],
	}, nil
}

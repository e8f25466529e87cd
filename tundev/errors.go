package tundev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Sentinel errors. Every error returned by Open wraps at most one of them,
// together with the underlying system error, so both errors.Is(err,
// ErrPermission) and errors.Is(err, syscall.EPERM) hold. None of them is
// recoverable by retrying the same call: they need a change of
// configuration or of the host.
var (
	// ErrNoTUN reports that the TUN clone device /dev/net/tun is missing or
	// that the kernel has no tun driver (module not loaded, or a container
	// started without access to the device node).
	ErrNoTUN = errors.New("TUN device node /dev/net/tun is not available")

	// ErrPermission reports that the process may not create or configure
	// the device: it needs CAP_NET_ADMIN in the user namespace that owns the
	// target network namespace (EPERM), or read/write access to
	// /dev/net/tun (EACCES). The error text carries a hint.
	ErrPermission = errors.New("insufficient privileges")

	// ErrDeviceBusy reports that an interface with the requested name
	// already exists in the target namespace (a TUN device in use by another
	// process, a persistent TUN device, or any other kind of link). Open
	// never attaches to an existing device by name; adopt its file
	// descriptor with Config.FD instead.
	ErrDeviceBusy = errors.New("device name already in use")

	// ErrNoNetns reports that Config.Netns does not name an existing
	// network namespace (missing file, or a file that is not a network
	// namespace handle).
	ErrNoNetns = errors.New("network namespace not found")

	// ErrNotTUN reports that the descriptor passed in Config.FD is not an
	// attached TUN device usable by the router (it is closed, not attached
	// to a device, a TAP device, uses a virtio-net header size other than
	// 10, or is not a TUN at all).
	ErrNotTUN = errors.New("file descriptor is not a usable TUN device")

	// ErrInvalidConfig reports a Config that Open rejects before touching
	// the system (bad name, MTU, queue count or prefix).
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrOffload reports that offloads were requested, the device was
	// opened with IFF_VNET_HDR, but the kernel does not have TCP
	// segmentation offload active on it afterwards. Set Config.NoOffload to
	// run without offloads.
	ErrOffload = errors.New("offloads requested but not active")

	// ErrUnsupported reports that TUN devices are not supported on this
	// operating system by this package (it is Linux only).
	ErrUnsupported = errors.New("TUN devices are only supported on Linux")
)

// Hints appended to the text of wrapped errors, for operators.
const (
	hintPermission = "creating or configuring a TUN device needs CAP_NET_ADMIN in the user namespace " +
		"that owns the target network namespace: run as root, grant the binary cap_net_admin " +
		"(setcap cap_net_admin+ep), run inside a user+network namespace (unshare -Urn, podman/rootlesskit), " +
		"or let a rootless launcher pass a configured TUN descriptor (Config.FD); `router doctor` shows what is missing"
	hintNoTUN = "load the tun module (modprobe tun), create the node (mknod /dev/net/tun c 10 200), " +
		"or start the container with access to /dev/net/tun (--device /dev/net/tun)"
	hintBusy = "pick another name, remove the existing link (ip link del NAME), " +
		"or adopt an already open TUN descriptor with Config.FD"
)

// wrapSys turns a system error from operation op into an error that wraps
// the matching sentinel (if any) and the original error. subject names what
// was operated on (device, namespace) for the message.
func wrapSys(op, subject string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("tundev: %s %s: %w", op, subject, err)
	}
	switch errno {
	case syscall.EPERM, syscall.EACCES:
		return fmt.Errorf("tundev: %s %s: %w: %w (hint: %s)", op, subject, ErrPermission, err, hintPermission)
	case syscall.EBUSY:
		return fmt.Errorf("tundev: %s %s: %w: %w (hint: %s)", op, subject, ErrDeviceBusy, err, hintBusy)
	}
	return fmt.Errorf("tundev: %s %s: %w", op, subject, err)
}

// wrapOpenClone classifies an error from opening the TUN clone device.
func wrapOpenClone(path string, err error) error {
	var errno syscall.Errno
	if errors.Is(err, os.ErrNotExist) || (errors.As(err, &errno) && (errno == syscall.ENODEV || errno == syscall.ENXIO)) {
		return fmt.Errorf("tundev: open %s: %w: %w (hint: %s)", path, ErrNoTUN, err, hintNoTUN)
	}
	return wrapSys("open", path, err)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("tundev: %w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

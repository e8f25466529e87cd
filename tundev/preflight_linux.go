package tundev

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// capNetAdmin is the bit of CAP_NET_ADMIN in the capability sets.
const capNetAdmin = 12

// preflightEnv holds the paths Preflight reads, so tests can substitute
// files.
type preflightEnv struct {
	tunPath string // the clone device
	procDir string // usually /proc
	probe   bool   // create and remove a throw-away TUN device
}

// Preflight checks whether this process can run the router and reports
// what is missing, without failing early: the TUN node and its driver,
// permission to create a device (by creating and removing a throw-away TUN
// device with offloads, in netns if not empty), CAP_NET_ADMIN, and the
// user-namespace sysctls that rootless mode depends on. The probe device
// exists for microseconds and is not persistent.
func Preflight(netns string) Report {
	return preflight(preflightEnv{tunPath: cloneDevice, procDir: "/proc", probe: true}, netns)
}

func preflight(env preflightEnv, netnsName string) Report {
	var r Report
	add := func(c Check) { r.Checks = append(r.Checks, c) }

	nodeOK := checkTUNNode(env.tunPath, add)
	checkCapNetAdmin(env.procDir, add)

	ns, nsOK := netns.None(), true
	if netnsName != "" {
		h, err := openNetns(netnsName)
		if err != nil {
			nsOK = false
			add(Check{Name: "netns", Status: CheckFail, Detail: err.Error(),
				Hint: "create it first (ip netns add NAME) or fix the path"})
		} else {
			ns = h
			defer h.Close()
			add(Check{Name: "netns", Status: CheckOK, Detail: netnsPath(netnsName) + " is a network namespace"})
		}
	}

	switch {
	case !env.probe:
	case !nodeOK || !nsOK:
		add(Check{Name: "tun-create", Status: CheckSkipped, Detail: "skipped: an earlier check failed"})
	default:
		add(probeCreate(env.tunPath, ns))
	}

	checkUserns(env.procDir, add)
	return r
}

// checkTUNNode checks that the clone device exists, is the right character
// device and can be opened read-write.
func checkTUNNode(path string, add func(Check)) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		add(Check{Name: "tun-node", Status: CheckFail, Detail: fmt.Sprintf("%s: %v", path, err), Hint: hintNoTUN})
		return false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 200 {
		add(Check{Name: "tun-node", Status: CheckFail,
			Detail: fmt.Sprintf("%s is not the TUN character device 10:200 (mode %#o, dev %d:%d)",
				path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev)),
			Hint: hintNoTUN})
		return false
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		c := Check{Name: "tun-node", Status: CheckFail, Detail: fmt.Sprintf("open %s: %v", path, err)}
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			c.Hint = hintNodeAccess
		} else {
			c.Hint = hintNoTUN
		}
		add(c)
		return false
	}
	unix.Close(fd)
	add(Check{Name: "tun-node", Status: CheckOK, Detail: path + " present and opens read-write"})
	return true
}

// checkCapNetAdmin reads the effective capability set of this process.
func checkCapNetAdmin(procDir string, add func(Check)) {
	capEff, err := readStatusHex(procDir+"/self/status", "CapEff:")
	switch {
	case err != nil:
		add(Check{Name: "cap-net-admin", Status: CheckWarn, Detail: "cannot read capabilities: " + err.Error(),
			Hint: "mount /proc, or check the capabilities by hand (getpcaps $$)"})
	case capEff&(1<<capNetAdmin) != 0:
		add(Check{Name: "cap-net-admin", Status: CheckOK, Detail: "CAP_NET_ADMIN is effective (in this process's user namespace)"})
	default:
		add(Check{Name: "cap-net-admin", Status: CheckWarn,
			Detail: "CAP_NET_ADMIN is not effective: only adopting a TUN descriptor (Config.FD) can work",
			Hint:   hintCap})
	}
}

// Hints of preflight checks.
const (
	hintCap = "run as root, grant the binary cap_net_admin (setcap cap_net_admin+ep), " +
		"or start it inside a user+network namespace (unshare -Urn, podman, rootlesskit)"
	hintNodeAccess = "make /dev/net/tun readable and writable for the router's user (it is usually mode 0666), " +
		"or let a rootless launcher pass a TUN descriptor (Config.FD)"
)

// probeCreate creates a TUN device with offloads in ns and closes it again.
func probeCreate(tunPath string, ns netns.NsHandle) Check {
	var (
		name   string
		uso    bool
		failed string // the step that failed
	)
	err := inNetns(ns, func() error {
		fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			failed = "open " + tunPath
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			failed = "create a TUN device (TUNSETIFF)"
			return err
		}
		name = ifr.Name()
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcpOffloads); err != nil {
			failed = "enable TCP offloads (TUNSETOFFLOAD)"
			return err
		}
		uso = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tcpOffloads|unix.TUN_F_USO4|unix.TUN_F_USO6) == nil
		return nil
	})
	switch {
	case err != nil && name != "":
		return Check{Name: "tun-create", Status: CheckWarn, Detail: fmt.Sprintf("%s: %v", failed, err),
			Hint: "run with offloads off (Config.NoOffload)"}
	case err != nil:
		c := Check{Name: "tun-create", Status: CheckFail, Detail: fmt.Sprintf("%s: %v", failed, err)}
		if failed == "" {
			c.Detail = err.Error()
		}
		switch {
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			c.Hint = hintCap
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
			c.Hint = hintNoTUN
		}
		return c
	case !uso:
		return Check{Name: "tun-create", Status: CheckWarn,
			Detail: "created " + name + " with TCP offloads; UDP segmentation offload unsupported (needs Linux 6.2+)",
			Hint:   "UDP throughput is lower; nothing else is affected"}
	}
	return Check{Name: "tun-create", Status: CheckOK, Detail: "created and removed " + name + " with TSO and USO offloads"}
}

// checkUserns reports the sysctls that decide whether rootless mode (a
// user namespace owning the router's network namespace) is possible.
func checkUserns(procDir string, add func(Check)) {
	const rootless = "rootless mode (user namespaces) "
	if v, err := readSysctlInt(procDir + "/sys/user/max_user_namespaces"); err != nil {
		add(Check{Name: "userns-max", Status: CheckWarn, Detail: "cannot read user.max_user_namespaces: " + err.Error(),
			Hint: "mount /proc; without user namespaces only root or cap_net_admin can create the device"})
	} else if v <= 0 {
		add(Check{Name: "userns-max", Status: CheckWarn, Detail: "user.max_user_namespaces = 0: " + rootless + "unavailable",
			Hint: "sysctl -w user.max_user_namespaces=15000"})
	} else {
		add(Check{Name: "userns-max", Status: CheckOK, Detail: "user.max_user_namespaces = " + strconv.Itoa(v)})
	}

	// Debian/Ubuntu kernels before 6.x carried this switch; upstream
	// kernels do not have it.
	if v, err := readSysctlInt(procDir + "/sys/kernel/unprivileged_userns_clone"); errors.Is(err, os.ErrNotExist) {
		add(Check{Name: "userns-clone", Status: CheckSkipped, Detail: "kernel.unprivileged_userns_clone not present (unrestricted)"})
	} else if err != nil {
		add(Check{Name: "userns-clone", Status: CheckWarn, Detail: "cannot read kernel.unprivileged_userns_clone: " + err.Error(),
			Hint: "check the sysctl by hand (sysctl kernel.unprivileged_userns_clone)"})
	} else if v == 0 {
		add(Check{Name: "userns-clone", Status: CheckWarn, Detail: "kernel.unprivileged_userns_clone = 0: unprivileged " + rootless + "unavailable",
			Hint: "sysctl -w kernel.unprivileged_userns_clone=1"})
	} else {
		add(Check{Name: "userns-clone", Status: CheckOK, Detail: "kernel.unprivileged_userns_clone = " + strconv.Itoa(v)})
	}

	// Ubuntu 23.10+ restricts unprivileged user namespaces through
	// AppArmor.
	if v, err := readSysctlInt(procDir + "/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && v != 0 {
		add(Check{Name: "userns-apparmor", Status: CheckWarn,
			Detail: "kernel.apparmor_restrict_unprivileged_userns = " + strconv.Itoa(v) + ": unprivileged user namespaces lack capabilities",
			Hint:   "add an AppArmor profile allowing userns for the launcher, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"})
	}
}

func readSysctlInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readStatusHex reads a hexadecimal field such as "CapEff:" from a
// /proc/PID/status file.
func readStatusHex(path, field string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s line", path, strings.TrimSuffix(field, ":"))
}

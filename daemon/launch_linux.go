package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/pipeline"
	"github.com/tunrouter/router/tundev"
)

// Rootless TUN devices.
//
// An unprivileged router cannot create a TUN device in another user's
// network namespace, nor enter a namespace that a user namespace owns: for
// a multithreaded process setns(2) into a network namespace needs
// CAP_SYS_ADMIN over the caller's own user namespace too, and joining a
// user namespace needs a single-threaded process. Its egress sockets must
// stay in the host's namespace all the same. So the device is created by a
// launcher that runs inside the namespace, as root of its user namespace
// (`router tun-launch`), and its descriptor is passed to the router over a
// Unix socket (SCM_RIGHTS), the way slirp4netns and pasta get theirs:
//
//   - launcher_socket = PATH: the router listens on PATH and waits; the
//     user starts `unshare --user --map-root-user --net router tun-launch
//     --socket PATH -- COMMAND`, which creates the device, hands it over
//     and runs COMMAND in the namespace.
//   - netns = "/proc/PID/ns/net" of a namespace the router may not enter
//     (for example one made by `unshare --user --map-root-user --net`):
//     the router runs the launcher itself through nsenter(1), which joins
//     the namespace's user namespace and then the namespace
//     (single-threaded, as the kernel requires), over a socket pair.
//
// The router sends the device's configuration (name, MTU, addresses,
// routes, offloads) in a launchRequest; the launcher applies it, brings
// the loopback up too, and answers with a launchReply and the descriptor.

// launchRequest is what the router asks a launcher to create.
type launchRequest struct {
	Name      string         `json:"name"`
	MTU       int            `json:"mtu"`
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	Routes    []netip.Prefix `json:"routes,omitempty"`
	Offload   bool           `json:"offload"`
}

// launchReply comes with the descriptor (or with Error and none).
type launchReply struct {
	Name  string `json:"name,omitempty"`
	Error string `json:"error,omitempty"`
}

// launcherError is a failure the launcher reported.
type launcherError struct{ msg string }

func (e *launcherError) Error() string { return "launcher: " + e.msg }

// maxLaunchMsg bounds the protocol's messages.
const maxLaunchMsg = 64 << 10

// needsJoin reports whether netns names a namespace the router may not
// enter itself: one owned by a user namespace other than the router's,
// over which it has no CAP_SYS_ADMIN.
func needsJoin(netns string) bool {
	if netns == "" || hasCapSysAdmin() {
		return false
	}
	f, err := os.Open(netnsPath(netns))
	if err != nil {
		return false // tundev reports the error
	}
	defer f.Close()
	owner, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return false
	}
	defer unix.Close(owner)
	var a, b unix.Stat_t
	if unix.Fstat(owner, &a) != nil || unix.Stat("/proc/self/ns/user", &b) != nil {
		return false
	}
	return a.Ino != b.Ino || a.Dev != b.Dev
}

func netnsPath(s string) string {
	if strings.ContainsRune(s, '/') {
		return s
	}
	return "/run/netns/" + s
}

// hasCapSysAdmin reports whether the process has CAP_SYS_ADMIN in its
// effective set.
func hasCapSysAdmin() bool { return hasCap(unix.CAP_SYS_ADMIN) }

// hasCap reports whether the process has capability c in its effective
// set.
func hasCap(c int) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps&(1<<c) != 0
		}
	}
	return false
}

func requestFor(dc Device) launchRequest {
	return launchRequest{Name: dc.Name, MTU: dc.MTU, Addresses: dc.Addresses, Routes: dc.Routes, Offload: !dc.NoOffload}
}

// openLaunched gets a TUN device's descriptor from a launcher and makes a
// pipeline port of it.
func (d *Daemon) openLaunched(dc Device) (pipeline.Port, io.Closer, error) {
	req := requestFor(dc)
	var fd int
	var name string
	var err error
	if dc.LauncherSocket != "" {
		fd, name, err = acceptLauncher(dc.LauncherSocket, req, d.log)
	} else {
		fd, name, err = joinAndLaunch(dc.Netns, req, d.log)
	}
	if err != nil {
		return pipeline.Port{}, nil, err
	}
	port, c, err := adoptLaunched(fd, name, dc)
	if err != nil {
		unix.Close(fd)
		return pipeline.Port{}, nil, err
	}
	d.log.Info("device ready (from a launcher)", "name", name, "netns", dc.Netns, "launcher_socket", dc.LauncherSocket,
		"mtu", port.MTU, "batch", port.Queues[0].BatchSize())
	return port, c, nil
}

// acceptLauncher listens on path (a Unix seqpacket socket only the
// router's user may connect to) for one launcher of the same user.
func acceptLauncher(path string, req launchRequest, log *slog.Logger) (int, string, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return -1, "", fmt.Errorf("launcher socket %s exists and is not a socket", path)
		}
		os.Remove(path) // a stale socket of an earlier run
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return -1, "", fmt.Errorf("launcher socket: %w", err)
	}
	defer os.Remove(path)
	defer ln.Close()
	log.Info("waiting for a launcher to pass the TUN device",
		"device", req.Name, "run", "unshare --user --map-root-user --net router tun-launch --socket "+path+" -- COMMAND")
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return -1, "", fmt.Errorf("launcher socket: %w", err)
		}
		if err := checkPeer(c); err != nil {
			log.Warn("launcher refused", "err", err)
			c.Close()
			continue
		}
		fd, name, err := exchange(c, req)
		c.Close()
		return fd, name, err
	}
}

// checkPeer accepts launchers of the router's own user (or root).
func checkPeer(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil {
		return cerr
	}
	if me := uint32(os.Getuid()); cred.Uid != me && cred.Uid != 0 {
		return fmt.Errorf("launcher of uid %d (pid %d) is not the router's user %d", cred.Uid, cred.Pid, me)
	}
	return nil
}

// exchange sends the request and receives the reply with the descriptor.
func exchange(c *net.UnixConn, req launchRequest) (int, string, error) {
	msg, _ := json.Marshal(req)
	if _, err := c.Write(msg); err != nil {
		return -1, "", fmt.Errorf("launcher: %w", err)
	}
	buf := make([]byte, maxLaunchMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, "", fmt.Errorf("launcher: no answer: %w", err)
	}
	fds := parseRights(oob[:oobn])
	var rep launchReply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		closeAll(fds)
		return -1, "", fmt.Errorf("launcher: bad answer: %w", err)
	}
	if rep.Error != "" {
		closeAll(fds)
		return -1, "", &launcherError{rep.Error}
	}
	if len(fds) != 1 {
		closeAll(fds)
		return -1, "", fmt.Errorf("launcher: answered without a descriptor")
	}
	unix.CloseOnExec(fds[0])
	return fds[0], rep.Name, nil
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// joinAndLaunch runs the launcher inside netns (and its owning user
// namespace) through nsenter, over a socket pair.
func joinAndLaunch(netns string, req launchRequest, log *slog.Logger) (int, string, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return -1, "", fmt.Errorf("netns %s is owned by another user namespace, which only a launcher can enter, and nsenter (util-linux) is not installed: %w", netns, err)
	}
	exe, err := os.Executable()
	if err != nil {
		return -1, "", fmt.Errorf("launcher: own executable: %w", err)
	}
	nsf, err := os.Open(netnsPath(netns))
	if err != nil {
		return -1, "", fmt.Errorf("netns %s: %w", netns, err)
	}
	defer nsf.Close()
	ufd, err := unix.IoctlRetInt(int(nsf.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return -1, "", fmt.Errorf("netns %s: its user namespace: %w", netns, err)
	}
	usf := os.NewFile(uintptr(ufd), "userns")
	defer usf.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	mine := os.NewFile(uintptr(pair[0]), "launcher")
	theirs := os.NewFile(uintptr(pair[1]), "launcher")
	defer mine.Close()
	// In nsenter and the launcher: 3 = user namespace, 4 = network
	// namespace, 5 = the socket. --preserve-credentials: the user's own
	// uid is root in a --map-root-user namespace, which keeps the
	// launcher's capabilities across exec; without it nsenter would call
	// setgroups(2), which such a namespace denies.
	cmd := exec.Command(nsenter, "--user=/proc/self/fd/3", "--net=/proc/self/fd/4", "--preserve-credentials",
		"--", exe, "tun-launch", "--fd", "5")
	cmd.ExtraFiles = []*os.File{usf, nsf, theirs}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return -1, "", fmt.Errorf("launcher: %w", err)
	}
	theirs.Close()
	fc, err := net.FileConn(mine)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return -1, "", err
	}
	defer fc.Close()
	fd, name, xerr := exchange(fc.(*net.UnixConn), req)
	werr := cmd.Wait()
	if xerr != nil {
		var le *launcherError
		if errors.As(xerr, &le) {
			// The launcher ran and said what failed.
			return -1, "", fmt.Errorf("netns %s: %w", netns, xerr)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" && werr != nil {
			msg = werr.Error()
		}
		return -1, "", fmt.Errorf("netns %s: running the launcher there (nsenter --user --net --preserve-credentials): %w%s", netns, xerr, suffix(msg))
	}
	log.Debug("launcher done", "netns", netns, "output", stderr.String())
	return fd, name, nil
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// adoptLaunched adopts a descriptor from a launcher (tundev, unmanaged:
// the launcher configured the link, and the router cannot reach its
// namespace to watch it, so its MTU is the configured one); the device
// owns fd from then on. The queue keeps tundev's offload I/O, so GSO
// pass-through stays on.
func adoptLaunched(fd int, name string, dc Device) (pipeline.Port, io.Closer, error) {
	dev, err := tundev.Open(tundev.Config{FD: fd, Unmanaged: true})
	if err != nil {
		return pipeline.Port{}, nil, fmt.Errorf("device %s from the launcher: %w", name, err)
	}
	mtu := dc.MTU
	if mtu == 0 {
		mtu = tundev.DefaultMTU
	}
	port := pipeline.Port{Name: dc.Name, MTU: mtu, Addr4: dc.Addr4, Addr6: dc.Addr6}
	for _, q := range dev.Queues() {
		port.Queues = append(port.Queues, q)
	}
	return port, dev, nil
}

// adoptInherited adopts an inherited descriptor (fd = N) when the router
// lacks CAP_NET_ADMIN: it cannot reach the device's namespace, so the
// launcher that passed the descriptor must have configured the link. The
// device's addresses still give the router its connected routes; they and
// its namespace routes are not applied (the log says so).
func adoptInherited(dc Device, log *slog.Logger) (pipeline.Port, io.Closer, error) {
	if len(dc.Addresses) > 0 || len(dc.Routes) > 0 {
		log.Info("adopted device: addresses and routes are the launcher's to configure (no privileges here); they are used for routing only",
			"device", dc.Name, "addresses", fmt.Sprint(dc.Addresses), "routes", fmt.Sprint(dc.Routes))
	}
	return adoptLaunched(dc.FD, dc.Name, dc)
}

// Launch is the launcher's side (`router tun-launch`): it reads the
// router's request from c, creates and configures the TUN device in the
// current namespace, brings the loopback up, and passes the descriptor.
// Errors are reported to the router too.
func Launch(c *net.UnixConn) error {
	buf := make([]byte, maxLaunchMsg)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("tun-launch: no request from the router: %w", err)
	}
	var req launchRequest
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		return fmt.Errorf("tun-launch: bad request: %w", err)
	}
	reply := func(rep launchReply, fd int) error {
		msg, _ := json.Marshal(rep)
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		_, _, err := c.WriteMsgUnix(msg, oob, nil)
		return err
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	dev, err := tundev.Open(tundev.Config{Name: req.Name, MTU: req.MTU, Addresses: req.Addresses,
		Routes: req.Routes, Up: true, NoOffload: !req.Offload})
	if err != nil {
		err = explainLaunch(err)
		reply(launchReply{Error: err.Error()}, -1)
		return err
	}
	defer dev.Close() // the router holds its own reference
	rc, err := dev.Queues()[0].File().SyscallConn()
	if err != nil {
		reply(launchReply{Error: err.Error()}, -1)
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = reply(launchReply{Name: dev.Name()}, int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("tun-launch: passing the device: %w", serr)
	}
	return nil
}

// explainLaunch replaces tundev's errors by what to do about the usual
// rootless failures (tundev's own hints are about the other ways to run).
func explainLaunch(err error) error {
	switch {
	case errors.Is(err, tundev.ErrNoTUN):
		return fmt.Errorf("%w: no TUN device node /dev/net/tun: load the tun module (modprobe tun), or give the container the device (--device /dev/net/tun)", tundev.ErrNoTUN)
	case errors.Is(err, unix.EACCES) && strings.Contains(err.Error(), "/dev/net/tun"):
		mode := "?"
		if fi, serr := os.Stat("/dev/net/tun"); serr == nil {
			mode = fmt.Sprintf("%04o", fi.Mode().Perm())
		}
		return fmt.Errorf("%w: cannot open /dev/net/tun (permission denied, mode %s): in a user namespace the node must be usable by the user outside it: it needs mode 0666 (crw-rw-rw-, the usual default: chmod 0666 /dev/net/tun as root)", tundev.ErrPermission, mode)
	case errors.Is(err, tundev.ErrPermission) && inInitialUserns():
		return fmt.Errorf("%w: creating the TUN device was refused (%v): tun-launch runs in the host's user namespace without privileges; start it inside a user-owned namespace: unshare --user --map-root-user --net router tun-launch ... (if unshare fails, user namespaces are disabled here: sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; `router doctor` checks)", tundev.ErrPermission, unwrapSys(err))
	case errors.Is(err, tundev.ErrPermission):
		return fmt.Errorf("%w: creating the TUN device was refused (%v): the launcher must be root of the namespace's user namespace (unshare --user --map-root-user --net)", tundev.ErrPermission, unwrapSys(err))
	}
	return err
}

// inInitialUserns reports whether the process is in the initial user
// namespace (whose uid map is the identity over all ids).
func inInitialUserns() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// unwrapSys returns the system error inside err, for a short message.
func unwrapSys(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

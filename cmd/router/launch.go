package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/tunrouter/router/daemon"
)

// cmdTunLaunch is `router tun-launch`: run inside a user-owned network
// namespace (as root of its user namespace), it creates the TUN device the
// router asks for, passes its descriptor to the router, and runs COMMAND
// in the namespace:
//
//	unshare --user --map-root-user --net router tun-launch --socket PATH -- COMMAND [ARGS]
//
// The router (started first, unprivileged, in the host's namespace) has
// `launcher_socket = PATH` on the device. With --fd N the router itself
// runs the launcher through nsenter over an inherited socket.
func cmdTunLaunch(args []string) int {
	fs := flag.NewFlagSet("tun-launch", flag.ContinueOnError)
	sock := fs.String("socket", "", "the router's launcher socket (its device's launcher_socket)")
	fd := fs.Int("fd", -1, "an inherited socket to the router (used by the router itself)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var c *net.UnixConn
	switch {
	case *sock != "" && *fd >= 0, *sock == "" && *fd < 0:
		fmt.Fprintln(os.Stderr, "router tun-launch: give --socket PATH (or --fd N)")
		return 2
	case *sock != "":
		conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: *sock, Net: "unixpacket"})
		if err != nil {
			fmt.Fprintf(os.Stderr, "router tun-launch: %v\n  is the router running with launcher_socket = %q on the device?\n", err, *sock)
			return 1
		}
		c = conn
	default:
		f := os.NewFile(uintptr(*fd), "router")
		conn, err := net.FileConn(f)
		f.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "router tun-launch:", err)
			return 1
		}
		uc, ok := conn.(*net.UnixConn)
		if !ok {
			fmt.Fprintln(os.Stderr, "router tun-launch: descriptor is not a Unix socket")
			return 1
		}
		c = uc
	}
	err := daemon.Launch(c)
	c.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "router tun-launch:", err)
		return 1
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return 0
	}
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "router tun-launch:", err)
		return 127
	}
	err = syscall.Exec(path, cmd, os.Environ())
	fmt.Fprintln(os.Stderr, "router tun-launch: exec:", err)
	return 126
}

//go:build linux

package egress

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// FTP through the egress, passive mode. The client reaches vsftpd (on the
// host's 127.0.0.1:21) as the gateway 10.0.2.2:21, and its data connection
// must go to the gateway too: with EPSV the server's 229 reply gives only
// a port, so the client connects to the control connection's address;
// with PASV the server's 227 reply gives an address, which must be the
// gateway (vsftpd's pasv_address; a server would otherwise announce
// 127.0.0.1, the client's own loopback). Either way the router's FTP
// helper reads the reply, expects the data connection from the client to
// the gateway, and the filter, which admits new connections to ports 21
// and 8080 only, lets it through as RELATED.

const (
	pasvMin     = 30000
	pasvMax     = 30004
	ftpTrapPort = 30009 // listened on, never announced
)

type ftpServer struct {
	proc *proc
	sum  string
	log  string
}

// ftpMode is one way of opening the data connection.
type ftpMode struct {
	name string
	args []string // curl options that select it
	cmd  string   // the command curl must send
}

var ftpModes = []ftpMode{
	{"EPSV", nil, "EPSV"},
	{"PASV", []string{"--disable-epsv"}, "PASV"},
}

// startVsftpd runs vsftpd (anonymous, read-only, passive mode, announcing
// the gateway) on the host namespace's 127.0.0.1:21.
func (w *world) startVsftpd() *ftpServer {
	t := w.t
	bin, err := exec.LookPath("vsftpd")
	if err != nil {
		bin = "/usr/sbin/vsftpd"
		if _, err := os.Stat(bin); err != nil {
			tundevtest.SkipOrFail(t, "needs vsftpd (scripts/egress-prereqs.sh installs it)")
		}
	}
	if u, err := user.Lookup("ftp"); err != nil {
		tundevtest.SkipOrFail(t, "vsftpd's anonymous user ftp is missing: reinstall vsftpd")
	} else if _, err := os.Stat(u.HomeDir); err != nil {
		tundevtest.SkipOrFail(t, "the home of vsftpd's user ftp is missing: reinstall vsftpd")
	}
	dir, err := os.MkdirTemp("", "egress-e2e-ftp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root, empty := filepath.Join(dir, "root"), filepath.Join(dir, "empty")
	for _, d := range []string{dir, root, empty} {
		os.MkdirAll(d, 0o755)
		os.Chmod(d, 0o755)
	}
	s := &ftpServer{log: filepath.Join(dir, "vsftpd.log")}
	s.sum, _ = randomFile(t, root, "data.bin", 3<<20)
	conf := filepath.Join(dir, "vsftpd.conf")
	text := strings.Join([]string{
		"listen=YES",
		"listen_address=127.0.0.1",
		"listen_port=21",
		"background=NO",
		"anonymous_enable=YES",
		"no_anon_password=YES",
		"anon_root=" + root,
		"ftp_username=ftp",
		"local_enable=NO",
		"write_enable=NO",
		"pasv_enable=YES",
		"pasv_address=" + gateway,
		fmt.Sprintf("pasv_min_port=%d", pasvMin),
		fmt.Sprintf("pasv_max_port=%d", pasvMax),
		"port_enable=NO",
		"seccomp_sandbox=NO",
		"secure_chroot_dir=" + empty,
		"xferlog_enable=YES",
		"log_ftp_protocol=YES",
		"dual_log_enable=NO",
		"vsftpd_log_file=" + s.log,
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startProc(t, "vsftpd", w.inHost(bin, conf))
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(s.log); err == nil {
				t.Logf("vsftpd log:\n%s", b)
			}
		}
	})
	var banner string
	if !routertest.WaitFor(5*time.Second, func() bool {
		c, err := dialIn(w.hostPath, "tcp4", "127.0.0.1:21", time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		banner, _ = bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "QUIT\r\n")
		return strings.HasPrefix(banner, "220")
	}) {
		t.Fatalf("vsftpd not serving (banner %q):\n%s", banner, s.proc.Output())
	}
	return s
}

// checkFTP downloads the file in passive mode m with curl inside the client
// namespace.
func checkFTP(t *testing.T, c *client, s *hostServers, m ftpMode) {
	t.Helper()
	out := filepath.Join(c.w.dir, "ftp-"+m.name+".bin")
	args := append([]string{"curl", "-sS", "-v", "--max-time", "30", "-o", out}, m.args...)
	args = append(args, "ftp://"+gateway+"/data.bin")
	o, err := c.run(args...)
	if err != nil {
		t.Fatalf("curl (%s): %v\n%s", m.name, err, o)
	}
	if !strings.Contains(o, "> "+m.cmd) {
		t.Fatalf("curl did not use %s:\n%s", m.cmd, o)
	}
	if m.cmd == "PASV" && !strings.Contains(o, "(10,0,2,2,") {
		t.Errorf("the 227 reply does not announce the gateway:\n%s", o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sha256Hex(b) != s.ftp.sum {
		t.Fatalf("%s: downloaded %d bytes that differ from the served file", m.name, len(b))
	}
}

// checkFTPTrap: the rule set admits no new connection to a data port by
// itself: a connection to a passive port nobody announced (where a server
// listens) gets nowhere. This is what makes the successful transfers
// above RELATED ones.
func checkFTPTrap(t *testing.T, c *client, s *hostServers) {
	t.Helper()
	o, err := c.run("curl", "-sS", "--connect-timeout", "2", "--max-time", "3",
		fmt.Sprintf("http://%s:%d/", gateway, ftpTrapPort))
	if err == nil {
		t.Fatalf("an unannounced data port was reachable: %s", o)
	}
	if n := s.trap.conns.Load(); n != 0 {
		t.Fatalf("the server on the unannounced port got %d connections", n)
	}
}

// openTUNIn opens a TUN device (with a virtio-net header) in the namespace
// at nsPath, as a launcher would, and returns its descriptor.
func openTUNIn(t *testing.T, nsPath, name string) int {
	t.Helper()
	fd := -1
	err := tundevtest.InNetns(nsPath, func() error {
		var err error
		fd, err = unix.Open(tunNode, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	})
	if err != nil {
		t.Fatalf("TUN %s: %v", name, err)
	}
	return fd
}

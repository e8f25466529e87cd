//go:build linux

package egress

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// Addresses of the slirp4netns-style inside network.
const (
	clientAddr = "10.0.2.100"
	gateway    = "10.0.2.2"
	dnsAddr    = "10.0.2.3"
)

// testUser is the unprivileged user the router runs as.
type testUser struct {
	name     string
	uid, gid int
}

// unprivUser returns the user routertest (scripts/egress-prereqs.sh
// creates it) or else nobody.
func unprivUser(t *testing.T) testUser {
	t.Helper()
	for _, name := range []string{"routertest", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if uid == 0 {
			continue
		}
		return testUser{name, uid, gid}
	}
	tundevtest.SkipOrFail(t, "no unprivileged user to run the router as (create routertest: scripts/egress-prereqs.sh)")
	return testUser{}
}

// requirements skips (or fails) t unless the tests can run here.
func requirements(t *testing.T) {
	t.Helper()
	tundevtest.RequirePrivileges(t)
	for _, tool := range []string{"unshare", "nsenter", "setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			tundevtest.SkipOrFail(t, "needs %s: %v (scripts/egress-prereqs.sh installs it)", tool, err)
		}
	}
	if routerBin == "" {
		t.Fatal("router binary not built")
	}
}

// proc is a background process, stopped (its process group: SIGTERM,
// then SIGKILL after 5 s) when the test ends.
type proc = routertest.Process

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	return routertest.StartT(t, name, cmd, 5*time.Second)
}

// world is one test's setup: the host namespace with its servers, the
// test user's directory, the client namespace and the router.
type world struct {
	t        *testing.T
	user     testUser
	host     string // the host namespace's name (ip netns)
	hostPath string
	dir      string // owned by the test user
	client   *client
	router   *proc
}

func newWorld(t *testing.T) *world {
	t.Helper()
	requirements(t)
	w := &world{t: t, user: unprivUser(t)}
	w.host, w.hostPath = tundevtest.NewNetns(t, "egh")
	dir, err := os.MkdirTemp("", "egress-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.Chown(dir, w.user.uid, w.user.gid)
	w.dir = dir
	return w
}

// asUser runs args as the test user in the host namespace.
func (w *world) asUser(args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", w.host, "setpriv",
		"--reuid=" + strconv.Itoa(w.user.uid), "--regid=" + strconv.Itoa(w.user.gid), "--clear-groups"}, args...)
	cmd := exec.Command("ip", full...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "HOME="+w.dir)
	return cmd
}

// inHost runs args as root in the host namespace.
func (w *world) inHost(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", w.host}, args...)...)
}

// client is the client's network namespace and how to run things there.
type client struct {
	w       *world
	pid     int    // a process of the user's namespace (nsenter's target), or 0
	netns   string // the namespace as a path
	nsName  string // its name when the test made it with ip netns (fd mode)
	holding *proc
}

// cmd runs args inside the client namespace: as the test user (root of
// its user namespace) through nsenter, or as root in a named namespace.
func (c *client) cmd(args ...string) *exec.Cmd {
	if c.pid == 0 {
		return exec.Command("ip", append([]string{"netns", "exec", c.nsName}, args...)...)
	}
	return c.w.asUser(append([]string{"nsenter", "--target", strconv.Itoa(c.pid), "--user", "--net", "--preserve-credentials"}, args...)...)
}

// run runs args in the client namespace and returns the combined output.
func (c *client) run(args ...string) (string, error) {
	out, err := c.cmd(args...).CombinedOutput()
	return string(out), err
}

// unshareClient starts a namespace the way a rootless container runtime
// does: `unshare --user --map-root-user --net` as the test user, holding
// it with sleep.
func (w *world) unshareClient() *client {
	w.t.Helper()
	p := startProc(w.t, "unshare", w.asUser("unshare", "--user", "--map-root-user", "--net", "sleep", "3600"))
	c := &client{w: w, pid: p.Pid(), holding: p}
	// ip netns exec → setpriv → unshare: all exec, the pid stays; wait
	// until it is in its own user namespace.
	if !routertest.WaitFor(5*time.Second, func() bool {
		a, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", c.pid))
		b, _ := os.Readlink("/proc/self/ns/user")
		return a != "" && a != b && !p.Exited()
	}) {
		if strings.Contains(p.Output(), "Operation not permitted") || strings.Contains(p.Output(), "No space left") {
			tundevtest.SkipOrFail(w.t, "user namespaces are not available to %s: %s", w.user.name, p.Output())
		}
		w.t.Fatalf("unshare did not start: %s", p.Output())
	}
	c.netns = fmt.Sprintf("/proc/%d/ns/net", c.pid)
	w.client = c
	return c
}

// routerConfig is the configuration of the tests: device is the TUN
// device's table (how it is obtained), extra more TOML.
func (w *world) routerConfig(device string, extra string) string {
	return fmt.Sprintf(`[router]
workers = 2
log_level = "debug"
control_socket = ""

[[device]]
name = "tun0"
%[1]s

[[device]]
name = "egress"
kind = "egress"
gateway = "%[2]s"
dns = "%[3]s"
dns_upstream = "127.0.0.1:5353"

[[device.forward]]
proto = "tcp"
host = "127.0.0.1:18080"
inside = "%[4]s:8000"

[[device.forward]]
proto = "udp"
host = "127.0.0.1:18053"
inside = "%[4]s:5353"

[[route]]
to = "0.0.0.0/0"
device = "egress"

[helpers.ftp]
ports = [21]

# New connections are admitted to listed destinations only; FTP data
# connections pass as RELATED or not at all.
[chains.forward]
policy = "drop"

[[chains.forward.rules]]
ct_state = ["established", "related"]
action = "accept"

[[chains.forward.rules]]
ct_state = "invalid"
action = "drop"

[[chains.forward.rules]]
comment = "the denied destination"
iif = "tun0"
proto = "tcp"
daddr = "%[2]s"
dport = 8081
action = "reject"

[[chains.forward.rules]]
iif = "tun0"
oif = "egress"
proto = "tcp"
dport = [21, 8080]
ct_state = "new"
action = "accept"

[[chains.forward.rules]]
iif = "tun0"
oif = "egress"
proto = "udp"
dport = [53, 5300]
ct_state = "new"
action = "accept"

[[chains.forward.rules]]
iif = "tun0"
proto = "icmp"
icmp_type = "echo-request"
action = "accept"

[[chains.forward.rules]]
comment = "port forwards"
iif = "egress"
oif = "tun0"
dport = [8000, 5353]
ct_state = "new"
action = "accept"
%[5]s`, device, gateway, dnsAddr, clientAddr, extra)
}

// startRouter writes the configuration and starts the router as the test
// user in the host namespace; it waits until the router runs.
func (w *world) startRouter(conf string) *proc {
	w.t.Helper()
	path := filepath.Join(w.dir, "router.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		w.t.Fatal(err)
	}
	p := startProc(w.t, "router", w.asUser(routerBin, "run", "--config", path))
	if err := p.WaitRunning("", 20*time.Second); err != nil {
		w.t.Fatalf("router did not start (%v):\n%s", err, p.Output())
	}
	w.router = p
	return p
}

// listen opens a listener in the namespace at nsPath.
func listen(t *testing.T, nsPath, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := tundevtest.InNetns(nsPath, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenPacket opens a UDP socket in the namespace at nsPath.
func listenPacket(t *testing.T, nsPath, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	err := tundevtest.InNetns(nsPath, func() error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialIn connects from the namespace at nsPath.
func dialIn(nsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := tundevtest.InNetns(nsPath, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// randomFile writes n random bytes to dir/name (readable by all) and
// returns their SHA-256.
func randomFile(t *testing.T, dir, name string, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b), b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// httpServer serves body at / on a host-side listener and counts the
// connections it accepted.
type httpServer struct {
	conns atomic.Int64
	peers chan string
}

func serveHTTP(t *testing.T, ln net.Listener, body []byte) *httpServer {
	s := &httpServer{peers: make(chan string, 100)}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case s.peers <- r.RemoteAddr:
			default:
			}
			w.Write(body)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// serveUDP answers every datagram on c with prefix+datagram.
func serveUDP(c net.PacketConn, prefix string) {
	go func() {
		buf := make([]byte, 65536)
		for {
			n, a, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(prefix), buf[:n]...), a)
		}
	}()
}

// udpExchange sends msg from the namespace at nsPath to addr and returns
// the reply.
func udpExchange(nsPath, addr, msg string) (string, error) {
	c, err := dialIn(nsPath, "udp4", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for i := 0; i < 5; i++ { // the first datagram may race the flow's setup
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no reply from %s", addr)
}

// drain reads and discards r.
func drain(r io.Reader) { io.Copy(io.Discard, r) }

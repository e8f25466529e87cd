package daemon

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/config"
)

const egressDoc = `[router]
workers = 3

[conntrack.timeouts]
udp = "20s"
udp_stream = "90s"
icmp = "15s"
tcp_fin_wait = "100s"

[[device]]
name = "tun0"
launcher_socket = "/run/user/1000/router-tun.sock"
addresses = ["10.0.2.100/24"]
routes = ["0.0.0.0/0"]
mtu = 9000

[[device]]
name = "egress"
kind = "egress"
gateway = "10.0.2.2"
dns = "10.0.2.3"
dns_upstream = "127.0.0.1:5353"

[[device.forward]]
proto = "tcp"
host = "127.0.0.1:8080"
inside = "10.0.2.100:80"

[[route]]
to = "0.0.0.0/0"
device = "egress"
`

func TestEgressSettings(t *testing.T) {
	c, err := config.Parse("egress.toml", []byte(egressDoc))
	if err != nil {
		t.Fatal(err)
	}
	s, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	tun, eg := s.Devices[0], s.Devices[1]
	if tun.LauncherSocket != "/run/user/1000/router-tun.sock" || tun.Queues != 1 || tun.Egress != nil {
		t.Errorf("tun0: launcher %q, queues %d, egress %v", tun.LauncherSocket, tun.Queues, tun.Egress)
	}
	e := eg.Egress
	if e == nil {
		t.Fatal("egress device without egress settings")
	}
	if e.MTU != 9000 || eg.MTU != 9000 {
		t.Errorf("egress MTU %d (device %d), want the TUN device's 9000", e.MTU, eg.MTU)
	}
	if e.Queues != 3 {
		t.Errorf("queues %d, want one per worker", e.Queues)
	}
	if e.UDPTimeout != 20*time.Second || e.UDPStreamTimeout != 90*time.Second || e.ICMPTimeout != 15*time.Second ||
		e.TCPHalfClosedTimeout != 100*time.Second {
		t.Errorf("timeouts %v %v %v %v, want conntrack's", e.UDPTimeout, e.UDPStreamTimeout, e.ICMPTimeout, e.TCPHalfClosedTimeout)
	}
	if !e.HostLoopback || e.NoPing || len(e.Forwards) != 1 || e.Forwards[0].Inside != netip.MustParseAddrPort("10.0.2.100:80") {
		t.Errorf("egress %+v", e)
	}
	routes := map[netip.Prefix]string{}
	for _, r := range s.Routes {
		routes[r.Prefix] = r.Device
	}
	for p, dev := range map[string]string{"10.0.2.2/32": "egress", "10.0.2.3/32": "egress", "10.0.2.0/24": "tun0", "0.0.0.0/0": "egress"} {
		if routes[netip.MustParsePrefix(p)] != dev {
			t.Errorf("route %s -> %q, want %q (routes %v)", p, routes[netip.MustParsePrefix(p)], dev, s.Routes)
		}
	}
	if err := e.Validate(); err != nil {
		t.Errorf("the egress package refuses the mapped settings: %v", err)
	}
}

// fakeLauncher answers one request on c with fd (or an error text).
func fakeLauncher(t *testing.T, c *net.UnixConn, fd int, errText string, got chan<- launchRequest) {
	buf := make([]byte, maxLaunchMsg)
	n, err := c.Read(buf)
	if err != nil {
		t.Error(err)
		return
	}
	var req launchRequest
	json.Unmarshal(buf[:n], &req)
	got <- req
	rep, _ := json.Marshal(launchReply{Name: req.Name, Error: errText})
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	c.WriteMsgUnix(rep, oob, nil)
}

// TestLauncherSocket: the router's side of launcher_socket receives the
// launcher's descriptor (here a pipe, standing in for a TUN device), with
// the device's configuration sent first; a launcher's error is reported.
func TestLauncherSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tun.sock")
	req := launchRequest{Name: "tun0", MTU: 1500, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24")}, Offload: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	got := make(chan launchRequest, 1)
	go func() {
		var c *net.UnixConn
		for i := 0; i < 100; i++ {
			c, err = net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if c == nil {
			t.Error("no launcher socket")
			return
		}
		defer c.Close()
		fakeLauncher(t, c, int(w.Fd()), "", got)
	}()
	fd, name, err := acceptLauncher(path, req, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if name != "tun0" {
		t.Errorf("name %q", name)
	}
	if g := <-got; g.Name != req.Name || g.MTU != 1500 || len(g.Addresses) != 1 || !g.Offload {
		t.Errorf("launcher got %+v", g)
	}
	// The descriptor is the pipe's write end: what we write, r reads.
	if _, err := unix.Write(fd, []byte("via fd")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	n, _ := r.Read(b)
	if string(b[:n]) != "via fd" {
		t.Errorf("read %q through the passed descriptor", b[:n])
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}

	// A launcher that fails.
	go func() {
		for i := 0; i < 100; i++ {
			c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err == nil {
				fakeLauncher(t, c, -1, "no /dev/net/tun", got)
				c.Close()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if _, _, err := acceptLauncher(path, req, testLogger(t)); err == nil || !strings.Contains(err.Error(), "no /dev/net/tun") {
		t.Fatalf("failing launcher: %v", err)
	}
}

func TestNeedsJoin(t *testing.T) {
	if needsJoin("") {
		t.Error("the current namespace needs a join")
	}
	if needsJoin("/proc/self/ns/net") {
		t.Error("the router's own namespace needs a join")
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

//go:build linux

package egress

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// hostServers are the servers on the host namespace's loopback.
type hostServers struct {
	httpSum string
	http    *httpServer
	denied  *httpServer // on the port the filter denies
	trap    *httpServer // on an FTP passive port nobody announced
	ftp     *ftpServer
}

// startHostServers starts the HTTP servers, the UDP echo and the DNS
// upstream in the host namespace; vsftpd too when withFTP.
func (w *world) startHostServers(withFTP bool) *hostServers {
	t := w.t
	s := &hostServers{}
	sum, body := randomFile(t, w.dir, "index.bin", 2<<20)
	s.httpSum = sum
	s.http = serveHTTP(t, listen(t, w.hostPath, "tcp4", "127.0.0.1:8080"), body)
	s.denied = serveHTTP(t, listen(t, w.hostPath, "tcp4", "127.0.0.1:8081"), []byte("must not be reached"))
	serveUDP(listenPacket(t, w.hostPath, "127.0.0.1:5300"), "echo:")
	serveUDP(listenPacket(t, w.hostPath, "127.0.0.1:5353"), "dns:")
	if withFTP {
		s.ftp = w.startVsftpd()
		s.trap = serveHTTP(t, listen(t, w.hostPath, "tcp4", fmt.Sprintf("127.0.0.1:%d", ftpTrapPort)), nil)
	}
	return s
}

// checkHTTP fetches the host's HTTP server through the gateway with curl
// inside the client namespace.
func checkHTTP(t *testing.T, c *client, s *hostServers) {
	t.Helper()
	out := filepath.Join(c.w.dir, fmt.Sprintf("http-%d.bin", time.Now().UnixNano()))
	if o, err := c.run("curl", "-sS", "--max-time", "20", "-o", out, "http://"+gateway+":8080/"); err != nil {
		t.Fatalf("curl http://%s:8080/: %v\n%s", gateway, err, o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sha256Hex(b) != s.httpSum {
		t.Fatalf("downloaded %d bytes that differ from the served file", len(b))
	}
	select {
	case peer := <-s.http.peers:
		if !strings.HasPrefix(peer, "127.0.0.1:") {
			t.Errorf("the host server saw the client as %s, want the host's loopback", peer)
		}
	default:
		t.Error("the host server saw no request")
	}
}

// checkDenied: the filter's reject rule answers a connection to the
// denied port with a reset (curl: refused) and the host server there is
// never reached.
func checkDenied(t *testing.T, c *client, s *hostServers) {
	t.Helper()
	start := time.Now()
	out, err := c.run("curl", "-sS", "--max-time", "10", "http://"+gateway+":8081/")
	if err == nil {
		t.Fatalf("the denied destination answered: %s", out)
	}
	if !strings.Contains(out, "refused") && !strings.Contains(out, "reset") && !strings.Contains(out, "(7)") {
		t.Errorf("curl: %s (want the connection refused by the reject rule)", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %v: the reject rule should answer at once", d)
	}
	if n := s.denied.conns.Load(); n != 0 {
		t.Errorf("the server on the denied port got %d connections", n)
	}
}

// checkPortForward: a connection to the forwarded host port reaches the
// server inside, from the gateway address.
func checkPortForward(t *testing.T, w *world, c *client) {
	t.Helper()
	srv := serveHTTP(t, listen(t, c.netns, "tcp4", clientAddr+":8000"), []byte("hello from inside"))
	conn, err := dialIn(w.hostPath, "tcp4", "127.0.0.1:18080", 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the forwarded port: %v", err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := bufioReadAll(conn)
	if !strings.Contains(b, "hello from inside") {
		t.Fatalf("forwarded port answered %q", b)
	}
	select {
	case peer := <-srv.peers:
		if !strings.HasPrefix(peer, gateway+":") {
			t.Errorf("the server inside saw %s, want the gateway %s", peer, gateway)
		}
	default:
		t.Error("the server inside saw no request")
	}
	// UDP: a host peer reaches a UDP server inside and gets its answer.
	serveUDP(listenPacket(t, c.netns, clientAddr+":5353"), "inside:")
	reply, err := udpExchange(w.hostPath, "127.0.0.1:18053", "q")
	if err != nil || reply != "inside:q" {
		t.Fatalf("forwarded UDP port: %q, %v", reply, err)
	}
}

func bufioReadAll(c net.Conn) (string, error) {
	var sb strings.Builder
	r := bufio.NewReader(c)
	_, err := r.WriteTo(&sb)
	return sb.String(), err
}

// checkUDPAndDNS: UDP through the gateway and the DNS forwarder.
func checkUDPAndDNS(t *testing.T, c *client) {
	t.Helper()
	if r, err := udpExchange(c.netns, gateway+":5300", "ping"); err != nil || r != "echo:ping" {
		t.Errorf("UDP through the gateway: %q, %v", r, err)
	}
	if r, err := udpExchange(c.netns, dnsAddr+":53", "query"); err != nil || r != "dns:query" {
		t.Errorf("DNS forwarder: %q, %v", r, err)
	}
}

// checkPing: echo requests to the gateway are answered.
func checkPing(t *testing.T, c *client) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/ping"); err != nil {
		if _, err2 := os.Stat("/bin/ping"); err2 != nil {
			tundevtest.SkipOrFail(t, "needs ping (iputils-ping)")
		}
	}
	out, err := c.run("ping", "-n", "-c", "2", "-W", "3", gateway)
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping %s: %v\n%s", gateway, err, out)
	}
}

// checkPingRelayed: echo requests to another host address go out through
// the host's unprivileged ping sockets (allowed for the router's group by
// net.ipv4.ping_group_range in the host namespace) and come back; where
// the host does not allow them they are dropped.
func checkPingRelayed(t *testing.T, w *world, c *client) {
	t.Helper()
	const hostAddr = "192.0.2.1" // a host address outside the inside network
	tundevtest.IP(t, w.host, "addr", "add", hostAddr+"/32", "dev", "lo")
	set := func(v string) {
		if out, err := w.inHost("sysctl", "-qw", "net.ipv4.ping_group_range="+v).CombinedOutput(); err != nil {
			t.Fatalf("sysctl ping_group_range: %v %s", err, out)
		}
	}
	set("1 0") // nobody: the relay cannot open ping sockets
	if out, err := c.run("ping", "-n", "-c", "1", "-W", "2", hostAddr); err == nil {
		t.Fatalf("ping %s answered although the host allows no ping sockets:\n%s", hostAddr, out)
	}
	set("0 2147483647")
	// The relay tries ping sockets again a few seconds after a refusal.
	ok := routertest.WaitFor(20*time.Second, func() bool {
		out, err := c.run("ping", "-n", "-c", "1", "-W", "2", hostAddr)
		return err == nil && strings.Contains(out, " 0% packet loss")
	})
	if !ok {
		t.Fatalf("ping %s through the host's ping sockets failed", hostAddr)
	}
}

// TestRootlessUnshare: the client's namespace is made with `unshare
// --user --map-root-user --net` by the user; the router, unprivileged in
// the host's namespace, creates its TUN device there (through nsenter and
// its own launcher) and relays everything through the host's sockets.
func TestRootlessUnshare(t *testing.T) {
	tunUsableByUsers(t)
	w := newWorld(t)
	s := w.startHostServers(true)
	c := w.unshareClient()
	w.startRouter(w.routerConfig(fmt.Sprintf(`netns = "%s"
addresses = ["%s/24"]
routes = ["0.0.0.0/0"]`, c.netns, clientAddr), ""))
	if out, err := c.run("ip", "-br", "addr", "show", "tun0"); err != nil || !strings.Contains(out, clientAddr) {
		t.Fatalf("tun0 in the client namespace: %v\n%s", err, out)
	}
	if fi, err := os.Stat(fmt.Sprintf("/proc/%d", w.router.Pid())); err != nil || fi.Sys() == nil {
		t.Fatal("router not running")
	}
	t.Run("router-is-unprivileged", func(t *testing.T) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.router.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^Uid:\s+%d\s`, w.user.uid)).Match(status) ||
			!regexp.MustCompile(`(?m)^CapEff:\s+0+$`).Match(status) {
			t.Fatalf("the router runs with privileges:\n%s", status)
		}
	})
	t.Run("http", func(t *testing.T) { checkHTTP(t, c, s) })
	for _, m := range ftpModes {
		t.Run("ftp-"+m.name, func(t *testing.T) { checkFTP(t, c, s, m) })
	}
	t.Run("ftp-unannounced-data-port", func(t *testing.T) { checkFTPTrap(t, c, s) })
	t.Run("denied-destination", func(t *testing.T) { checkDenied(t, c, s) })
	t.Run("port-forward", func(t *testing.T) { checkPortForward(t, w, c) })
	t.Run("udp-and-dns", func(t *testing.T) { checkUDPAndDNS(t, c) })
	t.Run("ping", func(t *testing.T) { checkPing(t, c) })
	t.Run("ping-relayed", func(t *testing.T) { checkPingRelayed(t, w, c) })
}

// TestRootlessLauncherSocket: the user starts the launcher inside a new
// namespace (`unshare --user --map-root-user --net router tun-launch
// --socket PATH -- COMMAND`); the router, started first, receives the TUN
// device over its launcher socket.
func TestRootlessLauncherSocket(t *testing.T) {
	tunUsableByUsers(t)
	w := newWorld(t)
	s := w.startHostServers(false)
	sock := filepath.Join(w.dir, "tun.sock")
	conf := w.routerConfig(fmt.Sprintf(`launcher_socket = "%s"
addresses = ["%s/24"]
routes = ["0.0.0.0/0"]`, sock, clientAddr), "")
	path := filepath.Join(w.dir, "router.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startProc(t, "router", w.asUser(routerBin, "run", "--config", path))
	if !routertest.WaitFor(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil || r.Exited() }) || r.Exited() {
		t.Fatalf("the router does not wait on its launcher socket:\n%s", r.Output())
	}
	l := startProc(t, "launcher", w.asUser("unshare", "--user", "--map-root-user", "--net",
		routerBin, "tun-launch", "--socket", sock, "--", "sleep", "3600"))
	if err := r.WaitRunning("", 20*time.Second); err != nil {
		t.Fatalf("router did not start (%v):\n%s\nlauncher:\n%s", err, r.Output(), l.Output())
	}
	w.router = r
	c := &client{w: w, pid: l.Pid(), holding: l, netns: fmt.Sprintf("/proc/%d/ns/net", l.Pid())}
	w.client = c
	if _, err := os.Stat(sock); err == nil {
		t.Error("the launcher socket is still there")
	}
	t.Run("http", func(t *testing.T) { checkHTTP(t, c, s) })
	t.Run("denied-destination", func(t *testing.T) { checkDenied(t, c, s) })
	t.Run("udp-and-dns", func(t *testing.T) { checkUDPAndDNS(t, c) })
}

// TestRootlessInheritedFD: a launcher (here the test, as root) creates and
// configures the TUN device in the client's namespace and starts the
// unprivileged router with its descriptor as fd 3.
func TestRootlessInheritedFD(t *testing.T) {
	w := newWorld(t)
	s := w.startHostServers(false)
	name, nsPath := tundevtest.NewNetns(t, "egc")
	fd := openTUNIn(t, nsPath, "tun0")
	tundevtest.IP(t, name, "addr", "add", clientAddr+"/24", "dev", "tun0")
	tundevtest.IP(t, name, "link", "set", "tun0", "up")
	tundevtest.IP(t, name, "route", "add", "default", "dev", "tun0")
	c := &client{w: w, netns: nsPath, nsName: name}
	w.client = c
	// The addresses are the launcher's; the router uses them for its
	// connected route only.
	conf := w.routerConfig(fmt.Sprintf(`fd = 3
addresses = ["%s/24"]`, clientAddr), "")
	path := filepath.Join(w.dir, "router.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := w.asUser(routerBin, "run", "--config", path)
	f := os.NewFile(uintptr(fd), "tun0")
	cmd.ExtraFiles = []*os.File{f}
	r := startProc(t, "router", cmd)
	f.Close() // the router has it now
	if err := r.WaitRunning("", 20*time.Second); err != nil {
		t.Fatalf("router did not start (%v):\n%s", err, r.Output())
	}
	w.router = r
	t.Run("http", func(t *testing.T) { checkHTTP(t, c, s) })
	t.Run("denied-destination", func(t *testing.T) { checkDenied(t, c, s) })
	t.Run("port-forward", func(t *testing.T) { checkPortForward(t, w, c) })
}

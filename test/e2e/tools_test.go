//go:build linux

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// proc is a background process the test started (a server in a
// namespace). It runs in its own process group, so that stopping it also
// ends the children it forked (vsftpd's sessions).
type proc = routertest.Process

// startProc starts args inside ns in the background and stops it (its
// process group: SIGTERM, then SIGKILL after 3 s) when t ends; its output
// is logged if t failed.
func startProc(t *testing.T, ns netns, args ...string) *proc {
	t.Helper()
	return routertest.StartT(t, args[0], ns.command(args...), 3*time.Second)
}

// randomFile writes n random bytes into dir/name and returns their
// SHA-256.
func randomFile(t *testing.T, dir, name string, n int) string {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	if err := os.WriteFile(dir+"/"+name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256Hex(data)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA256(t *testing.T, path string) (sum string, size int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// listenIn listens on TCP (network "tcp": both families) inside the
// namespace; the socket stays there.
func listenIn(t *testing.T, ns netns, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := tundevtest.InNetns(ns.path, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenPacketIn is listenIn for UDP.
func listenPacketIn(t *testing.T, ns netns, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := tundevtest.InNetns(ns.path, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.name, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// dialIn dials from inside the namespace; the connection stays there.
func dialIn(ns netns, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := tundevtest.InNetns(ns.path, func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// serveHTTP serves body at /blob from a listener in ns (both families)
// and returns the port.
func serveHTTP(t *testing.T, ns netns, body []byte) int {
	t.Helper()
	ln := listenIn(t, ns, "tcp", ":0")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// serveEcho echoes every TCP connection accepted by a listener in ns
// (both families) and returns the port.
func serveEcho(t *testing.T, ns netns) int {
	t.Helper()
	ln := listenIn(t, ns, "tcp", ":0")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// echoRoundTrip writes msg on c and reads it back.
func echoRoundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: got %q, want %q", buf, msg)
	}
	return nil
}

// injectRaw sends an IP packet built by the test from inside ns through a
// raw socket with the header included (IPPROTO_RAW implies IP_HDRINCL, for
// IPv6 too): the namespace's stack routes it, unchanged, into the router.
func injectRaw(ns netns, pkt []byte) error {
	var p packet.Parsed
	p.Decode(pkt)
	if p.Family == 0 {
		return errors.New("inject: not an IP packet")
	}
	dst := p.Key.DstAddr()
	return tundevtest.InNetns(ns.path, func() error {
		af := unix.AF_INET
		if dst.Is6() {
			af = unix.AF_INET6
		}
		fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		var sa unix.Sockaddr
		if dst.Is4() {
			sa = &unix.SockaddrInet4{Addr: dst.As4()}
		} else {
			sa = &unix.SockaddrInet6{Addr: dst.As16()}
		}
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			return fmt.Errorf("raw sendto %v: %w", dst, err)
		}
		return nil
	})
}

// capture records every IP packet a device receives (an AF_PACKET socket
// bound to it, opened inside its namespace): what the router delivered to
// that host.
type capture struct {
	f    *os.File
	mu   sync.Mutex
	pkts [][]byte
	done chan struct{}
}

func startCapture(t *testing.T, ns netns, dev string) *capture {
	t.Helper()
	var fd int
	err := tundevtest.InNetns(ns.path, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, ns.name, err)
	}
	c := &capture{f: os.NewFile(uintptr(fd), "capture-"+dev), done: make(chan struct{})}
	go c.loop()
	t.Cleanup(func() { c.f.Close(); <-c.done })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		// Reads go through the runtime poller (the fd is non-blocking)
		// and Close ends them. The socket sees the packets the host sends
		// too; matchers tell the directions apart by address.
		n, err := c.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. ENETDOWN once the device is gone
			continue
		}
		c.mu.Lock()
		c.pkts = append(c.pkts, append([]byte(nil), buf[:n]...))
		c.mu.Unlock()
	}
}

// count returns how many captured packets satisfy match.
func (c *capture) count(match func(*packet.Parsed) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var p packet.Parsed
	n := 0
	for _, b := range c.pkts {
		p.Decode(b)
		if p.Family != 0 && match(&p) {
			n++
		}
	}
	return n
}

// tcpMatch matches TCP packets from src to dst (netip.AddrPort strings)
// whose flags, masked by mask, equal want.
func tcpMatch(src, dst netip.AddrPort, mask, want packet.TCPFlags) func(*packet.Parsed) bool {
	return func(p *packet.Parsed) bool {
		return p.Proto == packet.TCP && p.SrcAddr() == src.Addr() && p.DstAddr() == dst.Addr() &&
			p.SrcPort == src.Port() && p.DstPort == dst.Port() && p.TCPFlags&mask == want
	}
}

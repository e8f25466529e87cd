//go:build linux

package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var pingReceived = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// TestPing: echo requests cross the router both ways over IPv4 and IPv6
// and are tracked; the router answers pings to its own LAN addresses;
// pings from the Internet side are rejected (the gateway's policy).
func TestPing(t *testing.T) {
	tools := requireE2E(t, "ping")
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	ping := func(ns netns, count int, dst string) (sent, received int, out string, err error) {
		o, e, err := ns.run(15*time.Second, tools["ping"], "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", dst)
		out = o + e
		if m := pingReceived.FindStringSubmatch(out); m != nil {
			sent, _ = strconv.Atoi(m[1])
			received, _ = strconv.Atoi(m[2])
		}
		return sent, received, out, err
	}
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			t.Run("through the router", func(t *testing.T) {
				sent, recv, out, err := ping(r.client, 3, f.server)
				if err != nil || sent != 3 || recv != 3 {
					t.Fatalf("ping %s: %v: %d sent, %d received, want 3 and 3\n%s", f.server, err, sent, recv, out)
				}
				proto := "icmp"
				if f == ipv6 {
					proto = "icmpv6"
				}
				es := r.entries(t, "-p", proto, "-s", f.client, "-d", f.server)
				if len(es) != 1 {
					t.Fatalf("conntrack has %d %s entries %s -> %s, want 1: %+v", len(es), proto, f.client, f.server, es)
				}
				e := es[0]
				if !slices.Contains(e.Status, "seen-reply") || e.Packets != [2]uint64{3, 3} {
					t.Errorf("entry %q: status %v packets %v, want seen-reply and 3 each way", e.Line, e.Status, e.Packets)
				}
				if e.Reply.Src != f.server || e.Orig.Type == nil || *e.Orig.Type != echoRequest(f) {
					t.Errorf("entry %q: reply source %s, original type %v; want %s and echo request", e.Line, e.Reply.Src, e.Orig.Type, f.server)
				}
			})
			t.Run("the router itself", func(t *testing.T) {
				sent, recv, out, err := ping(r.client, 3, f.routerLAN)
				if err != nil || sent != 3 || recv != 3 {
					t.Fatalf("ping %s: %v: %d sent, %d received, want 3 and 3\n%s", f.routerLAN, err, sent, recv, out)
				}
			})
			t.Run("from the Internet is rejected", func(t *testing.T) {
				_, recv, out, err := ping(r.server, 1, f.client)
				if err == nil || recv != 0 {
					t.Fatalf("ping %s from the server side succeeded (%d replies); the gateway rejects new connections from wan0\n%s", f.client, recv, out)
				}
				// The reject is an ICMP port unreachable from the router.
				if !strings.Contains(strings.ToLower(out), "port unreachable") {
					t.Errorf("ping from the server side: no port unreachable from the router:\n%s", out)
				}
			})
		})
	}
}

func echoRequest(f family) uint8 {
	if f == ipv6 {
		return 128
	}
	return 8
}

// TestHTTPDownload: curl in the LAN downloads 4 MB from an HTTP server on
// the Internet side over IPv4 and IPv6, byte for byte; the connection is
// tracked to ASSURED. A TCP connection from the Internet side is refused
// with a reset.
func TestHTTPDownload(t *testing.T) {
	tools := requireE2E(t, "curl")
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	body := make([]byte, 4<<20)
	rand.Read(body)
	want := sha256Hex(body)
	port := serveHTTP(t, r.server, body)
	dir := t.TempDir()
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			url := fmt.Sprintf("http://%s/blob", net.JoinHostPort(f.server, strconv.Itoa(port)))
			dst := filepath.Join(dir, "blob-"+f.name)
			out, errOut, err := r.client.run(60*time.Second, tools["curl"], "-sS", "--fail", "--max-time", "30",
				"-o", dst, "-w", "%{http_code} %{local_port}", url)
			if err != nil {
				t.Fatalf("curl %s: %v\n%s%s", url, err, out, errOut)
			}
			var code, lport int
			if _, err := fmt.Sscan(out, &code, &lport); err != nil || code != 200 {
				t.Fatalf("curl %s: -w output %q, want 200 and the local port", url, out)
			}
			if got, n := fileSHA256(t, dst); got != want || n != int64(len(body)) {
				t.Fatalf("downloaded %d bytes, sha256 %s; want %d bytes, %s", n, got, len(body), want)
			}
			es := r.entries(t, "-p", "tcp", "-s", f.client, "--sport", strconv.Itoa(lport), "--dport", strconv.Itoa(port))
			if len(es) != 1 {
				t.Fatalf("conntrack has %d entries for %s:%d -> %s:%d, want 1", len(es), f.client, lport, f.server, port)
			}
			e := es[0]
			if !slices.Contains(e.Status, "assured") || e.Bytes[1] < uint64(len(body)) {
				t.Errorf("entry %q: status %v, reply bytes %d; want assured and >= %d", e.Line, e.Status, e.Bytes[1], len(body))
			}
		})
	}
	t.Run("from the Internet is refused", func(t *testing.T) {
		ln := listenIn(t, r.client, "tcp", ":0")
		lport := ln.Addr().(*net.TCPAddr).Port
		for _, f := range families {
			c, err := dialIn(r.server, "tcp", net.JoinHostPort(f.client, strconv.Itoa(lport)), 3*time.Second)
			if err == nil {
				c.Close()
				t.Fatalf("%s: a connection from the server side to %s:%d got through", f.name, f.client, lport)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: dial %s:%d from the server side: %v; want connection refused (the router's TCP reset)", f.name, f.client, lport, err)
			}
		}
	})
}

// TestUDP: datagrams of many sizes (one larger than the MTU, so it is
// fragmented and reassembled on the way) go out and their echoes come
// back over IPv4 and IPv6, tracked as one entry with a reply; a datagram
// from the Internet side is rejected with a port unreachable.
func TestUDP(t *testing.T) {
	requireE2E(t)
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	pc := listenPacketIn(t, r.server, "udp", ":0")
	port := pc.LocalAddr().(*net.UDPAddr).Port
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	sizes := []int{1, 64, 512, 1200, 1400, 1, 3000}
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			c, err := dialIn(r.client, "udp", net.JoinHostPort(f.server, strconv.Itoa(port)), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<16)
			for i, n := range sizes {
				msg := make([]byte, n)
				rand.Read(msg)
				msg[0] = byte(i)
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("datagram %d (%d bytes): %v", i, n, err)
				}
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				got, err := c.Read(buf)
				if err != nil {
					t.Fatalf("echo of datagram %d (%d bytes): %v", i, n, err)
				}
				if !bytes.Equal(buf[:got], msg) {
					t.Fatalf("echo of datagram %d: %d bytes differ from the %d sent", i, got, n)
				}
			}
			lport := c.LocalAddr().(*net.UDPAddr).Port
			es := r.entries(t, "-p", "udp", "-s", f.client, "--sport", strconv.Itoa(lport))
			if len(es) != 1 {
				t.Fatalf("conntrack has %d UDP entries from %s:%d, want 1", len(es), f.client, lport)
			}
			e := es[0]
			n := uint64(len(sizes))
			if !slices.Contains(e.Status, "seen-reply") || e.Packets != [2]uint64{n, n} || e.Orig.Dport != uint16(port) {
				t.Errorf("entry %q: status %v packets %v; want seen-reply and %d datagrams each way to port %d", e.Line, e.Status, e.Packets, n, port)
			}
		})
	}
	t.Run("from the Internet is rejected", func(t *testing.T) {
		lpc := listenPacketIn(t, r.client, "udp", ":0")
		lport := lpc.LocalAddr().(*net.UDPAddr).Port
		for _, f := range families {
			c, err := dialIn(r.server, "udp", net.JoinHostPort(f.client, strconv.Itoa(lport)), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("unsolicited"))
			// The port unreachable makes the connected socket's next read
			// fail with "connection refused".
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 64))
			c.Close()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: read after an unsolicited datagram to %s:%d: %v; want connection refused (the router's port unreachable)", f.name, f.client, lport, err)
			}
		}
		lpc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, from, err := lpc.ReadFrom(make([]byte, 64)); err == nil {
			t.Errorf("the LAN host received %d bytes from %v that the router should have rejected", n, from)
		}
		if row, ok := r.rule(t, "forward", "nothing new from the Internet"); !ok || row.Packets < 2 {
			t.Errorf("reject rule: %+v (found %v); want at least the 2 datagrams counted", row, ok)
		}
	})
}

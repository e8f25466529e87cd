package egress

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestTCPRelay: a client inside reaches a host server through the gateway
// (IPv4 and IPv6), both directions carry large transfers intact, and the
// server sees the connection coming from its loopback.
func TestTCPRelay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		mtu     int
	}{
		{"ipv4-mtu1500", "tcp4", 1500},
		{"ipv6-mtu1500", "tcp6", 1500},
		{"ipv4-mtu65520", "tcp4", 65520},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, baseConfig(), tc.mtu)
			ln := hostListen(t, tc.network)
			up := make([]byte, 3<<20)
			down := make([]byte, 5<<20)
			rand.Read(up)
			rand.Read(down)
			srvErr := make(chan error, 1)
			var peer net.Addr
			go func() {
				c, err := ln.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c.Close()
				peer = c.RemoteAddr()
				wrote := make(chan error, 1)
				go func() {
					_, err := c.Write(down)
					wrote <- err
				}()
				got := make([]byte, len(up))
				if _, err := io.ReadFull(c, got); err != nil {
					srvErr <- err
					return
				}
				if err := <-wrote; err != nil {
					srvErr <- err
					return
				}
				if !bytes.Equal(got, up) {
					srvErr <- errors.New("upload corrupted")
					return
				}
				srvErr <- nil
			}()
			c, err := r.dial(viaGateway(ln.Addr()))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			go c.Write(up)
			got := make([]byte, len(down))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("download: %v", err)
			}
			if !bytes.Equal(got, down) {
				t.Fatal("download corrupted")
			}
			if err := <-srvErr; err != nil {
				t.Fatalf("server: %v", err)
			}
			if ip := peer.(*net.TCPAddr).AddrPort().Addr(); !ip.Unmap().IsLoopback() {
				t.Errorf("server saw the connection from %v, want the loopback", ip)
			}
			// The counters are updated just after the data moved.
			eventually(t, 5*time.Second, "byte counters", func() bool {
				st := r.dev.Stats()
				return st.BytesToHost == uint64(len(up)) && st.BytesFromHost == uint64(len(down))
			})
			st := r.dev.Stats()
			if st.TCPFlows != 1 || st.BytesToHost != uint64(len(up)) || st.BytesFromHost != uint64(len(down)) {
				t.Errorf("stats: flows %d, to host %d (want %d), from host %d (want %d)",
					st.TCPFlows, st.BytesToHost, len(up), st.BytesFromHost, len(down))
			}
			if st.SuperSegments == 0 {
				t.Errorf("netstack sent no super-segments: GSO is not in use")
			}
		})
	}
}

// TestTCPHalfClose: a FIN from either side becomes a half-close of the
// other side's socket, and the direction still open keeps working.
func TestTCPHalfClose(t *testing.T) {
	r := newRig(t, baseConfig(), 1500)
	t.Run("client-closes-first", func(t *testing.T) {
		ln := hostListen(t, "tcp4")
		done := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err.Error()
				return
			}
			defer c.Close()
			got, err := io.ReadAll(c) // ends at the client's FIN
			if err != nil {
				done <- err.Error()
				return
			}
			// Our direction is still open.
			c.Write([]byte("got " + string(got)))
			done <- ""
		}()
		c, err := r.dial(viaGateway(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello"))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		reply, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read after half-close: %v", err)
		}
		if s := <-done; s != "" {
			t.Fatalf("server: %s", s)
		}
		if string(reply) != "got hello" {
			t.Fatalf("reply %q", reply)
		}
	})
	t.Run("server-closes-first", func(t *testing.T) {
		ln := hostListen(t, "tcp4")
		done := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err.Error()
				return
			}
			defer c.Close()
			c.Write([]byte("banner"))
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				done <- err.Error()
				return
			}
			done <- string(got)
		}()
		c, err := r.dial(viaGateway(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		banner, err := io.ReadAll(c) // EOF: the server's FIN arrived
		if err != nil || string(banner) != "banner" {
			t.Fatalf("banner %q, %v", banner, err)
		}
		c.Write([]byte("still talking"))
		c.Close()
		if s := <-done; s != "still talking" {
			t.Fatalf("server got %q", s)
		}
	})
	eventually(t, 5*time.Second, "flows released", func() bool { return r.dev.Stats().ActiveFlows == 0 })
}

// TestTCPReset: a reset from either side resets the other side.
func TestTCPReset(t *testing.T) {
	r := newRig(t, baseConfig(), 1500)
	t.Run("from-host", func(t *testing.T) {
		ln := hostListen(t, "tcp4")
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Wait for the client's first byte: the connection is
			// then established on both sides.
			c.Read(make([]byte, 1))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}()
		c, err := r.dial(viaGateway(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 10))
		if err == nil || !strings.Contains(err.Error(), "reset") {
			t.Fatalf("client read: %v, want a connection reset", err)
		}
	})
	t.Run("from-inside", func(t *testing.T) {
		ln := hostListen(t, "tcp4")
		srv := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				srv <- err
				return
			}
			defer c.Close()
			c.Write([]byte("unread data"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 10))
			srv <- err
		}()
		c, err := r.dial(viaGateway(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		// Wait until the data is in the client's receive queue, then
		// close without reading it: the client stack sends a reset.
		time.Sleep(200 * time.Millisecond)
		c.Close()
		err = <-srv
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server read: %v, want ECONNRESET", err)
		}
	})
	eventually(t, 5*time.Second, "flows released", func() bool { return r.dev.Stats().ActiveFlows == 0 })
	if st := r.dev.Stats(); st.TCPResets < 2 {
		t.Errorf("TCPResets = %d, want 2", st.TCPResets)
	}
}

// TestTCPRefused: connections the host refuses, or the mapping refuses,
// are reset without a handshake.
func TestTCPRefused(t *testing.T) {
	t.Run("closed-host-port", func(t *testing.T) {
		r := newRig(t, baseConfig(), 1500)
		port := freePort(t, "tcp")
		_, err := r.dial(netip.AddrPortFrom(gateway, port))
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("dial: %v, want connection refused", err)
		}
		if st := r.dev.Stats(); st.TCPDialFailed != 1 || st.TCPFlows != 0 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("no-host-loopback", func(t *testing.T) {
		cfg := baseConfig()
		cfg.HostLoopback = false
		r := newRig(t, cfg, 1500)
		ln := hostListen(t, "tcp4")
		_, err := r.dial(viaGateway(ln.Addr()))
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("dial: %v, want connection refused", err)
		}
		if st := r.dev.Stats(); st.TCPRefused != 1 {
			t.Errorf("TCPRefused = %d", st.TCPRefused)
		}
	})
}

// TestMaxFlows: beyond MaxFlows new connections are refused; a slot is
// free again once a flow ends.
func TestMaxFlows(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxFlows = 1
	r := newRig(t, cfg, 1500)
	ln := hostListen(t, "tcp4")
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	c1, err := r.dial(viaGateway(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.dial(viaGateway(ln.Addr())); err == nil {
		t.Fatal("second connection accepted beyond MaxFlows = 1")
	}
	c1.Close()
	eventually(t, 5*time.Second, "slot released", func() bool { return r.dev.Stats().ActiveFlows == 0 })
	c3, err := r.dial(viaGateway(ln.Addr()))
	if err != nil {
		t.Fatalf("connection after the first ended: %v", err)
	}
	c3.Close()
	if st := r.dev.Stats(); st.FlowLimit != 1 {
		t.Errorf("FlowLimit = %d, want 1", st.FlowLimit)
	}
}

// TestHalfClosedTimeout: a flow one side has closed is reset when idle:
// the side still open (here the client, whose server never answers its
// FIN) gets a reset.
func TestHalfClosedTimeout(t *testing.T) {
	cfg := baseConfig()
	cfg.TCPHalfClosedTimeout = 300 * time.Millisecond
	r := newRig(t, cfg, 1500)
	ln := hostListen(t, "tcp4")
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.ReadAll(c) // the client's FIN; the server then never closes
		<-release
	}()
	c, err := r.dial(viaGateway(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CloseWrite()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("client read: %v, want a reset after the idle timeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("reset after %v, before the timeout", d)
	}
}

// TestCloseResetsFlows: Close resets the relayed connections and waits
// for their goroutines.
func TestCloseResetsFlows(t *testing.T) {
	r := newRig(t, baseConfig(), 1500)
	ln := hostListen(t, "tcp4")
	srv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- err
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		srv <- err
	}()
	c, err := r.dial(viaGateway(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 5*time.Second, "flow up", func() bool { return r.dev.Stats().ActiveFlows == 1 })
	r.dev.Close()
	if err := <-srv; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server: %v, want ECONNRESET", err)
	}
	if n := r.dev.Stats().ActiveFlows; n != 0 {
		t.Errorf("%d flows active after Close", n)
	}
}

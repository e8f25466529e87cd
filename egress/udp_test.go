package egress

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
)

// udpEcho runs a host UDP echo server on the loopback; it reports the
// source address of every datagram on from.
func udpEcho(t testing.TB, network string) (*net.UDPConn, <-chan netip.AddrPort) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "udp6" {
		addr = "[::1]:0"
	}
	ua, _ := net.ResolveUDPAddr(network, addr)
	c, err := net.ListenUDP(network, ua)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	from := make(chan netip.AddrPort, 100)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, a, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case from <- a:
			default:
			}
			c.WriteToUDPAddrPort(buf[:n], a)
		}
	}()
	return c, from
}

// TestUDPRelay: datagrams go out and their replies come back, over IPv4
// and IPv6, including a datagram larger than the MTU (fragmented inside).
func TestUDPRelay(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			r := newRig(t, baseConfig(), 1500)
			srv, _ := udpEcho(t, network)
			c := r.dialUDP(viaGateway(srv.LocalAddr()))
			defer c.Close()
			for _, size := range []int{0, 1, 1200, 4000} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 8192)
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("size %d: echo of %d bytes differs", size, n)
				}
			}
			if st := r.dev.Stats(); st.UDPFlows != 1 {
				t.Errorf("UDPFlows = %d, want 1 (one flow for all datagrams)", st.UDPFlows)
			}
		})
	}
}

// TestUDPPortUnreachable: a host port nobody listens on is reported back
// as an ICMP port unreachable (the client's socket sees the refusal);
// a destination the mapping refuses likewise.
func TestUDPPortUnreachable(t *testing.T) {
	// The refusal is reported once, by the next read or write of the
	// client's connected socket.
	refused := func(t *testing.T, c interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	}) {
		t.Helper()
		var err error
		for i := 0; i < 20; i++ {
			if _, err = c.Write([]byte("anyone?")); err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err = c.Read(make([]byte, 10)); err != nil && !strings.Contains(err.Error(), "timeout") {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("%v, want connection refused", err)
		}
	}
	t.Run("host-port-closed", func(t *testing.T) {
		r := newRig(t, baseConfig(), 1500)
		c := r.dialUDP(netip.AddrPortFrom(gateway, freePort(t, "udp")))
		defer c.Close()
		refused(t, c)
		if st := r.dev.Stats(); st.UDPICMPSent == 0 {
			t.Error("UDPICMPSent = 0")
		}
	})
	t.Run("mapping-refuses", func(t *testing.T) {
		cfg := baseConfig()
		cfg.HostLoopback = false
		r := newRig(t, cfg, 1500)
		srv, _ := udpEcho(t, "udp4")
		c := r.dialUDP(viaGateway(srv.LocalAddr()))
		defer c.Close()
		refused(t, c)
		if st := r.dev.Stats(); st.UDPRefused == 0 || st.UDPFlows != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestUDPTimeouts: a flow ends after UDPTimeout without datagrams (the
// next datagram opens a new host socket, seen as a new source port); a
// flow with replies that outlived its first two seconds gets
// UDPStreamTimeout instead.
func TestUDPTimeouts(t *testing.T) {
	cfg := baseConfig()
	cfg.UDPTimeout = 300 * time.Millisecond
	cfg.UDPStreamTimeout = 5 * time.Second
	r := newRig(t, cfg, 1500)
	srv, from := udpEcho(t, "udp4")
	c := r.dialUDP(viaGateway(srv.LocalAddr()))
	defer c.Close()
	exchange := func() netip.AddrPort {
		t.Helper()
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		return <-from
	}
	first := exchange()
	eventually(t, 3*time.Second, "idle flow expired", func() bool { return r.dev.Stats().ActiveFlows == 0 })
	second := exchange()
	if first == second {
		t.Fatalf("after the timeout the same host socket %v was used", first)
	}
	// Keep the flow busy past streamAfter, then stay idle longer than
	// UDPTimeout: it must survive.
	deadline := time.Now().Add(streamAfter + 300*time.Millisecond)
	for time.Now().Before(deadline) {
		if got := exchange(); got != second {
			t.Fatalf("flow changed host socket while active: %v then %v", second, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * cfg.UDPTimeout)
	if got := exchange(); got != second {
		t.Fatalf("stream flow expired after %v idle (stream timeout %v)", 3*cfg.UDPTimeout, cfg.UDPStreamTimeout)
	}
}

// TestDNSForwarder: the DNS address relays port 53 (UDP and TCP) to the
// upstream resolver and refuses other ports; it answers ping itself.
func TestDNSForwarder(t *testing.T) {
	up, from := udpEcho(t, "udp4")
	tcpUp := hostListen(t, "tcp4")
	// Both upstreams on the same port: TCP 53 goes there too.
	upPort := up.LocalAddr().(*net.UDPAddr).Port
	tcpUp.Close()
	tl, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", itoa(upPort)))
	if err != nil {
		t.Skipf("tcp on the upstream's port: %v", err)
	}
	defer tl.Close()
	go func() {
		c, err := tl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 100)
		n, _ := c.Read(buf)
		c.Write(buf[:n])
	}()
	cfg := baseConfig()
	cfg.DNS = []netip.Addr{dnsAddr}
	cfg.DNSUpstream = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:" + itoa(upPort))}
	r := newRig(t, cfg, 1500)

	c := r.dialUDP(netip.AddrPortFrom(dnsAddr, 53))
	defer c.Close()
	c.Write([]byte("query"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "query" {
		t.Fatalf("udp 53: %q, %v", buf[:n], err)
	}
	if a := <-from; !a.Addr().IsLoopback() {
		t.Errorf("upstream saw %v", a)
	}
	tc, err := r.dial(netip.AddrPortFrom(dnsAddr, 53))
	if err != nil {
		t.Fatalf("tcp 53: %v", err)
	}
	tc.Write([]byte("tcpquery"))
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = tc.Read(buf)
	tc.Close()
	if err != nil || string(buf[:n]) != "tcpquery" {
		t.Fatalf("tcp 53: %q, %v", buf[:n], err)
	}
	if _, err := r.dial(netip.AddrPortFrom(dnsAddr, 54)); err == nil {
		t.Fatal("port 54 of the DNS address was relayed")
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// TestConfigValidate checks the errors Validate reports.
func TestConfigValidate(t *testing.T) {
	gw := []netip.Addr{gateway}
	ok := netip.MustParseAddrPort("127.0.0.1:8080")
	in := netip.MustParseAddrPort("10.0.2.100:80")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"minimal", Config{Gateways: gw}, ""},
		{"no-gateway", Config{}, "at least one gateway"},
		{"loopback-gateway", Config{Gateways: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}, "not a unicast"},
		{"dns-is-gateway", Config{Gateways: gw, DNS: gw}, "also a gateway"},
		{"forward-ok", Config{Gateways: gw, Forwards: []Forward{{"tcp", ok, in}}}, ""},
		{"forward-proto", Config{Gateways: gw, Forwards: []Forward{{"sctp", ok, in}}}, "proto"},
		{"forward-no-port", Config{Gateways: gw, Forwards: []Forward{{"tcp", netip.MustParseAddrPort("127.0.0.1:0"), in}}}, "needs an address and a port"},
		{"forward-family", Config{Gateways: gw, Forwards: []Forward{{"tcp", ok, netip.MustParseAddrPort("[fd00::100]:80")}}}, "no gateway address"},
		{"forward-dup", Config{Gateways: gw, Forwards: []Forward{{"tcp", ok, in}, {"tcp", ok, in}}}, "already forwarded"},
		{"forward-dup-wildcard", Config{Gateways: gw, Forwards: []Forward{{"tcp", ok, in}, {"tcp", netip.MustParseAddrPort("0.0.0.0:8080"), in}}}, "already forwarded"},
		{"forward-udp-tcp-same-port", Config{Gateways: gw, Forwards: []Forward{{"tcp", ok, in}, {"udp", ok, in}}}, ""},
		{"mtu", Config{Gateways: gw, MTU: 500}, "MTU 500"},
		{"negative", Config{Gateways: gw, MaxFlows: -1}, "max flows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{}, nil); !errors.Is(err, err) || err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

// TestUDPFastPathNoAllocs: a datagram of an existing flow is queued and
// sent without allocating.
func TestUDPFastPathNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	srv, _ := udpEcho(t, "udp4")
	d := newTestDevice(t, baseConfig())
	q := d.Queues()[0]
	dst := viaGateway(srv.LocalAddr())
	pkt := make([]byte, 28+64)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
	pkt[3] = byte(len(pkt))
	s, g := clientAddr.As4(), dst.Addr().As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], g[:])
	packet.SetIPv4Checksum(pkt)
	pkt[20], pkt[21], pkt[22], pkt[23] = 0x9c, 0x40, byte(dst.Port()>>8), byte(dst.Port())
	pkt[25] = 72
	var p packet.Parsed
	p.Decode(pkt)
	p.SetL4Checksum()
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if !d.udpIn(q, &p) {
		t.Fatal("the fast path refused the datagram")
	}
	q.flushUDP()
	allocs := testing.AllocsPerRun(200, func() {
		d.udpIn(q, &p)
		q.flushUDP()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram", allocs)
	}
	if st := d.Stats(); st.UDPFlows != 1 || st.BytesToHost == 0 {
		t.Errorf("stats %+v", st)
	}
}

// BenchmarkUDPFastPath measures a 64-byte datagram from inside to its
// host socket (the send included).
func BenchmarkUDPFastPath(b *testing.B) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	go func() { // a sink: no replies
		buf := make([]byte, 65536)
		for {
			if _, err := srv.Read(buf); err != nil {
				return
			}
		}
	}()
	d := newTestDevice(b, baseConfig())
	q := d.Queues()[0]
	dst := viaGateway(srv.LocalAddr())
	pkt := make([]byte, 28+64)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
	pkt[3] = byte(len(pkt))
	s, g := clientAddr.As4(), dst.Addr().As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], g[:])
	packet.SetIPv4Checksum(pkt)
	pkt[20], pkt[21], pkt[22], pkt[23] = 0x9c, 0x40, byte(dst.Port()>>8), byte(dst.Port())
	pkt[25] = 72
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = append(make([]byte, 16), pkt...)
	}
	b.ReportAllocs()
	b.SetBytes(32 * 64)
	for b.Loop() {
		q.Write(bufs, 16)
	}
}

// TestUDPUnreachable: a flow whose host socket cannot be opened is
// answered with a destination unreachable from the gateway (a resolver
// then gives up at once); the kind follows the socket's error.
func TestUDPUnreachable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind unreachKind
		code uint8
	}{
		{syscall.ENETUNREACH, unreachNet, packet.ICMPNetUnreachable},
		{syscall.EHOSTUNREACH, unreachHost, packet.ICMPHostUnreachable},
		{syscall.EACCES, unreachAdmin, packet.ICMPAdminProhibited},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if k := unreachableKind(&net.OpError{Op: "dial", Err: tc.err}); k != tc.kind {
				t.Fatalf("kind %d, want %d", k, tc.kind)
			}
			d := newTestDevice(t, baseConfig())
			src, dst := netip.AddrPortFrom(clientAddr, 40000), netip.MustParseAddrPort("192.0.2.1:53")
			d.sendUnreachable(src, dst, tc.kind)
			var r packet.Parsed
			r.Decode(readOne(t, d))
			if r.Proto != packet.ICMP || r.ICMPType != packet.ICMPDestUnreachable || r.ICMPCode != tc.code || !r.L4ChecksumValid() {
				t.Fatalf("reply %v type %d code %d", r.Proto, r.ICMPType, r.ICMPCode)
			}
			if r.SrcAddr() != gateway || r.DstAddr() != clientAddr || r.Inner.DstPort != 53 || r.Inner.SrcPort != 40000 {
				t.Errorf("reply %v -> %v about %v", r.SrcAddr(), r.DstAddr(), r.Inner)
			}
		})
	}
}

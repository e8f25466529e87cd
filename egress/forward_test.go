package egress

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/tunrouter/router/packet"
)

// TestForwardTCP: a host port forwarded inside reaches a server inside,
// which sees the connection coming from the gateway address.
func TestForwardTCP(t *testing.T) {
	port := freePort(t, "tcp")
	cfg := baseConfig()
	cfg.Forwards = []Forward{{Proto: "tcp", Host: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Inside: netip.AddrPortFrom(clientAddr, 80)}}
	r := newRig(t, cfg, 1500)
	ln := r.listen(netip.AddrPortFrom(clientAddr, 80))
	defer ln.Close()
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		from <- c.RemoteAddr().String()
		io.Copy(c, c)
	}()
	c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", itoa(int(port))), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("forwarded "), 100000)
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	if a := <-from; netip.MustParseAddrPort(a).Addr() != gateway {
		t.Errorf("inside saw the connection from %s, want the gateway", a)
	}
	if st := r.dev.Stats(); st.Forwarded != 1 {
		t.Errorf("Forwarded = %d", st.Forwarded)
	}
}

// TestForwardTCPRefused: a connection to a forward whose inside port is
// closed is reset.
func TestForwardTCPRefused(t *testing.T) {
	port := freePort(t, "tcp")
	cfg := baseConfig()
	cfg.Forwards = []Forward{{Proto: "tcp", Host: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Inside: netip.AddrPortFrom(clientAddr, 81)}}
	r := newRig(t, cfg, 1500)
	// The host's kernel completes the handshake before the egress
	// knows; the reset may come before the dial has returned.
	c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", itoa(int(port))), 5*time.Second)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("%v, want the connection reset", err)
	}
	eventually(t, 5*time.Second, "flow released", func() bool { return r.dev.Stats().ActiveFlows == 0 })
}

// TestForwardUDP: datagrams to a forwarded host UDP port reach inside, and
// the replies reach each host peer.
func TestForwardUDP(t *testing.T) {
	port := freePort(t, "udp")
	cfg := baseConfig()
	cfg.Forwards = []Forward{{Proto: "udp", Host: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Inside: netip.AddrPortFrom(clientAddr, 5353)}}
	r := newRig(t, cfg, 1500)
	fa, proto := fullAddrOf(netip.AddrPortFrom(clientAddr, 5353))
	srv, err := gonet.DialUDP(r.client, &fa, nil, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(append([]byte("re:"), buf[:n]...), a)
		}
	}()
	for _, name := range []string{"peer-a", "peer-b"} {
		c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", itoa(int(port))))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(name))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || string(buf[:n]) != "re:"+name {
			t.Fatalf("%s: %q, %v", name, buf[:n], err)
		}
	}
	if st := r.dev.Stats(); st.Forwarded != 2 {
		t.Errorf("Forwarded = %d, want 2 (one flow per host peer)", st.Forwarded)
	}
}

// echoRequest builds an IPv4 echo request.
func echoRequest(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	b := make([]byte, 28+len(data))
	b[0], b[8], b[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	packet.SetIPv4Checksum(b)
	m := b[20:]
	m[0] = packet.ICMPEchoRequest
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	binary.BigEndian.PutUint16(m[2:], ^packet.Checksum(m, 0))
	return b
}

// TestPingGateway: echo requests to the egress's own addresses are
// answered by the egress, with the request's identifier, sequence and
// data, and valid checksums.
func TestPingGateway(t *testing.T) {
	cfg := baseConfig()
	cfg.DNS = []netip.Addr{dnsAddr}
	cfg.DNSUpstream = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	dev, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	q := dev.Queues()[0]
	for _, dst := range []netip.Addr{gateway, dnsAddr} {
		req := echoRequest(clientAddr, dst, 0x1234, 7, []byte("payload!"))
		q.Write([][]byte{append(make([]byte, 16), req...)}, 16)
		reply := readOne(t, dev)
		var p packet.Parsed
		p.Decode(reply)
		if p.Err != packet.ErrNone || p.Proto != packet.ICMP || p.ICMPType != packet.ICMPEchoReply || !p.L4ChecksumValid() {
			t.Fatalf("reply from %v: %+v", dst, p)
		}
		if p.SrcAddr() != dst || p.DstAddr() != clientAddr {
			t.Errorf("reply %v -> %v", p.SrcAddr(), p.DstAddr())
		}
		if id, seq := binary.BigEndian.Uint16(reply[24:]), binary.BigEndian.Uint16(reply[26:]); id != 0x1234 || seq != 7 || string(reply[28:]) != "payload!" {
			t.Errorf("id %#x seq %d data %q", id, seq, reply[28:])
		}
	}
}

// readOne reads the next packet from any queue of dev.
func readOne(t testing.TB, dev *Device) []byte {
	t.Helper()
	got := make(chan []byte, len(dev.Queues()))
	for _, q := range dev.Queues() {
		go func() {
			bufs := [][]byte{make([]byte, 16+MaxMTU)}
			sizes := []int{0}
			n, err := q.Read(bufs, sizes, 16)
			if err != nil || n == 0 {
				return
			}
			got <- bufs[0][16 : 16+sizes[0]]
		}()
	}
	defer func() {
		for _, q := range dev.Queues() {
			q.InterruptRead()
		}
	}()
	select {
	case p := <-got:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet from the egress")
		return nil
	}
}

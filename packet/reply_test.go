package packet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

func decode(t *testing.T, b []byte) *packet.Parsed {
	t.Helper()
	p := new(packet.Parsed)
	p.Decode(b)
	if p.Err != packet.ErrNone {
		t.Fatalf("decode: %v", p.Err)
	}
	return p
}

// checkReplyIP checks the IP header fields every router-originated packet
// shares, and both checksums (Decode verifies the IPv4 header checksum).
func checkReplyIP(t *testing.T, r *packet.Parsed, src, dst [16]byte, df bool) {
	t.Helper()
	if r.Key.Src != src || r.Key.Dst != dst {
		t.Errorf("addresses %v -> %v, want %v -> %v", r.Key.SrcAddr(), r.Key.DstAddr(), src, dst)
	}
	if r.TTL != packet.ReplyTTL {
		t.Errorf("TTL %d", r.TTL)
	}
	if r.Family == 4 && (r.DontFrag != df || r.Fragment) {
		t.Errorf("DF %v fragment %v", r.DontFrag, r.Fragment)
	}
	if !r.L4ChecksumValid() {
		t.Error("transport checksum invalid")
	}
	if r.Length != len(r.Buf()) {
		t.Errorf("length %d, buffer %d", r.Length, len(r.Buf()))
	}
}

func TestAppendTCPReset(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		flags     packet.TCPFlags
		seq, ack  uint32
		sport     uint16
		dport     uint16
		wantFam   uint8
		wantNoRST bool
	}{
		{"syn", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1000, MSS: 1460}),
			packet.RST | packet.ACK, 0, 1001, 80, 1234, 4, false},
		{"syn-with-data", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1000, Payload: []byte("abc")}),
			packet.RST | packet.ACK, 0, 1004, 80, 1234, 4, false},
		{"fin-no-ack", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.FIN, Seq: 0xffffffff, Payload: []byte("ab")}),
			packet.RST | packet.ACK, 0, 2, 80, 1234, 4, false},
		{"null-flags", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Seq: 50, Payload: []byte("x")}),
			packet.RST | packet.ACK, 0, 51, 80, 1234, 4, false},
		{"ack-with-data", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 5, Ack: 777, Payload: []byte("data")}),
			packet.RST, 777, 0, 80, 1234, 4, false},
		{"fin-ack", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.FIN | packet.ACK, Seq: 5, Ack: 9}),
			packet.RST, 9, 0, 80, 1234, 4, false},
		{"syn6", pt.TCP6("[fd00::1]:1234", "[fd00::2]:443", pt.TCPOpts{Flags: packet.SYN, Seq: 7, Ext: []pt.Ext{pt.DestOpts}}),
			packet.RST | packet.ACK, 0, 8, 443, 1234, 6, false},
		{"ack6", pt.TCP6("[fd00::1]:1234", "[fd00::2]:443", pt.TCPOpts{Flags: packet.ACK, Seq: 7, Ack: 8}),
			packet.RST, 8, 0, 443, 1234, 6, false},
		{"rst", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.RST}), 0, 0, 0, 0, 0, 0, true},
		{"rst-ack", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.RST | packet.ACK}), 0, 0, 0, 0, 0, 0, true},
		{"bad-checksum", pt.BadL4Checksum(pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN})), 0, 0, 0, 0, 0, 0, true},
		{"udp", pt.UDP4("10.0.0.1:1234", "10.0.0.2:80", nil), 0, 0, 0, 0, 0, 0, true},
		{"truncated", pt.TruncateL4(pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN}), 30), 0, 0, 0, 0, 0, 0, true},
		{"fragment", pt.FragmentAt4(pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Payload: make([]byte, 40)}), 0, 24, true), 0, 0, 0, 0, 0, 0, true},
		{"multicast-dst", pt.TCP4("10.0.0.1:1234", "224.0.0.5:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"broadcast-dst", pt.TCP4("10.0.0.1:1234", "255.255.255.255:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"zero-src", pt.TCP4("0.0.0.0:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"loopback-src", pt.TCP4("127.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"multicast-dst6", pt.TCP6("[fd00::1]:1234", "[ff02::1]:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"unspecified-src6", pt.TCP6("[::]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
		{"mapped-src6", pt.TCP6("[::ffff:10.0.0.1]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.SYN}), 0, 0, 0, 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.in)
			prefix := []byte("headroom")
			out, ok := packet.AppendTCPReset(prefix, &p)
			if tt.wantNoRST {
				if ok || len(out) != len(prefix) {
					t.Fatalf("built a reset (%v, %d bytes)", ok, len(out))
				}
				return
			}
			if !ok {
				t.Fatal("no reset built")
			}
			if !bytes.Equal(out[:len(prefix)], prefix) {
				t.Fatal("prefix overwritten")
			}
			r := decode(t, out[len(prefix):])
			checkReplyIP(t, r, p.Key.Dst, p.Key.Src, true)
			if r.Family != tt.wantFam || r.Proto != packet.TCP || r.PayloadLen() != 0 {
				t.Errorf("family %d proto %v payload %d", r.Family, r.Proto, r.PayloadLen())
			}
			if r.TCPFlags != tt.flags || r.Seq != tt.seq || r.Ack != tt.ack || r.Window != 0 {
				t.Errorf("flags %v seq %d ack %d win %d; want %v %d %d 0", r.TCPFlags, r.Seq, r.Ack, r.Window, tt.flags, tt.seq, tt.ack)
			}
			if r.SrcPort != tt.sport || r.DstPort != tt.dport {
				t.Errorf("ports %d -> %d", r.SrcPort, r.DstPort)
			}
			if r.Family == 4 && (r.IPID != 0 || r.TOS != 0 || r.Length != 40) {
				t.Errorf("IPv4 id %d tos %d length %d", r.IPID, r.TOS, r.Length)
			}
			if r.Family == 6 && r.Length != 60 {
				t.Errorf("IPv6 length %d", r.Length)
			}
			// The reset matches the reverse direction of the flow.
			if r.Key != p.Key.Reverse() {
				t.Errorf("reset key %v, want %v", r.Key, p.Key.Reverse())
			}
		})
	}
}

func TestAppendICMPError(t *testing.T) {
	router := addr16("192.0.2.254")
	router6 := addr16("fd00::fe")
	udp := pt.UDP("10.0.0.1:1000", "10.0.0.2:53", pt.UDPOpts{Payload: []byte("query"), TOS: 0xb9})
	big := pt.UDP4("10.0.0.1:1000", "10.0.0.2:53", make([]byte, 1472))
	udp6 := pt.UDP6("[fd00::1]:1000", "[fd00::2]:53", []byte("query"))
	big6 := pt.UDP6("[fd00::1]:1000", "[fd00::2]:53", make([]byte, 1952))
	echo := pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 1)
	echo6 := pt.ICMP6Echo("fd00::1", "fd00::2", 128, 1, 1)
	tests := []struct {
		name      string
		in        []byte
		typ, code uint8
		mtu       uint32
		src       [16]byte
		wantSrc   [16]byte
		rest      uint32 // the word after the checksum
		quote     int    // bytes of in quoted
		tos       uint8
	}{
		{"port-unreachable", udp, 3, 3, 0, router, router, 0, len(udp), 0xc0 | 0xb9&0x1e},
		{"frag-needed", big, 3, 4, 1400, router, router, 1400, 548, 0xc0},
		{"param-problem-pointer", udp, 12, 0, 9, router, router, 9 << 24, len(udp), 0xc0 | 0xb9&0x1e},
		{"time-exceeded-default-src", udp, 11, 0, 77, [16]byte{}, addr16("10.0.0.2"), 0, len(udp), 0xc0 | 0xb9&0x1e},
		{"about-echo-request", echo, 3, 1, 0, router, router, 0, len(echo), 0xc0},
		{"about-first-fragment", pt.FragmentAt4(big, 0, 64, true), 11, 1, 0, router, router, 0, 84, 0xc0},
		{"about-truncated-tcp", pt.TruncateL4(pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{}), 30), 3, 13, 0, router, router, 0, 30, 0xc0},
		{"port-unreachable6", udp6, 1, 4, 0, router6, router6, 0, len(udp6), 0},
		{"packet-too-big6", big6, 2, 0, 1280, router6, router6, 1280, 1280 - 48, 0},
		{"param-problem6", udp6, 4, 0, 40, router6, router6, 40, len(udp6), 0},
		{"time-exceeded6-default-src", udp6, 3, 0, 0, [16]byte{}, addr16("fd00::2"), 0, len(udp6), 0},
		{"about-echo6", echo6, 1, 1, 0, router6, router6, 0, len(echo6), 0},
		{"packet-too-big-multicast6", pt.UDP6("[fd00::1]:1", "[ff0e::1]:2", make([]byte, 1400)), 2, 0, 1280, router6, router6, 1280, 1232, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.in)
			prefix := []byte{1, 2, 3}
			out, ok := packet.AppendICMPError(prefix, &p, tt.typ, tt.code, tt.mtu, tt.src)
			if !ok {
				t.Fatal("no error built")
			}
			if !bytes.Equal(out[:3], prefix) {
				t.Fatal("prefix overwritten")
			}
			r := decode(t, out[3:])
			checkReplyIP(t, r, tt.wantSrc, p.Key.Src, true)
			if r.ICMPType != tt.typ || r.ICMPCode != tt.code {
				t.Errorf("type %d code %d", r.ICMPType, r.ICMPCode)
			}
			if got := binary.BigEndian.Uint32(r.Buf()[r.L4Off+4:]); got != tt.rest {
				t.Errorf("rest of header %#x, want %#x", got, tt.rest)
			}
			if q := r.Buf()[r.L4Off+8:]; !bytes.Equal(q, tt.in[:tt.quote]) {
				t.Errorf("quoted %d bytes, want the first %d of the packet", len(q), tt.quote)
			}
			if r.Family == 4 && (r.TOS != tt.tos || r.IPID != 0 || r.Length > 576) {
				t.Errorf("tos %#x id %d length %d", r.TOS, r.IPID, r.Length)
			}
			if r.Family == 6 && (r.Length > 1280 || r.TOS != 0 || r.FlowLabel != 0) {
				t.Errorf("length %d tc %d flow %d", r.Length, r.TOS, r.FlowLabel)
			}
			// The error is RELATED material: its quote decodes to the
			// original packet's key.
			if tt.quote >= 28 && p.Err == packet.ErrNone && !p.Fragment && (r.InnerErr != packet.ErrNone || r.Inner != p.Key) {
				t.Errorf("quoted key %v (%v), want %v", r.Inner, r.InnerErr, p.Key)
			}
		})
	}
}

func TestAppendICMPErrorRefusals(t *testing.T) {
	router := addr16("192.0.2.254")
	router6 := addr16("fd00::fe")
	udp := pt.UDP4("10.0.0.1:1000", "10.0.0.2:53", make([]byte, 100))
	udp6 := pt.UDP6("[fd00::1]:1000", "[fd00::2]:53", make([]byte, 100))
	tests := []struct {
		name string
		in   []byte
		typ  uint8
		src  [16]byte
	}{
		{"about-dest-unreachable", pt.ICMP4Error("10.0.0.1", "10.0.0.2", 3, 3, udp[:28]), 11, router},
		{"about-source-quench", pt.ICMP4Error("10.0.0.1", "10.0.0.2", 4, 0, udp[:28]), 11, router},
		{"about-redirect", pt.ICMP4Error("10.0.0.1", "10.0.0.2", 5, 0, udp[:28]), 11, router},
		{"about-time-exceeded", pt.ICMP4Error("10.0.0.1", "10.0.0.2", 11, 0, udp[:28]), 11, router},
		{"about-param-problem", pt.ICMP4Error("10.0.0.1", "10.0.0.2", 12, 0, udp[:28]), 11, router},
		{"about-unknown-icmp-type", pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: 19}), 11, router},
		{"about-icmpv6-error", pt.ICMP6Error("fd00::1", "fd00::2", 1, 4, udp6[:48]), 3, router6},
		{"about-icmpv6-unassigned-error", pt.ICMP6Error("fd00::1", "fd00::2", 127, 0, udp6[:48]), 3, router6},
		{"about-non-first-fragment", pt.FragmentAt4(udp, 24, 40, true), 11, router},
		{"about-non-first-fragment6", pt.FragmentAt6(udp6, 1, 24, 40, true), 3, router6},
		{"about-multicast-dst", pt.UDP4("10.0.0.1:1", "239.1.2.3:2", nil), 3, router},
		{"about-broadcast-dst", pt.UDP4("10.0.0.1:1", "255.255.255.255:2", nil), 3, router},
		{"about-multicast-dst6", pt.UDP6("[fd00::1]:1", "[ff02::1]:2", nil), 1, router6},
		{"from-zero-src", pt.UDP4("0.0.0.0:68", "10.0.0.2:67", nil), 3, router},
		{"from-multicast-src", pt.UDP4("224.0.0.1:1", "10.0.0.2:2", nil), 3, router},
		{"from-unspecified-src6", pt.UDP6("[::]:1", "[fd00::2]:2", nil), 1, router6},
		{"from-multicast-src6", pt.UDP6("[ff02::1]:1", "[fd00::2]:2", nil), 1, router6},
		{"with-multicast-source", udp, 3, addr16("224.0.0.9")},
		{"too-big-multicast-without-source", pt.UDP6("[fd00::1]:1", "[ff0e::1]:2", nil), 2, [16]byte{}},
		{"bad-ip-checksum", pt.BadIPChecksum(udp), 3, router},
		{"truncated-ipv6", pt.Truncate(udp6, 60), 1, router6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.in)
			dst := make([]byte, 5, 2000)
			out, ok := packet.AppendICMPError(dst, &p, tt.typ, 0, 0, tt.src)
			if ok || len(out) != 5 {
				t.Errorf("built an error (%v, %d bytes)", ok, len(out))
			}
		})
	}
}

func TestAppendEchoReply(t *testing.T) {
	req := pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: 8, ID: 0x1234, Seq: 9, Data: []byte("some ping data"), IPID: 4321, TOS: 0x20})
	req6 := pt.ICMP("fd00::1", "fd00::2", pt.ICMPOpts{Type: 128, ID: 0x1234, Seq: 9, Data: []byte("v6 ping"), TOS: 0x20, Ext: []pt.Ext{pt.HopByHop}})
	for _, tc := range []struct {
		name    string
		in      []byte
		typ     uint8
		data    string
		wantLen int
	}{
		{"v4", req, 0, "some ping data", 20 + 8 + 14},
		{"v6", req6, 129, "v6 ping", 40 + 8 + 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decode(t, tc.in)
			out, ok := packet.AppendEchoReply(nil, p)
			if !ok {
				t.Fatal("no reply")
			}
			r := decode(t, out)
			checkReplyIP(t, r, p.Key.Dst, p.Key.Src, false)
			if r.ICMPType != tc.typ || r.ICMPID != 0x1234 || string(r.Payload()) != tc.data || r.Length != tc.wantLen {
				t.Errorf("type %d id %#x data %q length %d", r.ICMPType, r.ICMPID, r.Payload(), r.Length)
			}
			if seq := binary.BigEndian.Uint16(r.Buf()[r.L4Off+6:]); seq != 9 {
				t.Errorf("sequence %d", seq)
			}
			if r.TOS != 0x20 {
				t.Errorf("tos %#x", r.TOS)
			}
			if r.Family == 4 && r.IPID != 4321 {
				t.Errorf("IP id %d, want the request's", r.IPID)
			}
			// The reply's key is the request key inverted.
			if inv, _ := p.Key.Invert(); r.Key != inv {
				t.Errorf("reply key %v, want %v", r.Key, inv)
			}
		})
	}
	// A request with a non-zero code gets a reply with the same code (as
	// Linux sends it), so that the reply matches the inverted tuple.
	odd := decode(t, pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: 8, Code: 5, ID: 3}))
	out, ok := packet.AppendEchoReply(nil, odd)
	if inv, _ := odd.Key.Invert(); !ok || decode(t, out).Key != inv || decode(t, out).ICMPCode != 5 {
		t.Errorf("reply to a code-5 request: %v", decode(t, out).Key)
	}
	for name, b := range map[string][]byte{
		"reply":         pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 0, 1, 1),
		"bad-checksum":  pt.BadL4Checksum(req),
		"multicast-dst": pt.ICMP4Echo("10.0.0.1", "224.0.0.1", 8, 1, 1),
		"fragment":      pt.FragmentAt4(req, 0, 16, true),
		"udp":           pt.UDP4("10.0.0.1:1", "10.0.0.2:2", nil),
		"icmpv6-in-v4":  pt.FixChecksums(pt.Raw("10.0.0.1", "10.0.0.2", packet.ICMPv6, []byte{128, 0, 0, 0, 0, 1, 0, 1}, pt.IPOpts{})),
	} {
		var p packet.Parsed
		p.Decode(b)
		if out, ok := packet.AppendEchoReply(nil, &p); ok || out != nil {
			t.Errorf("%s: built a reply", name)
		}
	}
}

func TestDecTTL(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 5000; i++ {
		var opts []byte
		if i%3 == 0 {
			opts = []byte{0x94, 4, 0, 0}
		}
		ttl := uint8(2 + r.IntN(254))
		b := pt.UDP(addrString4(r)+":1", addrString4(r)+":2", pt.UDPOpts{TTL: ttl, TOS: uint8(r.Uint32()), ID: uint16(r.Uint32()), DF: i%2 == 0, IPOptions: opts})
		if !packet.DecTTL(b) {
			t.Fatalf("TTL %d not decremented", ttl)
		}
		if b[8] != ttl-1 {
			t.Fatalf("TTL %d after decrementing %d", b[8], ttl)
		}
		// The incremental update equals a full recomputation.
		want := pt.Clone(b)
		packet.SetIPv4Checksum(want)
		if !bytes.Equal(b, want) {
			t.Fatalf("checksum %#x, recomputed %#x", b[10:12], want[10:12])
		}
	}
	for _, ttl := range []uint8{0, 1} {
		b := pt.SetTTL(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", nil), ttl)
		c := pt.Clone(b)
		if packet.DecTTL(b) || !bytes.Equal(b, c) {
			t.Errorf("TTL %d: decremented or modified", ttl)
		}
	}
	b6 := pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{TTL: 2})
	if !packet.DecTTL(b6) || b6[7] != 1 || packet.DecTTL(b6) || b6[7] != 1 {
		t.Errorf("IPv6 hop limit handling: %d", b6[7])
	}
	for _, b := range [][]byte{nil, {0x45}, make([]byte, 19), {0x60, 0, 0, 0}, {0x50, 1, 2, 3, 4, 5, 6, 7, 64}} {
		if packet.DecTTL(b) {
			t.Errorf("DecTTL(% x) = true", b)
		}
	}
}

func TestReplyNoAllocs(t *testing.T) {
	var syn, udp, echo packet.Parsed
	syn.Decode(pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN}))
	udp.Decode(pt.UDP6("[fd00::1]:1", "[fd00::2]:2", make([]byte, 100)))
	echo.Decode(pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 1))
	buf := make([]byte, 0, 2048)
	pkt := pt.UDP4("10.0.0.1:1", "10.0.0.2:2", nil)
	src := addr16("fd00::fe")
	allocs := testing.AllocsPerRun(100, func() {
		out, _ := packet.AppendTCPReset(buf[:0], &syn)
		out, _ = packet.AppendICMPError(out, &udp, 1, 4, 0, src)
		out, _ = packet.AppendEchoReply(out, &echo)
		sinkInt += len(out)
		pkt[8] = 64
		sinkBool = packet.DecTTL(pkt)
	})
	if allocs != 0 {
		t.Errorf("reply builders allocate %v times", allocs)
	}
}

func addr16(s string) [16]byte {
	a, _ := pt.Endpoint(s)
	var b [16]byte
	copy(b[:], a.AsSlice())
	return b
}

func addrString4(r *rand.Rand) string {
	return fmt.Sprintf("%d.%d.1.2", 1+r.IntN(200), r.IntN(256))
}

func BenchmarkReply(b *testing.B) {
	var syn, udp packet.Parsed
	syn.Decode(pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN}))
	udp.Decode(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", make([]byte, 1400)))
	buf := make([]byte, 0, 2048)
	src := addr16("192.0.2.1")
	b.Run("tcp-reset", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := packet.AppendTCPReset(buf[:0], &syn)
			sinkInt += len(out)
		}
	})
	b.Run("icmp-error-576", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := packet.AppendICMPError(buf[:0], &udp, 3, 4, 1400, src)
			sinkInt += len(out)
		}
	})
	pkt := pt.UDP4("10.0.0.1:1", "10.0.0.2:2", nil)
	b.Run("dec-ttl", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pkt[8] = 64
			sinkBool = packet.DecTTL(pkt)
		}
	})
}

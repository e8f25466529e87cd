package packettest

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/tunrouter/router/packet"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// The IPv4 header of the well-known worked checksum example (RFC 1071
// style, as printed in many textbooks): 192.168.0.1 -> 192.168.0.199, UDP,
// total length 115, DF, TTL 64, checksum 0xb861.
func TestIPv4HeaderKnownChecksum(t *testing.T) {
	b := UDP("192.168.0.1:1", "192.168.0.199:2", UDPOpts{Payload: make([]byte, 115-28), DF: true})
	want := unhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
	if !bytes.Equal(b[:20], want) {
		t.Fatalf("header\n got %x\nwant %x", b[:20], want)
	}
}

// A TCP SYN whose bytes were worked out by hand. IP checksum: 4500 + 002c +
// 4006 + 0a00 + 0001 + 0a00 + 0002 = 9935, complement 66ca. TCP checksum:
// pseudo header 0a00+0001+0a00+0002+0006+0018 = 1421; header 04d2+0050+
// 0001+6002+ffff+0204+05b4 = 6cdd (after the end-around carry); 1421+6cdd
// = 80fe, complement 7f01.
func TestTCP4ExactBytes(t *testing.T) {
	b := TCP4("10.0.0.1:1234", "10.0.0.2:80", TCPOpts{Flags: packet.SYN, Seq: 1, Win: 65535, MSS: 1460, WScale: NoWScale})
	want := unhex(`
		4500 002c 0000 0000 4006 66ca 0a00 0001 0a00 0002
		04d2 0050 0000 0001 0000 0000 6002 ffff 7f01 0000
		0204 05b4`)
	if !bytes.Equal(b, want) {
		t.Fatalf("packet\n got %x\nwant %x", b, want)
	}
}

func TestBuildersDecode(t *testing.T) {
	quoted := TCP4("10.0.0.1:1234", "10.0.0.2:80", TCPOpts{Flags: packet.SYN, WScale: 7})
	quoted6 := UDP6("[fd00::1]:53", "[fd00::2]:5353", []byte("q"))
	tests := []struct {
		name  string
		b     []byte
		proto packet.Proto
		key   packet.FlowKey
	}{
		{"tcp4", TCP4("10.0.0.1:1234", "10.0.0.2:80", TCPOpts{Flags: packet.SYN, MSS: 1460, WScale: 7, SACKPerm: true, TS: true, TSVal: 9, SACK: [][2]uint32{{1, 2}}, Payload: []byte("abc")}),
			packet.TCP, Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")},
		{"tcp6-ext", TCP6("[fd00::1]:1", "[fd00::2]:2", TCPOpts{Flags: packet.ACK, Ext: []Ext{HopByHop, DestOpts, Routing, AuthHdr, DestOpts}}),
			packet.TCP, Key(packet.TCP, "[fd00::1]:1", "[fd00::2]:2")},
		{"udp4-options", UDP("10.1.1.1:5", "10.2.2.2:6", UDPOpts{Payload: []byte("x"), IPOptions: []byte{0x94, 4, 0, 0}}),
			packet.UDP, Key(packet.UDP, "10.1.1.1:5", "10.2.2.2:6")},
		{"udp4-nocsum", UDP("10.1.1.1:5", "10.2.2.2:6", UDPOpts{Payload: []byte("x"), NoChecksum: true}),
			packet.UDP, Key(packet.UDP, "10.1.1.1:5", "10.2.2.2:6")},
		{"udp6", UDP6("[fd00::1]:53", "[fd00::2]:5353", []byte("q")), packet.UDP, Key(packet.UDP, "[fd00::1]:53", "[fd00::2]:5353")},
		{"echo4", ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 77, 1), packet.ICMP, ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 77)},
		{"echo6", ICMP6Echo("fd00::1", "fd00::2", 128, 77, 1), packet.ICMPv6, ICMPKey("fd00::1", "fd00::2", 128, 0, 77)},
		{"error4", ICMP4Error("10.0.0.9", "10.0.0.1", 3, 3, quoted), packet.ICMP, ICMPKey("10.0.0.9", "10.0.0.1", 3, 3, 0)},
		{"error6", ICMP6Error("fd00::9", "fd00::1", 1, 4, quoted6), packet.ICMPv6, ICMPKey("fd00::9", "fd00::1", 1, 4, 0)},
		{"redirect6", ICMP6Redirect("fe80::1", "fd00::1", "fe80::2", "fd00::2", quoted6), packet.ICMPv6, ICMPKey("fe80::1", "fd00::1", 137, 0, 0)},
		{"raw-gre", Raw("10.0.0.1", "10.0.0.2", packet.GRE, []byte{0, 0, 8, 0}, IPOpts{TTL: 3}), packet.GRE, Key(packet.GRE, "10.0.0.1", "10.0.0.2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.b)
			if p.Err != packet.ErrNone {
				t.Fatalf("decode: %v", p.Err)
			}
			if p.Proto != tt.proto || p.Key != tt.key {
				t.Errorf("proto %v key %v, want %v %v", p.Proto, p.Key, tt.proto, tt.key)
			}
			if !p.L4ChecksumValid() {
				t.Errorf("transport checksum invalid")
			}
			if p.Length != len(tt.b) {
				t.Errorf("length %d, want %d", p.Length, len(tt.b))
			}
		})
	}
}

func TestCorruptions(t *testing.T) {
	tcp := TCP4("10.0.0.1:1234", "10.0.0.2:80", TCPOpts{Flags: packet.ACK, Payload: []byte("hello")})
	tcp6 := TCP6("[fd00::1]:1234", "[fd00::2]:80", TCPOpts{Flags: packet.ACK, Payload: []byte("hello")})
	udp := UDP4("10.0.0.1:1", "10.0.0.2:2", []byte("hello"))
	tests := []struct {
		name    string
		b       []byte
		wantErr packet.DecodeError
		csumOK  bool
	}{
		{"bad-ip-csum", BadIPChecksum(tcp), packet.ErrIPChecksum, true},
		{"bad-l4-csum", BadL4Checksum(tcp), packet.ErrNone, false},
		{"bad-l4-csum6", BadL4Checksum(tcp6), packet.ErrNone, false},
		{"truncate", Truncate(tcp, 30), packet.ErrIPTotalLen, true},
		{"truncate6", Truncate(tcp6, 50), packet.ErrIPv6PayloadLen, true},
		{"truncate-l4", TruncateL4(tcp, 30), packet.ErrTCPTruncated, true},
		{"ihl-4", SetIHL(tcp, 4), packet.ErrIPHeaderLen, true},
		{"doff-4", SetDataOffset(tcp, 4), packet.ErrTCPDataOff, true},
		{"doff-15", SetDataOffset(tcp, 15), packet.ErrTCPTruncated, true},
		{"udp-len-big", SetUDPLength(udp, 100), packet.ErrUDPLength, true},
		{"udp-len-small", SetUDPLength(udp, 7), packet.ErrUDPLength, true},
		{"version", SetVersion(tcp, 5), packet.ErrIPVersion, true},
		{"ttl", SetTTL(tcp, 1), packet.ErrNone, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.b)
			if p.Err != tt.wantErr {
				t.Fatalf("err %q, want %q", p.Err, tt.wantErr)
			}
			if p.Err == packet.ErrNone && p.L4ChecksumValid() != tt.csumOK {
				t.Errorf("checksum valid = %v, want %v", !tt.csumOK, tt.csumOK)
			}
		})
	}
	if !bytes.Equal(tcp, TCP4("10.0.0.1:1234", "10.0.0.2:80", TCPOpts{Flags: packet.ACK, Payload: []byte("hello")})) {
		t.Error("a corruption helper modified its input")
	}
}

func TestFragmentBuilders(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 200) // 3200 bytes
	pkts := map[string][]byte{
		"udp4":         UDP("10.0.0.1:1", "10.0.0.2:2", UDPOpts{Payload: payload, ID: 77}),
		"udp4-options": UDP("10.0.0.1:1", "10.0.0.2:2", UDPOpts{Payload: payload, ID: 78, IPOptions: []byte{0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0}}),
		"udp6":         UDP6("[fd00::1]:1", "[fd00::2]:2", payload),
		"udp6-ext":     UDP("[fd00::1]:1", "[fd00::2]:2", UDPOpts{Payload: payload, Ext: []Ext{HopByHop, DestOpts, Routing, DestOpts}}),
	}
	for name, pkt := range pkts {
		t.Run(name, func(t *testing.T) {
			var frags [][]byte
			if pkt[0]>>4 == 4 {
				frags = Fragment4(pkt, 1000)
			} else {
				frags = Fragment6(pkt, 1280)
			}
			if len(frags) < 3 {
				t.Fatalf("%d fragments", len(frags))
			}
			// Reassemble by hand: concatenate the fragment payloads in
			// offset order and compare with the original's payload.
			var got []byte
			for i, f := range frags {
				var p packet.Parsed
				p.Decode(f)
				if p.Err != packet.ErrNone && !(p.FragOff == 0 && p.Err == packet.ErrUDPLength) {
					t.Fatalf("fragment %d: %v", i, p.Err)
				}
				if !p.Fragment || p.MoreFrags != (i < len(frags)-1) || int(p.FragOff) != len(got) {
					t.Fatalf("fragment %d: fragment=%v more=%v off=%d (have %d bytes)", i, p.Fragment, p.MoreFrags, p.FragOff, len(got))
				}
				start := p.L4Off
				if p.Family == 6 {
					start = p.FragHdrOff + 8
				}
				got = append(got, f[start:]...)
			}
			var orig packet.Parsed
			orig.Decode(pkt)
			var want []byte
			if orig.Family == 4 {
				want = pkt[orig.L4Off:]
			} else {
				uf, _ := Unfragmentable6(pkt)
				want = pkt[uf:]
			}
			if !bytes.Equal(got, want) {
				t.Fatal("fragment payloads do not add up to the original")
			}
		})
	}
}

func TestCopiedOptions(t *testing.T) {
	// Router alert (0x94, copied), a NOP, a record-route (7, not copied).
	opts := []byte{0x94, 4, 0, 0, 1, 7, 7, 4, 0, 0, 0, 0}
	got := copiedOptions4(opts)
	if want := []byte{0x94, 4, 0, 0}; !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

func TestSum16AgainstPacketChecksum(t *testing.T) {
	b := make([]byte, 0, 300)
	for i := 0; i < 300; i++ {
		if got, want := Sum16(b, 0x1234), packet.Checksum(b, 0x1234); got != want {
			t.Fatalf("len %d: Sum16 %#x, packet.Checksum %#x", len(b), got, want)
		}
		b = append(b, byte(i*37+11))
	}
}

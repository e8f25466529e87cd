package packet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// view is every exported field of packet.Parsed: fixtures state the whole
// decode, so a field the decoder fills by mistake fails the test too.
type view struct {
	Err                     packet.DecodeError
	Family                  uint8
	Proto                   packet.Proto
	Key                     packet.FlowKey
	Length, L4Off           int
	PayloadOff              int
	TTL, TOS                uint8
	FlowLabel, IPID         uint32
	Fragment, MoreFrags, DF bool
	FragOff                 uint16
	FragHdrOff, FragNextOff int
	SrcPort, DstPort        uint16
	Seq, Ack                uint32
	TCPFlags                packet.TCPFlags
	Window                  uint16
	TCPOpts                 packet.TCPOptions
	UDPLength               uint16
	ICMPType, ICMPCode      uint8
	ICMPID                  uint16
	InnerOff                int
	Inner                   packet.FlowKey
	InnerErr                packet.DecodeError
}

func viewOf(p *packet.Parsed) view {
	return view{
		Err: p.Err, Family: p.Family, Proto: p.Proto, Key: p.Key,
		Length: p.Length, L4Off: p.L4Off, PayloadOff: p.PayloadOff,
		TTL: p.TTL, TOS: p.TOS, FlowLabel: p.FlowLabel, IPID: p.IPID,
		Fragment: p.Fragment, MoreFrags: p.MoreFrags, DF: p.DontFrag, FragOff: p.FragOff,
		FragHdrOff: p.FragHdrOff, FragNextOff: p.FragNextOff,
		SrcPort: p.SrcPort, DstPort: p.DstPort, Seq: p.Seq, Ack: p.Ack,
		TCPFlags: p.TCPFlags, Window: p.Window, TCPOpts: p.TCPOpts, UDPLength: p.UDPLength,
		ICMPType: p.ICMPType, ICMPCode: p.ICMPCode, ICMPID: p.ICMPID,
		InnerOff: p.InnerOff, Inner: p.Inner, InnerErr: p.InnerErr,
	}
}

// diff lists the fields that differ between two views.
func diff(got, want view) string {
	var b bytes.Buffer
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < g.NumField(); i++ {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			fmt.Fprintf(&b, "\n  %s: got %+v, want %+v", g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
	return b.String()
}

var (
	tcpKey  = pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")
	tcp6Key = pt.Key(packet.TCP, "[fd00::1]:1234", "[fd00::2]:80")
	udpKey  = pt.Key(packet.UDP, "10.0.0.1:1000", "10.0.0.2:2000")
	udp6Key = pt.Key(packet.UDP, "[fd00::1]:1000", "[fd00::2]:2000")
)

// noPorts returns k without ports (the key of a non-first fragment, or of
// a quoted packet whose ports could not be read).
func noPorts(k packet.FlowKey) packet.FlowKey { k.SrcPort, k.DstPort = 0, 0; return k }

func hundred() []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

var (
	quotedTCP   = pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1, WScale: pt.NoWScale})
	quotedUDP   = pt.UDP4("10.0.0.1:1000", "10.0.0.2:2000", []byte("query"))
	quotedEcho  = pt.ICMP4Echo("10.0.0.1", "10.0.0.2", packet.ICMPEchoRequest, 0x4242, 1)
	quotedErr   = pt.ICMP4Error("10.0.0.2", "10.0.0.1", 3, 3, quotedUDP)
	bigUDP      = pt.UDP("10.0.0.1:1000", "10.0.0.2:2000", pt.UDPOpts{Payload: hundred(), ID: 0x77})
	bigUDP6     = pt.UDP6("[fd00::1]:1000", "[fd00::2]:2000", hundred())
	quoted6     = pt.TCP6("[fd00::1]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.SYN, WScale: pt.NoWScale, Ext: []pt.Ext{pt.HopByHop, pt.DestOpts}})
	quotedEcho6 = pt.ICMP6Echo("fd00::1", "fd00::2", packet.ICMPv6EchoRequest, 0x77, 1)
	synOpts     = pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Seq: 5, Win: 1000, MSS: 1460, WScale: 7, ID: 0x99, Payload: hundred()})
)

type fixture struct {
	name string
	b    []byte
	want view
}

func fixtures() []fixture {
	udpPadded := pt.SetTotalLen(append(pt.UDP4("10.0.0.1:1000", "10.0.0.2:2000", []byte("abc")), 1, 2, 3, 4, 5), 36)
	redirectOtherOpt := pt.ICMP("fe80::1", "fd00::1", pt.ICMPOpts{Type: packet.ICMPv6Redirect, TTL: 255,
		Data: append(make([]byte, 32), 1, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff)})
	return []fixture{
		{"tcp4-syn-options",
			pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1000, Win: 64240,
				MSS: 1460, SACKPerm: true, TS: true, TSVal: 111, WScale: 7, Payload: []byte("hello"),
				TTL: 63, TOS: 0x10, ID: 0x1234, DF: true}),
			// options: MSS 4 + SACK-perm 2 + timestamps 10 + wscale 3 = 19, padded to 20
			view{Family: 4, Proto: packet.TCP, Key: tcpKey, Length: 65, L4Off: 20, PayloadOff: 60,
				TTL: 63, TOS: 0x10, IPID: 0x1234, DF: true, SrcPort: 1234, DstPort: 80, Seq: 1000,
				TCPFlags: packet.SYN, Window: 64240,
				TCPOpts: packet.TCPOptions{MSS: 1460, HasMSS: true, WScale: 7, HasWScale: true, SACKPerm: true, HasTS: true, TSVal: 111}}},
		{"tcp4-sack-blocks",
			pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.ACK, Seq: 7, Ack: 9, Win: 500,
				TS: true, TSVal: 1, TSEcr: 2, SACK: [][2]uint32{{100, 200}, {300, 400}}}),
			// options: timestamps 10 + SACK 18 = 28
			view{Family: 4, Proto: packet.TCP, Key: tcpKey, Length: 68, L4Off: 20, PayloadOff: 68, TTL: 64,
				SrcPort: 1234, DstPort: 80, Seq: 7, Ack: 9, TCPFlags: packet.ACK, Window: 500,
				TCPOpts: packet.TCPOptions{HasTS: true, TSVal: 1, TSEcr: 2, NumSACK: 2, SACK: [4][2]uint32{{100, 200}, {300, 400}}}}},
		{"tcp4-ip-options",
			pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.ACK | packet.FIN, WScale: 3,
				IPOptions: []byte{0x94, 4, 0, 0, 1, 1, 1, 1}}),
			view{Family: 4, Proto: packet.TCP, Key: tcpKey, Length: 48, L4Off: 28, PayloadOff: 48, TTL: 64,
				SrcPort: 1234, DstPort: 80, TCPFlags: packet.ACK | packet.FIN}},
		{"tcp6-ext-headers",
			pt.TCP6("[fd00::1]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 5, Ack: 6,
				Win: 100, Payload: []byte("data"), TTL: 30, TOS: 0xb8, FlowLabel: 0x12345,
				Ext: []pt.Ext{pt.HopByHop, pt.DestOpts, pt.Routing, pt.AuthHdr}}),
			// 40 + hop-by-hop 8 + dest opts 8 + routing 8 + AH 16 = 80
			view{Family: 6, Proto: packet.TCP, Key: tcp6Key, Length: 104, L4Off: 80, PayloadOff: 100,
				TTL: 30, TOS: 0xb8, FlowLabel: 0x12345, SrcPort: 1234, DstPort: 80, Seq: 5, Ack: 6,
				TCPFlags: packet.ACK | packet.PSH, Window: 100}},
		{"udp4-ip-options",
			pt.UDP("10.1.1.1:5353", "224.0.0.251:5353", pt.UDPOpts{Payload: []byte("mdns"), IPOptions: []byte{0x94, 4, 0, 0}, TTL: 255}),
			view{Family: 4, Proto: packet.UDP, Key: pt.Key(packet.UDP, "10.1.1.1:5353", "224.0.0.251:5353"),
				Length: 36, L4Off: 24, PayloadOff: 32, TTL: 255, SrcPort: 5353, DstPort: 5353, UDPLength: 12}},
		{"udp4-padded",
			udpPadded,
			view{Family: 4, Proto: packet.UDP, Key: udpKey, Length: 36, L4Off: 20, PayloadOff: 28, TTL: 64,
				SrcPort: 1000, DstPort: 2000, UDPLength: 11}},
		{"udp6",
			pt.UDP6("[fd00::1]:1000", "[fd00::2]:2000", []byte("q")),
			view{Family: 6, Proto: packet.UDP, Key: udp6Key, Length: 49, L4Off: 40, PayloadOff: 48, TTL: 64,
				SrcPort: 1000, DstPort: 2000, UDPLength: 9}},
		{"udplite",
			pt.Raw("10.0.0.1", "10.0.0.2", packet.UDPLite, []byte{0x03, 0xe8, 0x07, 0xd0, 0, 0, 0, 0, 'x'}, pt.IPOpts{}),
			view{Family: 4, Proto: packet.UDPLite, Key: pt.Key(packet.UDPLite, "10.0.0.1:1000", "10.0.0.2:2000"),
				Length: 29, L4Off: 20, PayloadOff: 28, TTL: 64, SrcPort: 1000, DstPort: 2000}},
		{"sctp",
			pt.Raw("10.0.0.1", "10.0.0.2", packet.SCTP, []byte{0, 7, 0, 9, 1, 2, 3, 4, 0, 0, 0, 0, 0xaa}, pt.IPOpts{}),
			view{Family: 4, Proto: packet.SCTP, Key: pt.Key(packet.SCTP, "10.0.0.1:7", "10.0.0.2:9"),
				Length: 33, L4Off: 20, PayloadOff: 32, TTL: 64, SrcPort: 7, DstPort: 9}},
		{"gre",
			pt.Raw("10.0.0.1", "10.0.0.2", packet.GRE, []byte{0, 0, 8, 0, 0x45}, pt.IPOpts{TTL: 9}),
			view{Family: 4, Proto: packet.GRE, Key: pt.Key(packet.GRE, "10.0.0.1", "10.0.0.2"),
				Length: 25, L4Off: 20, PayloadOff: 20, TTL: 9}},
		{"ipv6-no-next-header",
			pt.Raw("fd00::1", "fd00::2", packet.IPv6NoNext, nil, pt.IPOpts{}),
			view{Family: 6, Proto: packet.IPv6NoNext, Key: pt.Key(packet.IPv6NoNext, "fd00::1", "fd00::2"),
				Length: 40, L4Off: 40, PayloadOff: 40, TTL: 64}},
		{"icmp4-echo-request",
			pt.ICMP4Echo("10.0.0.1", "10.0.0.2", packet.ICMPEchoRequest, 0x4242, 7),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 0x4242),
				Length: 36, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 8, ICMPID: 0x4242}},
		{"icmp4-timestamp",
			pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: packet.ICMPTimestamp, ID: 5, Seq: 1, Data: make([]byte, 12)}),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("10.0.0.1", "10.0.0.2", 13, 0, 5),
				Length: 40, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 13, ICMPID: 5}},
		{"icmp4-router-advert",
			// Not an error: the kernel's tuple takes bytes 4-5 as the id
			// for every non-error type.
			pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: packet.ICMPRouterAdvert, Rest: 0x0102_0708, Data: make([]byte, 8)}),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("10.0.0.1", "10.0.0.2", 9, 0, 0x0102),
				Length: 36, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 9, ICMPID: 0x0102}},
		{"icmp6-echo-reply",
			pt.ICMP6Echo("fd00::1", "fd00::2", packet.ICMPv6EchoReply, 9, 1),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::1", "fd00::2", 129, 0, 9),
				Length: 56, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 129, ICMPID: 9}},
		{"icmp4-error-quoting-tcp",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 4, quotedTCP[:28]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 4, 0),
				Length: 56, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 4,
				InnerOff: 28, Inner: tcpKey}},
		{"icmp4-error-quoting-udp-whole",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 11, 0, quotedUDP),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 11, 0, 0),
				Length: 61, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 11, InnerOff: 28, Inner: udpKey}},
		{"icmp4-error-quoting-echo",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 1, quotedEcho[:28]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 1, 0),
				Length: 56, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 1,
				InnerOff: 28, Inner: pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 0x4242)}},
		{"icmp4-error-quoting-icmp-error",
			// The quoted error's tuple has no id: Invert will refuse it.
			pt.ICMP4Error("192.0.2.1", "10.0.0.2", 3, 1, quotedErr[:28]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.2", 3, 1, 0),
				Length: 56, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 1,
				InnerOff: 28, Inner: pt.ICMPKey("10.0.0.2", "10.0.0.1", 3, 3, 0)}},
		{"icmp4-error-quote-ports-only",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 3, quotedUDP[:24]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 3, 0),
				Length: 52, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 3, InnerOff: 28, Inner: udpKey}},
		{"icmp4-error-quote-truncated-l4",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 3, quotedUDP[:22]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 3, 0),
				Length: 50, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 3, InnerOff: 28,
				Inner: noPorts(udpKey), InnerErr: packet.ErrL4Truncated}},
		{"icmp4-error-quote-truncated-ip",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 3, quotedUDP[:12]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 3, 0),
				Length: 40, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 3, InnerOff: 28,
				InnerErr: packet.ErrIPTruncated}},
		{"icmp4-error-quote-bad-ihl",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 3, pt.SetIHL(quotedUDP, 3)),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 3, 0),
				Length: 61, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 3, InnerOff: 28,
				InnerErr: packet.ErrIPHeaderLen}},
		{"icmp4-error-quote-v6",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 3, quoted6[:48]),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 3, 3, 0),
				Length: 76, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 3, ICMPCode: 3, InnerOff: 28,
				InnerErr: packet.ErrIPVersion}},
		{"icmp4-error-quote-non-first-fragment",
			pt.ICMP4Error("192.0.2.1", "10.0.0.1", 11, 1, pt.FragmentAt4(bigUDP, 48, 8, true)),
			view{Family: 4, Proto: packet.ICMP, Key: pt.ICMPKey("192.0.2.1", "10.0.0.1", 11, 1, 0),
				Length: 56, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 11, ICMPCode: 1, InnerOff: 28,
				Inner: noPorts(udpKey), InnerErr: packet.ErrIPFragment}},
		{"icmp6-error-quoting-tcp-ext",
			pt.ICMP6Error("fd00::9", "fd00::1", 1, 4, quoted6[:64]),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 1, 4, 0),
				Length: 112, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 1, ICMPCode: 4,
				InnerOff: 48, Inner: tcp6Key}},
		{"icmp6-packet-too-big-quoting-echo",
			pt.ICMP("fd00::9", "fd00::1", pt.ICMPOpts{Type: packet.ICMPv6PacketTooBig, Rest: 1280, Data: quotedEcho6}),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 2, 0, 0),
				Length: 40 + 8 + 56, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 2,
				InnerOff: 48, Inner: pt.ICMPKey("fd00::1", "fd00::2", 128, 0, 0x77)}},
		{"icmp6-unassigned-error-type",
			// Types below 128 are errors (RFC 4443 2.1), as in the kernel.
			pt.ICMP6Error("fd00::9", "fd00::1", 100, 0, bigUDP6[:48]),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 100, 0, 0),
				Length: 96, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 100, InnerOff: 48, Inner: udp6Key}},
		{"icmp6-error-quote-non-first-fragment",
			pt.ICMP6Error("fd00::9", "fd00::1", 3, 1, pt.FragmentAt6(bigUDP6, 5, 48, 8, true)),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 3, 1, 0),
				Length: 104, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 3, ICMPCode: 1, InnerOff: 48,
				Inner: pt.Key(0, "fd00::1", "fd00::2"), InnerErr: packet.ErrIPFragment}},
		{"icmp6-error-quote-first-fragment",
			pt.ICMP6Error("fd00::9", "fd00::1", 3, 1, pt.FragmentAt6(bigUDP6, 5, 0, 8, true)),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 3, 1, 0),
				Length: 104, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 3, ICMPCode: 1, InnerOff: 48, Inner: udp6Key}},
		{"icmp6-error-quote-no-next-header",
			pt.ICMP6Error("fd00::9", "fd00::1", 1, 0, pt.Raw("fd00::1", "fd00::2", packet.IPv6NoNext, nil, pt.IPOpts{})),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 1, 0, 0),
				Length: 88, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 1, InnerOff: 48,
				Inner: pt.Key(0, "fd00::1", "fd00::2"), InnerErr: packet.ErrIPv6ExtChain}},
		{"icmp6-error-quote-truncated-ext",
			pt.ICMP6Error("fd00::9", "fd00::1", 1, 0, quoted6[:52]),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 1, 0, 0),
				Length: 100, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 1, InnerOff: 48,
				Inner: pt.Key(0, "fd00::1", "fd00::2"), InnerErr: packet.ErrIPv6ExtChain}},
		{"icmp6-error-quote-truncated-ip",
			pt.ICMP6Error("fd00::9", "fd00::1", 1, 0, quoted6[:30]),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fd00::9", "fd00::1", 1, 0, 0),
				Length: 78, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 1, InnerOff: 48,
				InnerErr: packet.ErrIPv6Truncated}},
		{"icmp6-redirect",
			pt.ICMP6Redirect("fe80::1", "fd00::1", "fe80::2", "fd00::2", quoted6[:64]),
			// 40 + ICMPv6 8 + target 16 + destination 16 + option header 8
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fe80::1", "fd00::1", 137, 0, 0),
				Length: 152, L4Off: 40, PayloadOff: 48, TTL: 255, ICMPType: 137, InnerOff: 88, Inner: tcp6Key}},
		{"icmp6-redirect-without-options",
			pt.ICMP6Redirect("fe80::1", "fd00::1", "fe80::2", "fd00::2", nil),
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fe80::1", "fd00::1", 137, 0, 0),
				Length: 80, L4Off: 40, PayloadOff: 48, TTL: 255, ICMPType: 137}},
		{"icmp6-redirect-other-first-option",
			redirectOtherOpt,
			view{Family: 6, Proto: packet.ICMPv6, Key: pt.ICMPKey("fe80::1", "fd00::1", 137, 0, 0),
				Length: 88, L4Off: 40, PayloadOff: 48, TTL: 255, ICMPType: 137}},
		{"icmpv6-over-ipv4-is-not-an-error",
			pt.FixChecksums(pt.Raw("10.0.0.1", "10.0.0.2", packet.ICMPv6, []byte{1, 0, 0, 0, 0x12, 0x34, 0, 0}, pt.IPOpts{})),
			view{Family: 4, Proto: packet.ICMPv6, Key: icmpKeyProto(packet.ICMPv6, "10.0.0.1", "10.0.0.2", 1, 0, 0x1234),
				Length: 28, L4Off: 20, PayloadOff: 28, TTL: 64, ICMPType: 1, ICMPID: 0x1234}},
		{"icmp-over-ipv6-is-not-an-error",
			pt.FixChecksums(pt.Raw("fd00::1", "fd00::2", packet.ICMP, []byte{3, 1, 0, 0, 0xab, 0xcd, 0, 0}, pt.IPOpts{})),
			view{Family: 6, Proto: packet.ICMP, Key: icmpKeyProto(packet.ICMP, "fd00::1", "fd00::2", 3, 1, 0xabcd),
				Length: 48, L4Off: 40, PayloadOff: 48, TTL: 64, ICMPType: 3, ICMPCode: 1, ICMPID: 0xabcd}},
		{"ipv4-first-fragment",
			pt.FragmentAt4(bigUDP, 0, 48, true),
			// UDP length (108) is not checked against a fragment
			view{Family: 4, Proto: packet.UDP, Key: udpKey, Length: 68, L4Off: 20, PayloadOff: 28, TTL: 64,
				IPID: 0x77, Fragment: true, MoreFrags: true, SrcPort: 1000, DstPort: 2000, UDPLength: 108}},
		{"ipv4-tiny-first-fragment-tcp",
			// Only the ports and sequence number: the rest of the TCP
			// header is in the next fragment, which is not an error.
			pt.FragmentAt4(synOpts, 0, 8, true),
			view{Family: 4, Proto: packet.TCP, Key: tcpKey, Length: 28, L4Off: 20, PayloadOff: 28, TTL: 64,
				IPID: 0x99, Fragment: true, MoreFrags: true, SrcPort: 1234, DstPort: 80}},
		{"ipv4-first-fragment-tcp-options-cut",
			// 24 bytes of a 32-byte TCP header: fixed fields, no options.
			pt.FragmentAt4(synOpts, 0, 24, true),
			view{Family: 4, Proto: packet.TCP, Key: tcpKey, Length: 44, L4Off: 20, PayloadOff: 44, TTL: 64,
				IPID: 0x99, Fragment: true, MoreFrags: true, SrcPort: 1234, DstPort: 80, Seq: 5,
				TCPFlags: packet.SYN, Window: 1000}},
		{"ipv4-first-fragment-udp-ports-only",
			pt.FragmentAt4(bigUDP, 0, 4, true),
			view{Family: 4, Proto: packet.UDP, Key: udpKey, Length: 24, L4Off: 20, PayloadOff: 24, TTL: 64,
				IPID: 0x77, Fragment: true, MoreFrags: true, SrcPort: 1000, DstPort: 2000}},
		{"ipv4-middle-fragment",
			pt.FragmentAt4(bigUDP, 48, 48, true),
			view{Family: 4, Proto: packet.UDP, Key: noPorts(udpKey), Length: 68, L4Off: 20, PayloadOff: 68, TTL: 64,
				IPID: 0x77, Fragment: true, MoreFrags: true, FragOff: 48}},
		{"ipv4-last-fragment",
			pt.FragmentAt4(bigUDP, 96, 12, false),
			view{Family: 4, Proto: packet.UDP, Key: noPorts(udpKey), Length: 32, L4Off: 20, PayloadOff: 32, TTL: 64,
				IPID: 0x77, Fragment: true, FragOff: 96}},
		{"ipv6-first-fragment",
			pt.FragmentAt6(bigUDP6, 0xabcdef01, 0, 48, true),
			view{Family: 6, Proto: packet.UDP, Key: udp6Key, Length: 96, L4Off: 48, PayloadOff: 56, TTL: 64,
				IPID: 0xabcdef01, Fragment: true, MoreFrags: true, FragHdrOff: 40, FragNextOff: 6,
				SrcPort: 1000, DstPort: 2000, UDPLength: 108}},
		{"ipv6-middle-fragment",
			pt.FragmentAt6(bigUDP6, 0xabcdef01, 48, 48, true),
			view{Family: 6, Proto: packet.UDP, Key: noPorts(udp6Key), Length: 96, L4Off: 48, PayloadOff: 96, TTL: 64,
				IPID: 0xabcdef01, Fragment: true, MoreFrags: true, FragOff: 48, FragHdrOff: 40, FragNextOff: 6}},
		{"ipv6-last-fragment-after-hop-by-hop",
			pt.FragmentAt6(pt.UDP("[fd00::1]:1000", "[fd00::2]:2000", pt.UDPOpts{Payload: hundred(), Ext: []pt.Ext{pt.HopByHop}}), 3, 96, 12, false),
			view{Family: 6, Proto: packet.UDP, Key: noPorts(udp6Key), Length: 68, L4Off: 56, PayloadOff: 68, TTL: 64,
				IPID: 3, Fragment: true, FragOff: 96, FragHdrOff: 48, FragNextOff: 40}},
		{"ipv6-atomic-fragment",
			// Offset 0 and M clear: a fragment header but not a fragment.
			pt.UDP("[fd00::1]:1000", "[fd00::2]:2000", pt.UDPOpts{Payload: []byte("x"), Ext: []pt.Ext{pt.FragExt(0, false, 99)}}),
			view{Family: 6, Proto: packet.UDP, Key: udp6Key, Length: 57, L4Off: 48, PayloadOff: 56, TTL: 64,
				IPID: 99, FragHdrOff: 40, FragNextOff: 6, SrcPort: 1000, DstPort: 2000, UDPLength: 9}},
		{"trailing-bytes-ignored",
			append(pt.UDP4("10.0.0.1:1000", "10.0.0.2:2000", []byte("abc")), 9, 9, 9, 9),
			view{Family: 4, Proto: packet.UDP, Key: udpKey, Length: 31, L4Off: 20, PayloadOff: 28, TTL: 64,
				SrcPort: 1000, DstPort: 2000, UDPLength: 11}},
	}
}

func icmpKeyProto(proto packet.Proto, src, dst string, typ, code uint8, id uint16) packet.FlowKey {
	k := pt.Key(proto, src, dst)
	k.SrcPort, k.DstPort = id, uint16(typ)<<8|uint16(code)
	return k
}

func TestDecodeFixtures(t *testing.T) {
	var reused packet.Parsed
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(f.b)
			if d := diff(viewOf(&p), f.want); d != "" {
				t.Errorf("decode differs:%s", d)
			}
			if len(p.Buf()) != f.want.Length {
				t.Errorf("Buf() has %d bytes, want %d", len(p.Buf()), f.want.Length)
			}
			if !p.L4ChecksumValid() {
				t.Errorf("transport checksum of a built packet reported invalid")
			}
			// A Parsed reused after another packet decodes the same.
			reused.Decode(f.b)
			if d := diff(viewOf(&reused), f.want); d != "" {
				t.Errorf("reused Parsed decodes differently:%s", d)
			}
		})
	}
}

func TestPayload(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want []byte
	}{
		{"tcp", pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Flags: packet.ACK, MSS: 1, Payload: []byte("hello")}), []byte("hello")},
		{"tcp-empty", pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Flags: packet.ACK}), nil},
		{"udp-padded", pt.SetTotalLen(append(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", []byte("abc")), 0, 0, 0), 34), []byte("abc")},
		{"udp6", pt.UDP6("[fd00::1]:1", "[fd00::2]:2", []byte("xyz")), []byte("xyz")},
		{"icmp-echo", pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 1), []byte("pingdata")},
		{"gre", pt.Raw("10.0.0.1", "10.0.0.2", packet.GRE, []byte{1, 2, 3}, pt.IPOpts{}), []byte{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.b)
			if p.Err != packet.ErrNone {
				t.Fatal(p.Err)
			}
			if got := p.Payload(); !bytes.Equal(got, tt.want) {
				t.Errorf("Payload() = %q, want %q", got, tt.want)
			}
			if p.PayloadLen() != len(tt.want) {
				t.Errorf("PayloadLen() = %d, want %d", p.PayloadLen(), len(tt.want))
			}
		})
	}
}

// errFixture is a packet that fails to decode, with the fields that must
// still be valid.
type errFixture struct {
	name   string
	b      []byte
	err    packet.DecodeError
	family uint8
	proto  packet.Proto
	key    packet.FlowKey // compared when non-zero
}

func errFixtures() []errFixture {
	tcp := pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.ACK, Payload: []byte("hello")})
	tcp6 := pt.TCP6("[fd00::1]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.ACK})
	udp := pt.UDP4("10.0.0.1:1000", "10.0.0.2:2000", []byte("hello"))
	ihl6short := pt.SetIHL(tcp, 6)[:22] // claims 24 header bytes, has 22
	ihl6short = pt.SetTotalLen(ihl6short, 22)
	fragTooFar := func() []byte {
		b := pt.Clone(tcp)
		binary.BigEndian.PutUint16(b[6:], 0x1fff) // offset 65528, 25 bytes of data
		return pt.FixChecksums(b)
	}()
	frag6TooFar := pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Payload: make([]byte, 16), Ext: []pt.Ext{pt.FragExt(65528, false, 1)}})
	return []errFixture{
		{"empty", nil, packet.ErrIPTruncated, 0, 0, packet.FlowKey{}},
		{"version-0", []byte{0x05, 0, 0, 20}, packet.ErrIPVersion, 0, 0, packet.FlowKey{}},
		{"version-5", pt.SetVersion(tcp, 5), packet.ErrIPVersion, 0, 0, packet.FlowKey{}},
		{"ipv4-19-bytes", tcp[:19], packet.ErrIPTruncated, 4, 0, packet.FlowKey{}},
		{"ipv4-header-past-buffer", ihl6short, packet.ErrIPTruncated, 4, 0, packet.FlowKey{}},
		{"ipv4-ihl-4", pt.SetIHL(tcp, 4), packet.ErrIPHeaderLen, 4, 0, packet.FlowKey{}},
		{"ipv4-total-past-buffer", pt.Truncate(tcp, 40), packet.ErrIPTotalLen, 4, 0, packet.FlowKey{}},
		{"ipv4-total-below-header", pt.SetTotalLen(tcp, 19), packet.ErrIPTotalLen, 4, 0, packet.FlowKey{}},
		{"ipv4-bad-checksum", pt.BadIPChecksum(tcp), packet.ErrIPChecksum, 4, 0, packet.FlowKey{}},
		{"ipv4-fragment-past-65535", fragTooFar, packet.ErrIPFragment, 4, 0, packet.FlowKey{}},
		{"ipv6-39-bytes", tcp6[:39], packet.ErrIPv6Truncated, 6, 0, packet.FlowKey{}},
		{"ipv6-payload-past-buffer", pt.Truncate(tcp6, 59), packet.ErrIPv6PayloadLen, 6, 0, packet.FlowKey{}},
		{"ipv6-hop-by-hop-not-first", pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Ext: []pt.Ext{pt.DestOpts, pt.HopByHop}}),
			packet.ErrIPv6ExtChain, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"ipv6-ext-header-truncated", pt.TruncateL4(pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Ext: []pt.Ext{pt.DestOpts}}), 44),
			packet.ErrIPv6ExtChain, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"ipv6-ext-header-length-past-end", pt.TruncateL4(pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Ext: []pt.Ext{{Type: packet.IPv6Opts, Data: make([]byte, 14)}}}), 52),
			packet.ErrIPv6ExtChain, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"ipv6-ah-truncated", pt.TruncateL4(pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Ext: []pt.Ext{pt.AuthHdr}}), 52),
			packet.ErrIPv6ExtChain, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"ipv6-two-fragment-headers", pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Ext: []pt.Ext{pt.FragExt(0, true, 1), pt.FragExt(0, true, 1)}}),
			packet.ErrIPv6ExtChain, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"ipv6-fragment-past-65535", frag6TooFar, packet.ErrIPFragment, 6, 0, pt.Key(0, "fd00::1", "fd00::2")},
		{"tcp-truncated-with-ports", pt.TruncateL4(tcp, 30), packet.ErrTCPTruncated, 4, packet.TCP,
			pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")},
		{"tcp-first-fragment-without-ports", pt.FragmentAt4(quotedTCP, 0, 2, true), packet.ErrTCPTruncated, 4, packet.TCP, pt.Key(packet.TCP, "10.0.0.1", "10.0.0.2")},
		{"tcp-truncated-no-ports", pt.TruncateL4(tcp, 22), packet.ErrTCPTruncated, 4, packet.TCP, pt.Key(packet.TCP, "10.0.0.1", "10.0.0.2")},
		{"tcp-data-offset-past-end", pt.SetDataOffset(tcp, 15), packet.ErrTCPTruncated, 4, packet.TCP, tcpKey},
		{"tcp-data-offset-4", pt.SetDataOffset(tcp, 4), packet.ErrTCPDataOff, 4, packet.TCP, tcpKey},
		{"tcp6-data-offset-0", pt.SetDataOffset(tcp6, 0), packet.ErrTCPDataOff, 6, packet.TCP, tcp6Key},
		{"udp-truncated", pt.TruncateL4(udp, 27), packet.ErrUDPTruncated, 4, packet.UDP, pt.Key(packet.UDP, "10.0.0.1", "10.0.0.2")},
		{"udp-length-past-end", pt.SetUDPLength(udp, 14), packet.ErrUDPLength, 4, packet.UDP, udpKey},
		{"udp-length-below-8", pt.SetUDPLength(udp, 7), packet.ErrUDPLength, 4, packet.UDP, udpKey},
		{"icmp-truncated", pt.TruncateL4(pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 1), 27), packet.ErrICMPTruncated, 4, packet.ICMP, pt.Key(packet.ICMP, "10.0.0.1", "10.0.0.2")},
		{"icmpv6-truncated", pt.TruncateL4(pt.ICMP6Echo("fd00::1", "fd00::2", 128, 1, 1), 47), packet.ErrICMPv6Truncated, 6, packet.ICMPv6, pt.Key(packet.ICMPv6, "fd00::1", "fd00::2")},
		{"sctp-truncated", pt.Raw("10.0.0.1", "10.0.0.2", packet.SCTP, make([]byte, 11), pt.IPOpts{}), packet.ErrL4Truncated, 4, packet.SCTP, pt.Key(packet.SCTP, "10.0.0.1", "10.0.0.2")},
	}
}

func TestDecodeErrors(t *testing.T) {
	seen := map[packet.DecodeError]bool{}
	for _, f := range errFixtures() {
		t.Run(f.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(f.b)
			seen[f.err] = true
			if p.Err != f.err {
				t.Fatalf("err %q, want %q", p.Err, f.err)
			}
			if p.Family != f.family || p.Proto != f.proto {
				t.Errorf("family %d proto %v, want %d %v", p.Family, p.Proto, f.family, f.proto)
			}
			if f.key != (packet.FlowKey{}) && p.Key != f.key {
				t.Errorf("key %v, want %v", p.Key, f.key)
			}
			if f.err.IsIPLevel() != (f.proto == 0) {
				t.Errorf("IsIPLevel() = %v for %q", f.err.IsIPLevel(), f.err)
			}
		})
	}
	for e := packet.DecodeError(1); e < packet.NumDecodeErrors; e++ {
		if !seen[e] {
			t.Errorf("no fixture produces %q", e)
		}
	}
}

func TestDecodeErrorTexts(t *testing.T) {
	texts := map[string]bool{}
	for e := packet.DecodeError(1); e < packet.NumDecodeErrors; e++ {
		s := e.String()
		if s == "" || texts[s] {
			t.Errorf("error %d has an empty or duplicate text %q", e, s)
		}
		texts[s] = true
		if e.Error() != s {
			t.Errorf("Error() %q != String() %q", e.Error(), s)
		}
	}
	if packet.ErrNone.String() != "" {
		t.Errorf("ErrNone text %q", packet.ErrNone.String())
	}
	if s := packet.NumDecodeErrors.String(); s != "decode error" {
		t.Errorf("out-of-range text %q", s)
	}
}

func TestTCPOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []byte // raw option bytes (padded to 4 by the builder)
		want packet.TCPOptions
	}{
		{"none", nil, packet.TCPOptions{}},
		{"mss", []byte{2, 4, 0x05, 0xb4}, packet.TCPOptions{MSS: 1460, HasMSS: true}},
		{"wscale-14", []byte{3, 3, 14}, packet.TCPOptions{WScale: 14, HasWScale: true}},
		{"wscale-above-14-kept-raw", []byte{3, 3, 15}, packet.TCPOptions{WScale: 15, HasWScale: true}},
		{"sack-perm", []byte{4, 2}, packet.TCPOptions{SACKPerm: true}},
		{"timestamps", []byte{1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6}, packet.TCPOptions{HasTS: true, TSVal: 5, TSEcr: 6}},
		{"sack-1", []byte{5, 10, 0, 0, 0, 1, 0, 0, 0, 2}, packet.TCPOptions{NumSACK: 1, SACK: [4][2]uint32{{1, 2}}}},
		{"sack-4", append([]byte{5, 34}, u32s(1, 2, 3, 4, 5, 6, 7, 8)...),
			packet.TCPOptions{NumSACK: 4, SACK: [4][2]uint32{{1, 2}, {3, 4}, {5, 6}, {7, 8}}}},
		{"sack-bad-length", []byte{5, 9, 0, 0, 0, 1, 0, 0, 0}, packet.TCPOptions{}},
		{"all-of-them", append([]byte{2, 4, 0x02, 0x18, 3, 3, 2, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 5, 10}, u32s(9, 10)...),
			packet.TCPOptions{MSS: 536, HasMSS: true, WScale: 2, HasWScale: true, SACKPerm: true, HasTS: true, TSVal: 1, TSEcr: 2,
				NumSACK: 1, SACK: [4][2]uint32{{9, 10}}}},
		{"eol-stops", []byte{0, 2, 4, 0x05, 0xb4}, packet.TCPOptions{}},
		{"nops-then-mss", []byte{1, 1, 1, 2, 4, 0, 100}, packet.TCPOptions{MSS: 100, HasMSS: true}},
		{"unknown-kind-skipped", []byte{30, 4, 1, 2, 2, 4, 0, 100}, packet.TCPOptions{MSS: 100, HasMSS: true}},
		{"mss-wrong-length-ignored", []byte{2, 3, 1, 4, 2}, packet.TCPOptions{SACKPerm: true}},
		{"wscale-wrong-length-ignored", []byte{3, 4, 7, 0, 4, 2}, packet.TCPOptions{SACKPerm: true}},
		{"ts-wrong-length-ignored", []byte{8, 6, 0, 0, 0, 1, 4, 2}, packet.TCPOptions{SACKPerm: true}},
		{"length-0-stops", []byte{2, 0, 4, 2}, packet.TCPOptions{}},
		{"length-1-stops", []byte{30, 1, 4, 2}, packet.TCPOptions{}},
		{"length-past-end-stops", []byte{4, 2, 2, 40, 0, 0}, packet.TCPOptions{SACKPerm: true}},
		{"kind-without-length", []byte{4, 2, 1, 2}, packet.TCPOptions{SACKPerm: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Flags: packet.SYN, WScale: pt.NoWScale, Options: tt.opts})
			if tt.name == "kind-without-length" {
				// The builder pads with EOL; make the last byte a kind
				// that would need a length byte.
				b = pt.FixChecksums(append(b[:len(b)-4], 4, 2, 1, 2))
			}
			var p packet.Parsed
			p.Decode(b)
			if p.Err != packet.ErrNone {
				t.Fatal(p.Err)
			}
			if p.TCPOpts != tt.want {
				t.Errorf("options\n got %+v\nwant %+v", p.TCPOpts, tt.want)
			}
		})
	}
}

func u32s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	return b
}

func TestIsICMPError(t *testing.T) {
	for _, f := range fixtures() {
		var p packet.Parsed
		p.Decode(f.b)
		if p.IsICMPError() != (f.want.InnerOff != 0) {
			t.Errorf("%s: IsICMPError() = %v", f.name, p.IsICMPError())
		}
	}
	for typ := 0; typ < 256; typ++ {
		want := typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
		if packet.IsICMPError(uint8(typ)) != want {
			t.Errorf("IsICMPError(%d) = %v", typ, !want)
		}
		if packet.IsICMPv6Error(uint8(typ)) != (typ < 128) {
			t.Errorf("IsICMPv6Error(%d) = %v", typ, typ >= 128)
		}
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	var pkts [][]byte
	for _, f := range fixtures() {
		pkts = append(pkts, f.b)
	}
	for _, f := range errFixtures() {
		pkts = append(pkts, f.b)
	}
	var p packet.Parsed
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range pkts {
			p.Decode(b)
		}
	})
	if allocs != 0 {
		t.Errorf("Decode allocates %v times per run of %d packets", allocs, len(pkts))
	}
	allocs = testing.AllocsPerRun(100, func() {
		for _, b := range pkts {
			p.Decode(b)
			sinkBool = p.L4ChecksumValid()
			sinkInt = len(p.Payload())
		}
	})
	if allocs != 0 {
		t.Errorf("L4ChecksumValid/Payload allocate %v times", allocs)
	}
}

var (
	sinkBool bool
	sinkInt  int
	sinkU64  uint64
	sinkKey  packet.FlowKey
)

// FuzzDecode checks that Decode never panics and that what it reports is
// consistent with the buffer it was given.
func FuzzDecode(f *testing.F) {
	for _, fx := range fixtures() {
		f.Add(fx.b)
	}
	for _, fx := range errFixtures() {
		f.Add(fx.b)
	}
	var reused packet.Parsed
	reused.Decode(quotedTCP)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet.Parsed
		p.Decode(b)
		checkInvariants(t, &p, b)
		// Decode must overwrite every field of a used Parsed.
		reused.Decode(b)
		if d := diff(viewOf(&reused), viewOf(&p)); d != "" {
			t.Fatalf("decoding into a used Parsed differs:%s", d)
		}
		reused.Decode(quotedTCP)
		checkReplies(t, &p)
		packet.DecTTL(append([]byte(nil), b...))
	})
}

// checkReplies runs the reply builders on p: whatever they build must
// decode cleanly, with valid checksums, and be what was asked for.
func checkReplies(t *testing.T, p *packet.Parsed) {
	t.Helper()
	var r packet.Parsed
	if out, ok := packet.AppendICMPError(nil, p, 3, 4, 1400, [16]byte{}); ok {
		r.Decode(out)
		if r.Err != packet.ErrNone || !r.L4ChecksumValid() || !r.IsICMPError() || r.Length > 1280 {
			t.Fatalf("ICMP error: err %v checksum %v quote at %d length %d", r.Err, r.L4ChecksumValid(), r.InnerOff, r.Length)
		}
	}
	if out, ok := packet.AppendTCPReset(nil, p); ok {
		r.Decode(out)
		if r.Err != packet.ErrNone || !r.L4ChecksumValid() || r.TCPFlags&packet.RST == 0 || r.Key != p.Key.Reverse() {
			t.Fatalf("reset: err %v checksum %v flags %v key %v", r.Err, r.L4ChecksumValid(), r.TCPFlags, r.Key)
		}
	}
	if out, ok := packet.AppendEchoReply(nil, p); ok {
		r.Decode(out)
		if inv, _ := p.Key.Invert(); r.Err != packet.ErrNone || !r.L4ChecksumValid() || r.Key != inv {
			t.Fatalf("echo reply: err %v checksum %v key %v", r.Err, r.L4ChecksumValid(), r.Key)
		}
	}
}

func checkInvariants(t *testing.T, p *packet.Parsed, b []byte) {
	t.Helper()
	if p.Length > len(b) || len(p.Buf()) > len(b) {
		t.Fatalf("Length %d / Buf %d beyond the %d-byte buffer", p.Length, len(p.Buf()), len(b))
	}
	if p.Family != 0 && p.Family != 4 && p.Family != 6 {
		t.Fatalf("family %d", p.Family)
	}
	if p.Key.Family != p.Family {
		t.Fatalf("key family %d, packet family %d", p.Key.Family, p.Family)
	}
	sinkBool = p.L4ChecksumValid()
	sinkInt = len(p.Payload()) + p.PayloadLen()
	if p.Err != packet.ErrNone {
		return
	}
	if p.Family == 0 || len(p.Buf()) != p.Length {
		t.Fatalf("decoded packet: family %d, Buf %d bytes, Length %d", p.Family, len(p.Buf()), p.Length)
	}
	if !(0 < p.L4Off && p.L4Off <= p.PayloadOff && p.PayloadOff <= p.Length) {
		t.Fatalf("offsets L4Off %d PayloadOff %d Length %d", p.L4Off, p.PayloadOff, p.Length)
	}
	if p.Key.Proto != p.Proto {
		t.Fatalf("key proto %v, packet proto %v", p.Key.Proto, p.Proto)
	}
	if p.PayloadLen() != len(p.Payload()) || p.PayloadLen() > p.Length-p.PayloadOff {
		t.Fatalf("PayloadLen %d, len(Payload) %d", p.PayloadLen(), len(p.Payload()))
	}
	if p.FragHdrOff != 0 && (p.Family != 6 || p.FragHdrOff < 40 || p.FragHdrOff+8 > p.Length || p.FragNextOff >= p.FragHdrOff) {
		t.Fatalf("fragment header at %d (next-header byte %d)", p.FragHdrOff, p.FragNextOff)
	}
	if p.Fragment != (p.MoreFrags || p.FragOff != 0) {
		t.Fatalf("Fragment %v with MF %v offset %d", p.Fragment, p.MoreFrags, p.FragOff)
	}
	if p.InnerOff != 0 {
		if !p.Proto.IsICMP() || p.InnerOff < p.L4Off+8 || p.InnerOff > p.Length {
			t.Fatalf("InnerOff %d (L4Off %d, Length %d, proto %v)", p.InnerOff, p.L4Off, p.Length, p.Proto)
		}
		if p.InnerErr == packet.ErrNone && p.Inner.Family != p.Family {
			t.Fatalf("quoted packet family %d inside family %d", p.Inner.Family, p.Family)
		}
	}
	if p.Proto == packet.TCP && !p.Fragment {
		doff := int(p.Buf()[p.L4Off+12]>>4) * 4
		if p.PayloadOff != p.L4Off+doff || p.TCPOpts.NumSACK > 4 {
			t.Fatalf("TCP payload at %d, header at %d with data offset %d", p.PayloadOff, p.L4Off, doff)
		}
	}
	if p.Proto.HasPorts() && p.FragOff == 0 && (p.Key.SrcPort != p.SrcPort || p.Key.DstPort != p.DstPort) {
		t.Fatalf("key ports %d/%d, packet ports %d/%d", p.Key.SrcPort, p.Key.DstPort, p.SrcPort, p.DstPort)
	}
}

func BenchmarkDecode(b *testing.B) {
	benches := []struct {
		name string
		pkt  []byte
	}{
		{"tcp4", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.ACK, TS: true, Payload: make([]byte, 1400)})},
		{"tcp4-syn-options", pt.TCP4("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, MSS: 1460, WScale: 7, SACKPerm: true, TS: true})},
		{"udp4", pt.UDP4("10.0.0.1:1234", "10.0.0.2:53", make([]byte, 64))},
		{"tcp6-ext-header", pt.TCP6("[fd00::1]:1234", "[fd00::2]:80", pt.TCPOpts{Flags: packet.ACK, Ext: []pt.Ext{pt.HopByHop, pt.DestOpts}, Payload: make([]byte, 1200)})},
		{"icmp4-error", pt.ICMP4Error("192.0.2.1", "10.0.0.1", 3, 4, quotedTCP)},
		{"icmp6-error", pt.ICMP6Error("fd00::9", "fd00::1", 2, 0, quoted6)},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			var p packet.Parsed
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.pkt)))
			for b.Loop() {
				p.Decode(bb.pkt)
			}
			if p.Err != packet.ErrNone {
				b.Fatal(p.Err)
			}
		})
	}
}

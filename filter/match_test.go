package filter

import (
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

var testIfaces = []string{"lan0", "wan0", "dmz0"}

// mustCompile compiles spec (with the test interfaces and the ftp helper
// unless set) and fails the test on errors.
func mustCompile(tb testing.TB, spec Spec) *Ruleset {
	tb.Helper()
	if spec.Interfaces == nil {
		spec.Interfaces = testIfaces
	}
	if spec.Helpers == nil {
		spec.Helpers = []string{"ftp"}
	}
	rs, _, err := Compile(spec)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return rs
}

// fwd is a forward chain with policy drop and the given rules.
func fwd(rules ...RuleSpec) Spec {
	return Spec{Chains: []ChainSpec{{Chain: Forward, Policy: "drop", Rules: rules}}}
}

// pk wraps packet bytes with conntrack information; interfaces lan0 ->
// wan0.
func pk(b []byte, ct conntrack.CtInfo) *Packet {
	return &Packet{P: filtertest.Decode(b), Ct: ct, IIf: 0, OIf: 1}
}

func with(p *Packet, f func(*Packet)) *Packet { f(p); return p }

func l(s ...string) []string { return s }

var (
	tcpSyn4   = filtertest.TCP("10.1.0.5:40000", "192.0.2.10:22", packet.SYN)
	tcpSynAck = filtertest.TCP("192.0.2.10:22", "10.1.0.5:40000", packet.SYN|packet.ACK)
	tcpAck4   = filtertest.TCP("10.1.0.5:40000", "192.0.2.10:22", packet.ACK)
	tcpRst4   = filtertest.TCP("10.1.0.5:40000", "192.0.2.10:22", packet.RST)
	udp4      = filtertest.UDP("10.1.0.5:5353", "192.0.2.53:53", 20)
	tcpSyn6   = filtertest.TCP("[fd00:1::5]:40000", "[2001:db8::10]:443", packet.SYN)
	udp6      = filtertest.UDP("[fd00:1::5]:5000", "[2001:db8::53]:53", 10)
	echo4     = filtertest.ICMP("10.1.0.5", "192.0.2.1", packet.ICMPEchoRequest, 0, 7, 1)
	echo6     = filtertest.ICMP("fd00:1::5", "2001:db8::1", packet.ICMPv6EchoRequest, 0, 7, 1)
	unreach4  = filtertest.ICMPError("192.0.2.10", "10.1.0.5", packet.ICMPDestUnreachable, packet.ICMPPortUnreachable, 0, udp4)
	sctp4     = filtertest.Proto("10.1.0.5", "192.0.2.10", packet.SCTP, 16)
	gre4      = filtertest.Proto("10.1.0.5", "192.0.2.10", packet.GRE, 16)
	frag4     = filtertest.Build(filtertest.IP{Src: mustAddr("10.1.0.5"), Dst: mustAddr("192.0.2.10"), Proto: packet.TCP, FragOff: 64}, make([]byte, 40))
)

type matchCase struct {
	name string
	rule RuleSpec
	pkt  *Packet
	want bool
}

// runMatch puts the rule alone in a drop-policy forward chain with action
// accept: the packet matched when the verdict is accept by rule 0.
func runMatch(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			r.Action = "accept"
			rs := mustCompile(t, Spec{
				Sets: []SetSpec{
					{Name: "lan", Elems: l("10.1.0.0/16", "fd00:1::/48")},
					{Name: "web", Elems: l("80", "443", "8000-8100")},
					{Name: "empty"},
				},
				Chains: []ChainSpec{{Chain: Forward, Policy: "drop", Rules: []RuleSpec{r}}},
			})
			v := rs.Eval(Forward, tc.pkt, 0)
			got := v.Action == Accept && v.Rule == 0
			if got != tc.want {
				t.Fatalf("matched = %v, want %v (verdict %+v)", got, tc.want, v)
			}
			if !got && (v.Rule != -1 || v.Action != Drop) {
				t.Fatalf("no match must fall through to the drop policy, got %+v", v)
			}
		})
	}
}

func TestMatchProtoFamily(t *testing.T) {
	runMatch(t, []matchCase{
		{"proto tcp on tcp", RuleSpec{Proto: l("tcp")}, pk(tcpSyn4, conntrack.New), true},
		{"proto tcp on udp", RuleSpec{Proto: l("tcp")}, pk(udp4, conntrack.New), false},
		{"proto !tcp on udp", RuleSpec{Proto: l("!tcp")}, pk(udp4, conntrack.New), true},
		{"proto !tcp on tcp", RuleSpec{Proto: l("!tcp")}, pk(tcpSyn4, conntrack.New), false},
		{"proto number 17", RuleSpec{Proto: l("17")}, pk(udp4, conntrack.New), true},
		{"proto list", RuleSpec{Proto: l("tcp", "udp")}, pk(udp6, conntrack.New), true},
		{"proto sctp", RuleSpec{Proto: l("sctp")}, pk(sctp4, conntrack.New), true},
		{"proto gre (other class)", RuleSpec{Proto: l("gre")}, pk(gre4, conntrack.New), true},
		{"proto gre on sctp", RuleSpec{Proto: l("gre")}, pk(sctp4, conntrack.New), false},
		{"proto icmpv6 on v6 echo", RuleSpec{Proto: l("icmpv6")}, pk(echo6, conntrack.New), true},
		{"proto icmp on v6 echo", RuleSpec{Proto: l("icmp")}, pk(echo6, conntrack.New), false},
		{"family ip on v4", RuleSpec{Family: l("ip")}, pk(tcpSyn4, conntrack.New), true},
		{"family ip on v6", RuleSpec{Family: l("ip")}, pk(tcpSyn6, conntrack.New), false},
		{"family ip6 on v6", RuleSpec{Family: l("ip6")}, pk(udp6, conntrack.New), true},
		{"family !ip on v6", RuleSpec{Family: l("!ip")}, pk(udp6, conntrack.New), true},
		{"family !ip on v4", RuleSpec{Family: l("!ip")}, pk(udp4, conntrack.New), false},
	})
}

func TestMatchAddresses(t *testing.T) {
	runMatch(t, []matchCase{
		{"saddr prefix in", RuleSpec{SAddr: l("10.1.0.0/16")}, pk(tcpSyn4, conntrack.New), true},
		{"saddr prefix out", RuleSpec{SAddr: l("10.2.0.0/16")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr host", RuleSpec{SAddr: l("10.1.0.5")}, pk(tcpSyn4, conntrack.New), true},
		{"saddr host other", RuleSpec{SAddr: l("10.1.0.6")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr range in", RuleSpec{SAddr: l("10.1.0.1-10.1.0.9")}, pk(tcpSyn4, conntrack.New), true},
		{"saddr range out", RuleSpec{SAddr: l("10.1.0.6-10.1.0.9")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr negated out", RuleSpec{SAddr: l("!10.2.0.0/16")}, pk(tcpSyn4, conntrack.New), true},
		{"saddr negated in", RuleSpec{SAddr: l("!10.1.0.0/16")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr v4 prefix never matches v6", RuleSpec{SAddr: l("10.0.0.0/8")}, pk(tcpSyn6, conntrack.New), false},
		{"saddr negated v4 prefix never matches v6", RuleSpec{SAddr: l("!10.0.0.0/8")}, pk(tcpSyn6, conntrack.New), false},
		{"saddr v6 prefix", RuleSpec{SAddr: l("fd00:1::/48")}, pk(tcpSyn6, conntrack.New), true},
		{"saddr v6 prefix out", RuleSpec{SAddr: l("fd00:2::/48")}, pk(tcpSyn6, conntrack.New), false},
		{"saddr v6 negated", RuleSpec{SAddr: l("!fd00:2::/48")}, pk(tcpSyn6, conntrack.New), true},
		{"saddr list v4 and v6, v6 packet", RuleSpec{SAddr: l("10.9.0.0/16", "fd00:1::5")}, pk(udp6, conntrack.New), true},
		{"saddr set v4", RuleSpec{SAddr: l("@lan")}, pk(udp4, conntrack.New), true},
		{"saddr set v6", RuleSpec{SAddr: l("@lan")}, pk(udp6, conntrack.New), true},
		{"saddr set negated", RuleSpec{SAddr: l("!@lan")}, pk(udp6, conntrack.New), false},
		{"daddr set (reply from outside)", RuleSpec{DAddr: l("@lan")}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"daddr set out", RuleSpec{DAddr: l("@lan")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr set plus literal", RuleSpec{SAddr: l("@lan", "192.0.2.0/24")}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"saddr negated empty set matches all", RuleSpec{SAddr: l("!@empty")}, pk(tcpSyn6, conntrack.New), true},
		{"saddr empty set matches none", RuleSpec{SAddr: l("@empty")}, pk(tcpSyn4, conntrack.New), false},
		{"saddr and daddr", RuleSpec{SAddr: l("10.0.0.0/8"), DAddr: l("192.0.2.0/24")}, pk(tcpSyn4, conntrack.New), true},
		{"saddr and daddr, daddr fails", RuleSpec{SAddr: l("10.0.0.0/8"), DAddr: l("198.51.100.0/24")}, pk(tcpSyn4, conntrack.New), false},
		{"default route prefix", RuleSpec{DAddr: l("0.0.0.0/0")}, pk(tcpSyn4, conntrack.New), true},
		{"v6 default route prefix", RuleSpec{DAddr: l("::/0")}, pk(tcpSyn4, conntrack.New), false},
	})
}

func TestMatchPorts(t *testing.T) {
	runMatch(t, []matchCase{
		{"dport", RuleSpec{DPort: l("22")}, pk(tcpSyn4, conntrack.New), true},
		{"dport other", RuleSpec{DPort: l("23")}, pk(tcpSyn4, conntrack.New), false},
		{"dport range", RuleSpec{DPort: l("1-1023")}, pk(tcpSyn4, conntrack.New), true},
		{"dport range out", RuleSpec{DPort: l("1024-65535")}, pk(tcpSyn4, conntrack.New), false},
		{"dport list", RuleSpec{DPort: l("80", "22", "443")}, pk(tcpSyn4, conntrack.New), true},
		{"dport long list (bitmap)", RuleSpec{DPort: l("1", "3", "5", "7", "9", "11", "13", "53")}, pk(udp4, conntrack.New), true},
		{"dport long list out (bitmap)", RuleSpec{DPort: l("1", "3", "5", "7", "9", "11", "13", "54")}, pk(udp4, conntrack.New), false},
		{"dport negated", RuleSpec{DPort: l("!22")}, pk(udp4, conntrack.New), true},
		{"dport negated same", RuleSpec{DPort: l("!22")}, pk(tcpSyn4, conntrack.New), false},
		{"dport negated list", RuleSpec{DPort: l("!53", "!22")}, pk(tcpSyn6, conntrack.New), true},
		{"dport set", RuleSpec{DPort: l("@web")}, pk(tcpSyn6, conntrack.New), true},
		{"dport set range element", RuleSpec{DPort: l("@web")}, pk(filtertest.TCP("10.0.0.1:1", "10.0.0.2:8050", packet.SYN), conntrack.New), true},
		{"dport set out", RuleSpec{DPort: l("@web")}, pk(tcpSyn4, conntrack.New), false},
		{"sport", RuleSpec{SPort: l("40000")}, pk(tcpSyn4, conntrack.New), true},
		{"sport range", RuleSpec{SPort: l("1024-65535")}, pk(udp6, conntrack.New), true},
		{"dport with proto udp on tcp", RuleSpec{Proto: l("udp"), DPort: l("22")}, pk(tcpSyn4, conntrack.New), false},
		{"dport on sctp", RuleSpec{DPort: l("0-65535")}, pk(sctp4, conntrack.New), true},
		{"dport never matches icmp", RuleSpec{DPort: l("0-65535")}, pk(echo4, conntrack.New), false},
		{"negated dport never matches icmp", RuleSpec{DPort: l("!22")}, pk(echo4, conntrack.New), false},
		{"dport never matches a non-first fragment", RuleSpec{DPort: l("0-65535")}, pk(frag4, conntrack.New), false},
		{"proto matches a non-first fragment", RuleSpec{Proto: l("tcp")}, pk(frag4, conntrack.New), true},
	})
}

func TestMatchInterfaces(t *testing.T) {
	runMatch(t, []matchCase{
		{"iif", RuleSpec{IIf: l("lan0")}, pk(tcpSyn4, conntrack.New), true},
		{"iif other", RuleSpec{IIf: l("wan0")}, pk(tcpSyn4, conntrack.New), false},
		{"iif list", RuleSpec{IIf: l("dmz0", "lan0")}, pk(tcpSyn4, conntrack.New), true},
		{"iif negated", RuleSpec{IIf: l("!wan0")}, pk(tcpSyn4, conntrack.New), true},
		{"oif", RuleSpec{OIf: l("wan0")}, pk(tcpSyn4, conntrack.New), true},
		{"oif negated", RuleSpec{OIf: l("!wan0")}, pk(tcpSyn4, conntrack.New), false},
		{"oif negated, no output interface", RuleSpec{OIf: l("!wan0")}, with(pk(tcpSyn4, conntrack.New), func(p *Packet) { p.OIf = -1 }), true},
		{"oif, no output interface", RuleSpec{OIf: l("wan0")}, with(pk(tcpSyn4, conntrack.New), func(p *Packet) { p.OIf = -1 }), false},
		{"iif out of range index", RuleSpec{IIf: l("lan0")}, with(pk(tcpSyn4, conntrack.New), func(p *Packet) { p.IIf = 1000 }), false},
	})
}

func TestMatchConntrack(t *testing.T) {
	inv := func(r conntrack.Reason) *Packet {
		return with(pk(tcpAck4, conntrack.Invalid), func(p *Packet) { p.Reason = r })
	}
	st := func(s conntrack.Status) *Packet {
		return with(pk(tcpAck4, conntrack.Established), func(p *Packet) { p.Status = s })
	}
	runMatch(t, []matchCase{
		{"state new", RuleSpec{CtState: l("new")}, pk(tcpSyn4, conntrack.New), true},
		{"state new on established", RuleSpec{CtState: l("new")}, pk(tcpAck4, conntrack.Established), false},
		{"state established,related string", RuleSpec{CtState: l("established,related")}, pk(tcpAck4, conntrack.Established), true},
		{"state established on reply", RuleSpec{CtState: l("established")}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"state related list", RuleSpec{CtState: l("established", "related")}, pk(unreach4, conntrack.RelatedReply), true},
		{"state invalid", RuleSpec{CtState: l("invalid")}, pk(tcpAck4, conntrack.Invalid), true},
		{"state untracked", RuleSpec{CtState: l("untracked")}, pk(tcpAck4, conntrack.Untracked), true},
		{"state untracked on new", RuleSpec{CtState: l("untracked")}, pk(tcpAck4, conntrack.New), false},
		{"state negated", RuleSpec{CtState: l("!invalid")}, pk(tcpSyn4, conntrack.New), true},
		{"state negated on invalid", RuleSpec{CtState: l("!invalid,untracked")}, pk(tcpSyn4, conntrack.Untracked), false},
		{"state uppercase", RuleSpec{CtState: l("NEW")}, pk(tcpSyn4, conntrack.New), true},
		{"direction original", RuleSpec{CtDirection: "original"}, pk(tcpAck4, conntrack.Established), true},
		{"direction original on reply", RuleSpec{CtDirection: "original"}, pk(tcpSynAck, conntrack.EstablishedReply), false},
		{"direction reply", RuleSpec{CtDirection: "reply"}, pk(unreach4, conntrack.RelatedReply), true},
		{"direction !reply", RuleSpec{CtDirection: "!reply"}, pk(tcpSyn4, conntrack.New), true},
		{"direction never matches invalid", RuleSpec{CtDirection: "original"}, pk(tcpAck4, conntrack.Invalid), false},
		{"direction never matches untracked", RuleSpec{CtDirection: "!reply"}, pk(tcpAck4, conntrack.Untracked), false},
		{"status assured", RuleSpec{CtStatus: l("assured")}, st(conntrack.StatusAssured | conntrack.StatusSeenReply), true},
		{"status assured missing", RuleSpec{CtStatus: l("assured")}, st(conntrack.StatusSeenReply), false},
		{"status any of", RuleSpec{CtStatus: l("expected,assured")}, st(conntrack.StatusExpected), true},
		{"status seen-reply", RuleSpec{CtStatus: l("seen-reply")}, st(conntrack.StatusSeenReply), true},
		{"status negated", RuleSpec{CtStatus: l("!assured")}, st(conntrack.StatusSeenReply), true},
		{"status negated present", RuleSpec{CtStatus: l("!assured")}, st(conntrack.StatusAssured), false},
		{"status negated never matches invalid", RuleSpec{CtStatus: l("!assured")}, pk(tcpAck4, conntrack.Invalid), false},
		{"reason", RuleSpec{CtReason: l("tcp: seq above window")}, inv(conntrack.ReasonTCPSeqAboveWindow), true},
		{"reason other", RuleSpec{CtReason: l("tcp: seq above window")}, inv(conntrack.ReasonTCPNoSYN), false},
		{"reason list", RuleSpec{CtReason: l("tcp: seq above window", "tcp: new connection without syn")}, inv(conntrack.ReasonTCPNoSYN), true},
		{"reason decode error text", RuleSpec{CtReason: l("tcp: bad data offset")}, inv(conntrack.ReasonFromDecode(packet.ErrTCPDataOff)), true},
		{"reason negated", RuleSpec{CtReason: l("!tcp: seq above window")}, inv(conntrack.ReasonTCPNoSYN), true},
		{"reason negated same", RuleSpec{CtReason: l("!tcp: seq above window")}, inv(conntrack.ReasonTCPSeqAboveWindow), false},
		{"reason needs invalid", RuleSpec{CtReason: l("!tcp: seq above window")}, pk(tcpAck4, conntrack.Established), false},
		{"helper", RuleSpec{CtHelper: "ftp"}, with(pk(tcpSyn4, conntrack.Related), func(p *Packet) { p.Helper = "ftp" }), true},
		{"helper none", RuleSpec{CtHelper: "ftp"}, pk(tcpSyn4, conntrack.Related), false},
		{"helper negated", RuleSpec{CtHelper: "!ftp"}, pk(tcpSyn4, conntrack.New), true},
	})
}

func TestMatchICMPAndFlags(t *testing.T) {
	unreach6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", packet.ICMPv6DestUnreachable, packet.ICMPv6PortUnreachable, 0, udp6)
	ptb6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", packet.ICMPv6PacketTooBig, 0, 1280, tcpSyn6)
	runMatch(t, []matchCase{
		{"icmp type name", RuleSpec{ICMPType: l("echo-request")}, pk(echo4, conntrack.New), true},
		{"icmp type number", RuleSpec{ICMPType: l("8")}, pk(echo4, conntrack.New), true},
		{"icmp type other", RuleSpec{ICMPType: l("echo-reply")}, pk(echo4, conntrack.New), false},
		{"icmp type negated", RuleSpec{ICMPType: l("!echo-reply")}, pk(echo4, conntrack.New), true},
		{"icmp type list", RuleSpec{ICMPType: l("destination-unreachable", "time-exceeded")}, pk(unreach4, conntrack.RelatedReply), true},
		{"icmp type does not match icmpv6", RuleSpec{ICMPType: l("128")}, pk(echo6, conntrack.New), false},
		{"icmp type does not match tcp", RuleSpec{ICMPType: l("!echo-reply")}, pk(tcpSyn4, conntrack.New), false},
		{"icmp code name", RuleSpec{ICMPType: l("destination-unreachable"), ICMPCode: l("port-unreachable")}, pk(unreach4, conntrack.RelatedReply), true},
		{"icmp code alone", RuleSpec{ICMPCode: l("3")}, pk(unreach4, conntrack.RelatedReply), true},
		{"icmp code other", RuleSpec{ICMPCode: l("host-unreachable")}, pk(unreach4, conntrack.RelatedReply), false},
		{"icmpv6 type", RuleSpec{ICMPv6Type: l("echo-request")}, pk(echo6, conntrack.New), true},
		{"icmpv6 type does not match icmp", RuleSpec{ICMPv6Type: l("8", "128")}, pk(echo4, conntrack.New), false},
		{"icmpv6 packet-too-big", RuleSpec{ICMPv6Type: l("packet-too-big")}, pk(ptb6, conntrack.RelatedReply), true},
		{"icmpv6 code", RuleSpec{ICMPv6Type: l("destination-unreachable"), ICMPv6Code: l("port-unreachable")}, pk(unreach6, conntrack.RelatedReply), true},
		{"icmpv6 code other", RuleSpec{ICMPv6Code: l("admin-prohibited")}, pk(unreach6, conntrack.RelatedReply), false},
		{"flags any: syn on syn|ack", RuleSpec{TCPFlags: "syn"}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"flags any: syn on ack", RuleSpec{TCPFlags: "syn"}, pk(tcpAck4, conntrack.Established), false},
		{"flags any of list", RuleSpec{TCPFlags: "fin,rst"}, pk(tcpRst4, conntrack.Established), true},
		{"flags syn only: syn", RuleSpec{TCPFlags: "syn / syn,ack,rst,fin"}, pk(tcpSyn4, conntrack.New), true},
		{"flags syn only: syn|ack", RuleSpec{TCPFlags: "syn / syn,ack,rst,fin"}, pk(tcpSynAck, conntrack.EstablishedReply), false},
		{"flags nft bar syntax", RuleSpec{TCPFlags: "syn / fin|syn|rst|ack"}, pk(tcpSyn4, conntrack.New), true},
		{"flags all of", RuleSpec{TCPFlags: "syn,ack / syn,ack"}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"flags all of, one missing", RuleSpec{TCPFlags: "syn,ack / syn,ack"}, pk(tcpSyn4, conntrack.New), false},
		{"flags exact", RuleSpec{TCPFlags: "== syn,ack"}, pk(tcpSynAck, conntrack.EstablishedReply), true},
		{"flags exact other", RuleSpec{TCPFlags: "== syn"}, pk(tcpSynAck, conntrack.EstablishedReply), false},
		{"flags negated", RuleSpec{TCPFlags: "!syn"}, pk(tcpAck4, conntrack.Established), true},
		{"flags rst", RuleSpec{TCPFlags: "rst"}, pk(tcpRst4, conntrack.Established), true},
		{"flags never match udp", RuleSpec{TCPFlags: "!syn"}, pk(udp4, conntrack.New), false},
	})
}

func TestMatchMalformedPackets(t *testing.T) {
	truncated := filtertest.TCP("10.1.0.5:40000", "192.0.2.10:22", packet.SYN)
	truncated = truncated[:24] // IP total length now exceeds the buffer
	runMatch(t, []matchCase{
		{"nil Parsed matches no packet field", RuleSpec{Proto: l("!tcp")}, &Packet{Ct: conntrack.Invalid, IIf: -1, OIf: -1}, false},
		{"nil Parsed matches a ct-only rule", RuleSpec{CtState: l("invalid")}, &Packet{Ct: conntrack.Invalid, IIf: -1, OIf: -1}, true},
		{"undecodable packet matches no address", RuleSpec{SAddr: l("!10.0.0.0/8")}, pk(truncated, conntrack.Invalid), false},
		{"undecodable packet matches no family", RuleSpec{Family: l("ip")}, pk(truncated, conntrack.Invalid), false},
		{"undecodable packet matches an interface rule", RuleSpec{IIf: l("lan0")}, pk(truncated, conntrack.Invalid), true},
	})
}

func TestEvalNilPacket(t *testing.T) {
	rs := mustCompile(t, fwd(RuleSpec{CtState: l("invalid"), Action: "drop"}, RuleSpec{Action: "accept"}))
	if v := rs.Eval(Forward, nil, 0); v.Action != Drop || v.Rule != 0 {
		t.Fatalf("nil packet: got %+v, want drop by rule 0 (a nil packet is invalid)", v)
	}
	if v := rs.Eval(NumChains, pk(tcpSyn4, conntrack.New), 0); v.Action != Drop {
		t.Fatalf("unknown chain: got %+v, want drop", v)
	}
}

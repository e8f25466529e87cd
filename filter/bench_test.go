package filter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

// typicalPolicy is a 100-rule gateway policy: established/related first,
// invalid dropped, then per-service rules for new connections, then a
// reject. The rules mix match kinds as real policies do.
func typicalPolicy() Spec {
	rules := []RuleSpec{
		{CtState: l("established", "related"), Action: "accept", Comment: "established"},
		{CtState: l("invalid"), Action: "drop", Comment: "invalid"},
		{ICMPType: l("echo-request"), CtState: l("new"), Action: "accept"},
		{ICMPv6Type: l("echo-request", "nd-neighbor-solicit"), Action: "accept"},
	}
	for i := 0; len(rules) < 98; i++ {
		switch i % 4 {
		case 0:
			rules = append(rules, RuleSpec{CtState: l("new"), IIf: l("lan0"), Proto: l("tcp"), DPort: l(fmt.Sprint(2000 + i)), Action: "accept"})
		case 1:
			rules = append(rules, RuleSpec{CtState: l("new"), SAddr: l(fmt.Sprintf("10.%d.0.0/16", 100+i)), Proto: l("udp"), DPort: l("5000-5100"), Action: "accept"})
		case 2:
			rules = append(rules, RuleSpec{CtState: l("new"), DAddr: l(fmt.Sprintf("2001:db8:%x::/48", i)), Proto: l("tcp"), DPort: l("@web"), Action: "accept"})
		case 3:
			rules = append(rules, RuleSpec{CtState: l("new"), IIf: l("wan0"), SAddr: l("!@lan"), DAddr: l(fmt.Sprintf("10.1.%d.0/24", i)), Action: "drop"})
		}
	}
	rules = append(rules,
		RuleSpec{CtState: l("new"), IIf: l("lan0"), OIf: l("wan0"), Action: "accept", Comment: "lan to wan"},
		RuleSpec{Action: "reject", Comment: "everything else"},
	)
	return Spec{
		Interfaces: testIfaces,
		Helpers:    []string{"ftp"},
		Sets:       []SetSpec{{Name: "lan", Elems: l("10.1.0.0/16", "fd00:1::/48")}, {Name: "web", Elems: l("80", "443")}},
		Chains:     []ChainSpec{{Chain: Forward, Policy: "drop", Rules: rules}},
		Workers:    1,
	}
}

func TestTypicalPolicyShape(t *testing.T) {
	rs, warns, err := Compile(typicalPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if rs.NumRules(Forward) != 100 || len(warns) != 0 {
		t.Fatalf("%d rules, warnings %v", rs.NumRules(Forward), warns)
	}
	for _, tc := range []struct {
		pkt  *Packet
		act  Action
		rule int
	}{
		{pk(tcpAck4, conntrack.Established), Accept, 0},
		{pk(tcpAck4, conntrack.Invalid), Drop, 1},
		{pk(tcpSyn4, conntrack.New), Accept, 98},
		{with(pk(tcpSyn6, conntrack.New), func(p *Packet) { p.IIf = 2 }), Reject, 99},
	} {
		if v := rs.Eval(Forward, tc.pkt, 0); v.Action != tc.act || v.Rule != tc.rule {
			t.Errorf("%v: got %+v, want %v by %d", tc.pkt.P.Key, v, tc.act, tc.rule)
		}
	}
}

func TestEvalNoAllocs(t *testing.T) {
	rs := mustCompile(t, typicalPolicy())
	pkts := []*Packet{
		pk(tcpAck4, conntrack.Established),
		pk(tcpSynAck, conntrack.EstablishedReply),
		pk(tcpAck4, conntrack.Invalid),
		pk(tcpSyn4, conntrack.New),
		pk(udp6, conntrack.New),
		pk(echo6, conntrack.New),
		with(pk(tcpSyn6, conntrack.New), func(p *Packet) { p.IIf = 2 }), // reject (ICMP)
		with(pk(tcpSyn4, conntrack.New), func(p *Packet) { p.IIf = 2 }), // reject (RST)
		nil,
	}
	for i, p := range pkts {
		if n := testing.AllocsPerRun(200, func() { sinkVerdict = rs.Eval(Forward, p, 0) }); n != 0 {
			t.Errorf("packet %d: %v allocations per Eval", i, n)
		}
	}
	if n := testing.AllocsPerRun(200, func() { sinkVerdict = rs.Eval(Prerouting, pkts[0], 0) }); n != 0 {
		t.Errorf("undefined chain: %v allocations", n)
	}
}

var sinkVerdict Verdict

func BenchmarkEvalTypicalPolicy(b *testing.B) {
	rs := mustCompile(b, typicalPolicy())
	for _, bc := range []struct {
		name string
		pkt  *Packet
	}{
		{"established-tcp4", pk(tcpAck4, conntrack.Established)},
		{"reply-tcp4", pk(tcpSynAck, conntrack.EstablishedReply)},
		{"invalid-tcp4", pk(tcpAck4, conntrack.Invalid)},
		{"new-tcp4-rule98", pk(tcpSyn4, conntrack.New)},
		{"new-udp6-rule98", pk(udp6, conntrack.New)},
		{"new-tcp6-from-dmz-reject-rst", with(pk(tcpSyn6, conntrack.New), func(p *Packet) { p.IIf = 2 })},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkVerdict = rs.Eval(Forward, bc.pkt, 0)
			}
		})
	}
}

// BenchmarkEvalRules measures the scan: n rules of the packet's protocol
// and state that do not match it, then the policy. In "rules=N" each rule
// has its own destination port (most are skipped by the port pre-filter
// without being read); in "rules=N-same-port" every rule has the packet's
// port and is fully checked (the worst case).
func BenchmarkEvalRules(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, same := range []bool{false, true} {
			var rules []RuleSpec
			for i := range n {
				port := fmt.Sprint(1000 + i)
				if same {
					port = "22"
				}
				rules = append(rules, RuleSpec{Proto: l("tcp"), SAddr: l(fmt.Sprintf("10.200.%d.%d", i/256, i%256)), DPort: l(port), Action: "accept"})
			}
			rs := mustCompile(b, fwd(rules...))
			p := pk(tcpSyn4, conntrack.New)
			if v := rs.Eval(Forward, p, 0); v.Rule != -1 {
				b.Fatalf("verdict %+v", v)
			}
			name := fmt.Sprintf("rules=%d", n)
			if same {
				name += "-same-port"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					sinkVerdict = rs.Eval(Forward, p, 0)
				}
			})
		}
	}
	// The same 1000 rules spread over protocols: the pre-index skips the
	// rules of other protocols.
	var rules []RuleSpec
	protos := []string{"udp", "icmp", "icmpv6", "gre", "tcp"}
	for i := range 1000 {
		r := RuleSpec{Proto: l(protos[i%5]), SAddr: l(fmt.Sprintf("10.200.%d.%d", i/256, i%256)), Action: "accept"}
		rules = append(rules, r)
	}
	rs := mustCompile(b, fwd(rules...))
	p := pk(tcpSyn4, conntrack.New)
	b.Run("rules=1000-mixed-protocols", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkVerdict = rs.Eval(Forward, p, 0)
		}
	})
}

// BenchmarkEvalBigSet looks a packet up in a 10,000-prefix set.
func BenchmarkEvalBigSet(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	var v4, v6 []string
	for range 10000 {
		a := [4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), 0}
		v4 = append(v4, netip.PrefixFrom(netip.AddrFrom4(a), 24).String())
		var a6 [16]byte
		a6[0], a6[1], a6[2], a6[3], a6[4], a6[5] = 0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(256)), byte(r.IntN(256))
		v6 = append(v6, netip.PrefixFrom(netip.AddrFrom16(a6), 48).String())
	}
	for _, bc := range []struct {
		name  string
		elems []string
		pkt   []byte
	}{
		{"v4-10000-prefixes-miss", v4, filtertest.TCP("10.1.0.5:1", "9.9.9.9:80", packet.SYN)},
		{"v4-10000-prefixes-hit", v4, filtertest.TCP(netip.MustParsePrefix(v4[5000]).Addr().Next().String()+":1", "9.9.9.9:80", packet.SYN)},
		{"v6-10000-prefixes-hit", v6, filtertest.TCP("["+netip.MustParsePrefix(v6[5000]).Addr().Next().String()+"]:1", "[2001:db8::1]:80", packet.SYN)},
	} {
		spec := fwd(RuleSpec{SAddr: l("@big"), Action: "drop"})
		spec.Sets = []SetSpec{{Name: "big", Elems: bc.elems}}
		rs := mustCompile(b, spec)
		p := pk(bc.pkt, conntrack.New)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkVerdict = rs.Eval(Forward, p, 0)
			}
		})
	}
}

func BenchmarkCompileTypicalPolicy(b *testing.B) {
	spec := typicalPolicy()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Compile(spec); err != nil {
			b.Fatal(err)
		}
	}
}

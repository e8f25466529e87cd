package filter

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

// randPrefix returns a prefix from a small space so that prefixes nest,
// overlap and touch.
func randPrefix(r *rand.Rand, v6 bool) netip.Prefix {
	if v6 {
		var a [16]byte
		a[0] = 0xfd
		a[1] = byte(r.IntN(4))
		binary.BigEndian.PutUint64(a[8:], r.Uint64()%64)
		return netip.PrefixFrom(netip.AddrFrom16(a), 8+r.IntN(121)).Masked()
	}
	v := uint32(10)<<24 | uint32(r.IntN(4))<<16 | uint32(r.IntN(256))<<8 | uint32(r.IntN(256))
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), 8+r.IntN(25)).Masked()
}

// probes returns addresses around each prefix's edges plus random ones.
func probes(r *rand.Rand, ps []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		lo := p.Addr()
		hi := lastAddr(p)
		out = append(out, lo, hi, lo.Prev(), hi.Next())
	}
	for range 50 {
		out = append(out, randPrefix(r, false).Addr(), randPrefix(r, true).Addr())
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestAddrSetAgainstPrefixList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		var ps []netip.Prefix
		var b addrBuilder
		for range r.IntN(12) {
			p := randPrefix(r, r.IntN(2) == 0)
			ps = append(ps, p)
			b.addPrefix(p)
		}
		s := b.build()
		for _, a := range probes(r, ps) {
			if !a.IsValid() {
				continue
			}
			want := false
			for _, p := range ps {
				want = want || p.Contains(a)
			}
			a16 := a.As16()
			var got bool
			if a.Is4() {
				a4 := a.As4()
				copy(a16[:], a4[:])
				got = s.has(famV4, &a16)
			} else {
				got = s.has(famV6, &a16)
			}
			if got != want {
				t.Fatalf("iteration %d: %v in %v: got %v, want %v", iter, a, ps, got, want)
			}
		}
		// Merged ranges are sorted, disjoint and not adjacent.
		for i := 1; i < len(s.v4); i++ {
			if s.v4[i].lo <= s.v4[i-1].hi+1 {
				t.Fatalf("v4 ranges not merged: %v", s.v4)
			}
		}
	}
}

func TestPortSetAgainstRangeList(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 200 {
		var rs []range16
		for range r.IntN(20) {
			lo := uint16(r.IntN(65536))
			hi := lo + uint16(r.IntN(3)*r.IntN(2000))
			if hi < lo {
				hi = 65535
			}
			rs = append(rs, range16{lo, hi})
		}
		s := buildPortSet(rs)
		for p := 0; p < 65536; p++ {
			want := false
			for _, x := range rs {
				want = want || uint16(p) >= x.lo && uint16(p) <= x.hi
			}
			if s.has(uint16(p)) != want {
				t.Fatalf("iteration %d: port %d in %v: got %v", iter, p, rs, !want)
			}
		}
	}
}

// slowEval is Eval without the pre-index: every rule is tried.
func slowEval(rs *Ruleset, c Chain, pkt *Packet) Verdict {
	var m mctx
	m.init(c, pkt)
	v := Verdict{Rule: -1}
	ch := &rs.chains[c]
	for i := range ch.rules {
		rl := &ch.rules[i]
		if !rl.match(&m) {
			continue
		}
		switch rl.action {
		case Continue:
			continue
		case Notrack:
			v.Notrack = true
			continue
		case Helper:
			v.Helper = rl.helper
			continue
		}
		v.Action, v.Rule = rl.action, rl.pos
		return v
	}
	v.Action = ch.policy
	return v
}

func randRule(r *rand.Rand) RuleSpec {
	pick := func(vals ...string) []string {
		if r.IntN(3) != 0 {
			return nil
		}
		n := 1 + r.IntN(2)
		var out []string
		neg := r.IntN(4) == 0
		for range n {
			v := vals[r.IntN(len(vals))]
			if neg {
				v = "!" + v
			}
			out = append(out, v)
		}
		return out
	}
	var rs RuleSpec
	rs.CtState = pick("new", "established", "related", "invalid", "untracked")
	rs.Family = pick("ip", "ip6")
	switch r.IntN(4) {
	case 0:
		rs.Proto = pick("tcp", "udp", "sctp")
		rs.DPort = pick("22", "53", "80", "1-1024", "@ports")
		rs.SPort = pick("1024-65535", "5353")
	case 1:
		rs.ICMPType = pick("echo-request", "destination-unreachable", "0")
	case 2:
		rs.TCPFlags = []string{"", "syn", "syn / syn,ack,rst,fin", "!ack", "rst"}[r.IntN(5)]
	default:
		rs.Proto = pick("tcp", "udp", "icmp", "icmpv6", "gre", "47", "sctp")
	}
	rs.SAddr = pick("10.1.0.0/16", "10.0.0.0/8", "fd00:1::/48", "@lan", "192.0.2.0/24")
	rs.DAddr = pick("192.0.2.0/24", "2001:db8::/32", "@lan", "10.1.0.5")
	rs.IIf = pick("lan0", "wan0", "dmz0")
	rs.OIf = pick("lan0", "wan0")
	if r.IntN(5) == 0 {
		rs.CtDirection = []string{"original", "reply", "!reply"}[r.IntN(3)]
	}
	rs.CtStatus = pick("assured", "seen-reply", "expected")
	if r.IntN(8) == 0 {
		rs.CtReason = []string{"tcp: seq above window"}
	}
	rs.Action = []string{"accept", "drop", "continue", "reject"}[r.IntN(4)]
	return rs
}

func TestIndexAgreesWithFullScan(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	basePkts := [][]byte{tcpSyn4, tcpSynAck, tcpAck4, tcpRst4, udp4, tcpSyn6, udp6, echo4, echo6, unreach4, sctp4, gre4, frag4,
		filtertest.UDP("10.1.0.5:1", "10.1.0.6:53", 1), filtertest.TCP("[fd00:1::1]:1024", "[fd00:1::2]:80", packet.SYN|packet.ACK)}
	cts := []conntrack.CtInfo{conntrack.New, conntrack.Established, conntrack.EstablishedReply, conntrack.Related,
		conntrack.RelatedReply, conntrack.Invalid, conntrack.Untracked}
	compiled, checked := 0, 0
	for iter := 0; compiled < 150 && iter < 3000; iter++ {
		var rules []RuleSpec
		for range 1 + r.IntN(25) {
			rules = append(rules, randRule(r))
		}
		spec := fwd(rules...)
		spec.Interfaces = testIfaces
		spec.Sets = []SetSpec{{Name: "lan", Elems: l("10.1.0.0/16", "fd00:1::/48")}, {Name: "ports", Elems: l("22", "80", "443", "8000-8100")}}
		rs, _, err := Compile(spec)
		if err != nil {
			continue // random rules may conflict (proto vs ports, ...)
		}
		compiled++
		for range 60 {
			p := &Packet{
				P:      filtertest.Decode(basePkts[r.IntN(len(basePkts))]),
				Ct:     cts[r.IntN(len(cts))],
				Status: conntrack.Status(r.IntN(8)),
				Reason: conntrack.Reason(r.IntN(int(conntrack.NumReasons))),
				IIf:    r.IntN(4) - 1,
				OIf:    r.IntN(4) - 1,
			}
			got := rs.Eval(Forward, p, 0)
			want := slowEval(rs, Forward, p)
			// Eval may turn a reject into a drop; compare the deciding rule.
			if got.Rule != want.Rule || got.Rule == -1 && got.Action != want.Action {
				t.Fatalf("rules %s\npacket %v ct %v: indexed %+v, full scan %+v", fmt.Sprint(rules), p.P.Key, p.Ct, got, want)
			}
			checked++
		}
	}
	if compiled < 150 {
		t.Fatalf("only %d random rulesets compiled", compiled)
	}
	t.Logf("%d rulesets, %d packets", compiled, checked)
}

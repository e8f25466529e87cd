package filter

import (
	"encoding/binary"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// Packet is what the pipeline knows about one packet when it asks for a
// verdict. The conntrack fields are ignored in the prerouting chain (which
// runs before tracking).
type Packet struct {
	P *packet.Parsed
	// Ct is the packet's ctinfo (conntrack.Invalid when tracking found no
	// connection, conntrack.Untracked after notrack).
	Ct conntrack.CtInfo
	// Status is the connection's status bits (zero without a connection).
	Status conntrack.Status
	// Reason says why the packet is INVALID (ReasonNone otherwise).
	Reason conntrack.Reason
	// Helper is the name of the helper of the connection's master (the
	// helper that announced this RELATED connection), "" when none; the
	// ct_helper match compares it, as nft's "ct helper" does.
	Helper string
	// IIf and OIf are indexes into Spec.Interfaces; -1 for none.
	IIf, OIf int
}

// Verdict is the filter's decision on a packet.
type Verdict struct {
	// Action is Accept, Drop or Reject.
	Action Action
	// Rule is the index (in its chain) of the rule that decided, -1 when
	// the chain's policy did.
	Rule int
	// Reject says what to send back when Action is Reject; ICMPType and
	// ICMPCode are for the packet's family (ICMP for IPv4, ICMPv6 for
	// IPv6). The pipeline builds the reply.
	Reject             RejectKind
	ICMPType, ICMPCode uint8
	// RejectLimited is set when a reject rule matched but the reply was
	// not allowed (rate limit, or a packet that must not be answered: a
	// TCP RST, an ICMP error, a non-first fragment, a multicast or
	// broadcast address); Action is then Drop.
	RejectLimited bool
	// Notrack is set when a prerouting notrack rule matched: the packet
	// bypasses conntrack (UNTRACKED).
	Notrack bool
	// Helper is the helper a prerouting helper rule assigned ("" none);
	// the last matching helper rule wins. Like the kernel, conntrack
	// attaches it only when the packet creates a new connection.
	Helper string
	// Log reports that the deciding rule logs the packet. Eval has already
	// written the (rate-limited) log line of every matching log rule.
	Log bool
}

// emptyParsed and nilPacket stand in for a nil Packet.P and a nil
// *Packet; they are never written.
var (
	emptyParsed packet.Parsed
	nilPacket   = Packet{Ct: conntrack.Invalid, IIf: -1, OIf: -1}
)

// mctx is the per-packet state shared by the rules' match checks.
type mctx struct {
	p     *packet.Parsed
	pkt   *Packet
	state conntrack.State
	class uint8 // index class of state
	fam   uint8
	l4    bool // the transport header decoded (ports, ICMP, flags usable)
}

// Eval runs the packet through chain and returns the verdict. worker is
// the caller's counter slot in [0, Spec.Workers); other values still work
// (a shared slot updated atomically). It never allocates (except when a
// log line is written, which is rate-limited) and never panics.
func (rs *Ruleset) Eval(c Chain, pkt *Packet, worker int) Verdict {
	if c >= NumChains {
		return Verdict{Action: Drop, Rule: -1}
	}
	if pkt == nil {
		pkt = &nilPacket
	}
	ch := &rs.chains[c]
	var m mctx
	m.init(c, pkt)
	p := m.p
	v := Verdict{Rule: -1}
	length := p.Length
	ifc := ch.ifIndexed
	if uint(pkt.IIf) < uint(ifc) {
		ifc = pkt.IIf
	}
	ix := ch.index[indexKey(int(m.class), int(protoClassOf[p.Proto]), famClass(m.fam))*(ch.ifIndexed+1)+ifc]
	dbit := uint64(1) << (p.DstPort & 63)
	for _, ri := range ch.indexData[ix.off : ix.off+ix.n] {
		if ch.dmask[ri]&dbit == 0 {
			continue
		}
		r := &ch.rules[ri]
		if !r.match(&m) {
			continue
		}
		rs.count(worker, r.id, length)
		if r.log {
			rs.logRule(c, r, pkt, worker)
		}
		switch r.action {
		case Continue:
			continue
		case Notrack:
			v.Notrack = true
			continue
		case Helper:
			v.Helper = r.helper
			continue
		}
		v.Action = r.action
		v.Rule = r.pos
		v.Log = r.log
		if r.action == Reject {
			rs.reject(&v, r, p)
		}
		return v
	}
	rs.count(worker, ch.policyID, length)
	v.Action = ch.policy
	return v
}

func (m *mctx) init(c Chain, pkt *Packet) {
	m.pkt = pkt
	m.p = pkt.P
	if m.p == nil {
		m.p = &emptyParsed
	}
	p := m.p
	switch {
	case p.Family == 4 && !p.Err.IsIPLevel():
		m.fam = famV4
	case p.Family == 6 && !p.Err.IsIPLevel():
		m.fam = famV6
	default:
		m.fam = famOther
	}
	m.l4 = p.Err == packet.ErrNone && m.fam != famOther && !(p.Fragment && p.FragOff != 0)
	m.state = ctStateOf[pkt.Ct]
	m.class = ctClassOf[pkt.Ct]
	if c == Prerouting {
		// Not tracked yet; prerouting rules have no state match.
		m.state, m.class = conntrack.StateNew, 0
	}
}

// match reports whether the rule matches the packet. The pre-index already
// selected rules by state, protocol class and family; those are checked
// again here so that the index is only an optimisation.
func (r *rule) match(m *mctx) bool {
	if r.states&m.state == 0 || r.fams&m.fam == 0 {
		return false
	}
	n := r.need
	if n == 0 {
		return true
	}
	p := m.p
	if n&mProto != 0 {
		if r.protoOne {
			if uint8(p.Proto) != r.proto1 {
				return false
			}
		} else if !r.protos.has(uint8(p.Proto)) {
			return false
		}
	}
	if n&(mSAddr|mDAddr) != 0 {
		if n&mSAddr != 0 {
			if r.sfams&m.fam == 0 {
				return false
			}
			var in bool
			if r.s4One {
				a := binary.BigEndian.Uint32(p.Key.Src[:4])
				in = a-r.s4.lo <= r.s4.hi-r.s4.lo
			} else {
				in = r.saddr.has(m.fam, &p.Key.Src)
			}
			if in == (r.neg&mSAddr != 0) {
				return false
			}
		}
		if n&mDAddr != 0 {
			if r.dfams&m.fam == 0 {
				return false
			}
			var in bool
			if r.d4One {
				a := binary.BigEndian.Uint32(p.Key.Dst[:4])
				in = a-r.d4.lo <= r.d4.hi-r.d4.lo
			} else {
				in = r.daddr.has(m.fam, &p.Key.Dst)
			}
			if in == (r.neg&mDAddr != 0) {
				return false
			}
		}
	}
	if n&(mSPort|mDPort|mICMPType|mICMPCode|mTCPFlags) != 0 {
		if !m.l4 {
			return false
		}
		if n&mSPort != 0 {
			var in bool
			if r.sportOne {
				in = p.SrcPort-r.sp.lo <= r.sp.hi-r.sp.lo
			} else {
				in = r.sport.has(p.SrcPort)
			}
			if in == (r.neg&mSPort != 0) {
				return false
			}
		}
		if n&mDPort != 0 {
			var in bool
			if r.dportOne {
				in = p.DstPort-r.dp.lo <= r.dp.hi-r.dp.lo
			} else {
				in = r.dport.has(p.DstPort)
			}
			if in == (r.neg&mDPort != 0) {
				return false
			}
		}
		if n&mICMPType != 0 && !r.icmpType.has(p.ICMPType) {
			return false
		}
		if n&mICMPCode != 0 && !r.icmpCode.has(p.ICMPCode) {
			return false
		}
		if n&mTCPFlags != 0 && !r.tcpFlags.has(uint8(p.TCPFlags)) {
			return false
		}
	}
	if n&(mIIf|mOIf) != 0 {
		if n&mIIf != 0 {
			if r.iifOne {
				if m.pkt.IIf != int(r.iif1) {
					return false
				}
			} else if !r.iif.has(ifBit(m.pkt.IIf)) {
				return false
			}
		}
		if n&mOIf != 0 && !r.oif.has(ifBit(m.pkt.OIf)) {
			return false
		}
	}
	if n&(mDir|mStatus|mReason|mHelper) != 0 {
		pk := m.pkt
		if n&mDir != 0 && r.dirs&(1<<pk.Ct.Dir()) == 0 {
			return false
		}
		if n&mStatus != 0 && (pk.Status&r.status != 0) == (r.neg&mStatus != 0) {
			return false
		}
		if n&mReason != 0 && (pk.Reason >= 128 || r.reasons[pk.Reason>>6]&(1<<(pk.Reason&63)) == 0) {
			return false
		}
		if n&mHelper != 0 && (pk.Helper == r.ctHelper) == (r.neg&mHelper != 0) {
			return false
		}
	}
	return true
}

func ifBit(i int) uint8 {
	if i < 0 || i >= maxInterfaces {
		return ifNone
	}
	return uint8(i)
}

func (s *addrSet) has(fam uint8, a *[16]byte) bool {
	if fam == famV4 {
		return s.contains4(binary.BigEndian.Uint32(a[:4]))
	}
	return s.contains6(u128From16(a))
}

// count adds one packet of n bytes to counter id in the worker's slot.
func (rs *Ruleset) count(worker, id, n int) {
	if uint(worker) < uint(rs.workers) {
		c := &rs.counters[worker*rs.stride+id]
		c.pkts.Store(c.pkts.Load() + 1)
		c.bytes.Store(c.bytes.Load() + uint64(n))
		return
	}
	c := &rs.counters[rs.workers*rs.stride+id]
	c.pkts.Add(1)
	c.bytes.Add(uint64(n))
}

// reject fills in what to send, or turns the verdict into a drop when no
// reply may be sent.
func (rs *Ruleset) reject(v *Verdict, r *rule, p *packet.Parsed) {
	tcp := r.reject.tcp || r.reject.auto && p.Proto == packet.TCP
	if !mayAnswer(p, tcp) {
		v.Action, v.RejectLimited = Drop, true
		return
	}
	if tcp {
		// Like the kernel, TCP resets are not rate-limited: they are no
		// larger than the segment they answer.
		v.Reject = RejectTCPReset
		return
	}
	if rs.rejLim != nil && !rs.rejLim.AllowN(rs.now(), 1) {
		v.Action, v.RejectLimited = Drop, true
		return
	}
	v.Reject = RejectICMP
	if p.Family == 4 {
		v.ICMPType, v.ICMPCode = r.reject.t4, r.reject.c4
	} else {
		v.ICMPType, v.ICMPCode = r.reject.t6, r.reject.c6
	}
}

// mayAnswer reports whether a reject may answer p: never a TCP RST with a
// RST, never an ICMP error with an ICMP error, nothing for a packet that
// did not decode, a non-first fragment, or one from or to a multicast,
// broadcast or unspecified address.
func mayAnswer(p *packet.Parsed, tcp bool) bool {
	if p.Family != 4 && p.Family != 6 || p.Err.IsIPLevel() || p.Fragment && p.FragOff != 0 {
		return false
	}
	if tcp {
		if p.Proto != packet.TCP || p.Err != packet.ErrNone || p.TCPFlags&packet.RST != 0 {
			return false
		}
	} else if p.Proto == packet.ICMP && (p.Err != packet.ErrNone || packet.IsICMPError(p.ICMPType)) ||
		p.Proto == packet.ICMPv6 && (p.Err != packet.ErrNone || p.ICMPType < 128) {
		return false
	}
	k := &p.Key
	if p.Family == 4 {
		for _, a := range [2][]byte{k.Src[:4], k.Dst[:4]} {
			if a[0] >= 224 || binary.BigEndian.Uint32(a) == 0 {
				// Multicast, reserved, limited broadcast, unspecified.
				return false
			}
		}
		return true
	}
	if k.Src[0] == 0xff || k.Dst[0] == 0xff || k.Src == ([16]byte{}) {
		return false
	}
	return true
}

// RuleCounter is one rule's (or a chain policy's) counters.
type RuleCounter struct {
	Chain   Chain
	Rule    int // -1: the chain's policy
	Comment string
	Packets uint64
	Bytes   uint64
}

// Counters returns every rule's packet and byte counters (summed over the
// workers), chain by chain, each chain's policy after its rules. It may
// run while workers evaluate; the sums are then a moment's snapshot.
func (rs *Ruleset) Counters() []RuleCounter {
	out := make([]RuleCounter, 0, rs.nIDs)
	for c := Chain(0); c < NumChains; c++ {
		ch := &rs.chains[c]
		for i := range ch.rules {
			r := &ch.rules[i]
			pk, by := rs.sum(r.id)
			out = append(out, RuleCounter{Chain: c, Rule: r.pos, Comment: r.comment, Packets: pk, Bytes: by})
		}
		pk, by := rs.sum(ch.policyID)
		out = append(out, RuleCounter{Chain: c, Rule: -1, Comment: "policy " + ch.policy.String(), Packets: pk, Bytes: by})
	}
	return out
}

// Counter returns one rule's counters (rule -1: the chain's policy).
func (rs *Ruleset) Counter(c Chain, rule int) (packets, bytes uint64) {
	if c >= NumChains {
		return 0, 0
	}
	ch := &rs.chains[c]
	if rule < 0 {
		return rs.sum(ch.policyID)
	}
	for i := range ch.rules {
		if ch.rules[i].pos == rule {
			return rs.sum(ch.rules[i].id)
		}
	}
	return 0, 0
}

func (rs *Ruleset) sum(id int) (pk, by uint64) {
	for w := 0; w <= rs.workers; w++ {
		c := &rs.counters[w*rs.stride+id]
		pk += c.pkts.Load()
		by += c.bytes.Load()
	}
	return pk, by
}

// Policy returns a chain's default policy.
func (rs *Ruleset) Policy(c Chain) Action {
	if c >= NumChains {
		return Drop
	}
	return rs.chains[c].policy
}

// NumRules returns the number of rules in a chain.
func (rs *Ruleset) NumRules(c Chain) int {
	if c >= NumChains {
		return 0
	}
	return len(rs.chains[c].rules)
}

// Defined reports whether the spec defined the chain (an undefined chain
// accepts everything).
func (rs *Ruleset) Defined(c Chain) bool { return c < NumChains && rs.chains[c].defined }

// Interfaces returns the interface names rules refer to (index = IIf/OIf).
func (rs *Ruleset) Interfaces() []string { return rs.ifnames }

package filter

import (
	"fmt"

	"github.com/tunrouter/router/conntrack"
)

// analyze warns about rules of a chain that can never match: rules that
// contradict themselves, and rules whose every packet an earlier terminal
// rule takes. The subset test is sound but not complete: it only claims
// "shadowed" when, match kind by match kind, the earlier rule's condition
// is known to include the later rule's (it may miss some shadowed rules,
// it never warns about a rule that can match).
func (c *compiler) analyze(ch Chain, chn *chain) {
	for j := range chn.rules {
		rj := &chn.rules[j]
		if why := rj.never(); why != "" {
			c.warns = append(c.warns, Warning{Chain: ch, Rule: rj.pos, ShadowedBy: -1, Msg: "rule can never match: " + why})
			continue
		}
		for i := 0; i < j; i++ {
			ri := &chn.rules[i]
			if !ri.action.Terminal() || ri.never() != "" || !covers(ri, rj) {
				continue
			}
			msg := fmt.Sprintf("rule can never match: an earlier %s rule takes every packet it could match", ri.action)
			if ri.need == 0 && ri.states == allStates && ri.fams == famAll {
				msg = fmt.Sprintf("rule can never match: it comes after an unconditional %s rule", ri.action)
			}
			c.warns = append(c.warns, Warning{Chain: ch, Rule: rj.pos, ShadowedBy: ri.pos, Msg: msg})
			break
		}
	}
}

// never returns why a rule cannot match any packet, or "".
func (r *rule) never() string {
	switch {
	case r.states == 0:
		return "its ct matches exclude every state (ct_direction, ct_status and ct_helper need a connection; ct_reason needs invalid)"
	case r.fams == 0:
		return "no address family is left (an empty set, or families that exclude each other)"
	case r.protoSet.empty():
		return "no protocol is left"
	case r.need&mDir != 0 && r.dirs == 0:
		return "no direction is left"
	case r.need&mIIf != 0 && r.iif.empty(), r.need&mOIf != 0 && r.oif.empty():
		return "no interface is left"
	case r.need&mICMPType != 0 && r.icmpType.empty(), r.need&mICMPCode != 0 && r.icmpCode.empty():
		return "no ICMP type or code is left"
	case r.need&mTCPFlags != 0 && r.tcpFlags.empty():
		return "no TCP flag combination is left"
	case r.need&mStatus != 0 && r.neg&mStatus == 0 && r.status == 0:
		return "no status bit is left"
	case r.need&mReason != 0 && r.reasons == [2]uint64{}:
		return "no INVALID reason is left"
	case r.need&mSAddr != 0 && r.neg&mSAddr == 0 && r.saddr.fams() == 0,
		r.need&mDAddr != 0 && r.neg&mDAddr == 0 && r.daddr.fams() == 0:
		return "an address set is empty"
	case r.need&mSPort != 0 && r.neg&mSPort == 0 && len(r.sport.ranges) == 0,
		r.need&mDPort != 0 && r.neg&mDPort == 0 && len(r.dport.ranges) == 0:
		return "a port set is empty"
	}
	return ""
}

// covers reports whether every packet rule b matches is matched by rule a.
func covers(a, b *rule) bool {
	if b.states&^a.states != 0 || b.fams&^a.fams != 0 || !b.protoSet.subsetOf(a.protoSet) {
		return false
	}
	n := a.need &^ mProto // protocols: compared through the effective sets
	if n&^b.need != 0 {
		return false
	}
	if n&mSAddr != 0 && !addrCovers(a.saddr, a.neg&mSAddr != 0, a.sfams, b.saddr, b.neg&mSAddr != 0, b.sfams) {
		return false
	}
	if n&mDAddr != 0 && !addrCovers(a.daddr, a.neg&mDAddr != 0, a.dfams, b.daddr, b.neg&mDAddr != 0, b.dfams) {
		return false
	}
	if n&mSPort != 0 && !portCovers(a.sport, a.neg&mSPort != 0, b.sport, b.neg&mSPort != 0) {
		return false
	}
	if n&mDPort != 0 && !portCovers(a.dport, a.neg&mDPort != 0, b.dport, b.neg&mDPort != 0) {
		return false
	}
	for _, bs := range [...]struct {
		bit  uint32
		a, b *bits256
	}{{mIIf, a.iif, b.iif}, {mOIf, a.oif, b.oif}, {mICMPType, a.icmpType, b.icmpType},
		{mICMPCode, a.icmpCode, b.icmpCode}, {mTCPFlags, a.tcpFlags, b.tcpFlags}} {
		if n&bs.bit != 0 && !bs.b.subsetOf(*bs.a) {
			return false
		}
	}
	if n&mDir != 0 && b.dirs&^a.dirs != 0 {
		return false
	}
	if n&mStatus != 0 && !statusCovers(a.status, a.neg&mStatus != 0, b.status, b.neg&mStatus != 0) {
		return false
	}
	if n&mReason != 0 && (b.reasons[0]&^a.reasons[0] != 0 || b.reasons[1]&^a.reasons[1] != 0) {
		return false
	}
	if n&mHelper != 0 && (a.ctHelper != b.ctHelper || a.neg&mHelper != b.neg&mHelper) {
		return false
	}
	return true
}

// addrCovers: is every address b matches (in the families it applies to)
// matched by a?
func addrCovers(a *addrSet, aneg bool, afams uint8, b *addrSet, bneg bool, bfams uint8) bool {
	if bfams&^afams != 0 {
		return false
	}
	switch {
	case !aneg && !bneg:
		return within4(b.v4, a.v4) && within6(b.v6, a.v6)
	case aneg && bneg:
		// not-in-B is inside not-in-A when A is inside B (per family b
		// applies to).
		return (bfams&famV4 == 0 || within4(a.v4, b.v4)) && (bfams&famV6 == 0 || within6(a.v6, b.v6))
	case aneg && !bneg:
		return disjoint4(a.v4, b.v4) && disjoint6(a.v6, b.v6)
	}
	return false
}

func portCovers(a *portSet, aneg bool, b *portSet, bneg bool) bool {
	switch {
	case !aneg && !bneg:
		return within16(b.ranges, a.ranges)
	case aneg && bneg:
		return within16(a.ranges, b.ranges)
	case aneg && !bneg:
		return disjoint16(a.ranges, b.ranges)
	}
	return false
}

// statusCovers compares "any of these bits" (or "none of them") matches.
func statusCovers(a conntrack.Status, aneg bool, b conntrack.Status, bneg bool) bool {
	switch {
	case !aneg && !bneg:
		return b&^a == 0
	case aneg && bneg:
		return a&^b == 0
	}
	return false
}

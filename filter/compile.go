package filter

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// Family classes (bits of rule.fams).
const (
	famV4    uint8 = 1
	famV6    uint8 = 2
	famOther uint8 = 4 // packets whose family could not be decoded
	famAll         = famV4 | famV6 | famOther
)

// Match kinds (bits of rule.need and rule.neg). The ct state and the family
// are always checked (rule.states, rule.fams).
const (
	mProto uint32 = 1 << iota
	mSAddr
	mDAddr
	mSPort
	mDPort
	mIIf
	mOIf
	mDir
	mStatus
	mReason
	mHelper
	mICMPType
	mICMPCode
	mTCPFlags
)

const (
	allStates = conntrack.StateNew | conntrack.StateEstablished | conntrack.StateRelated |
		conntrack.StateInvalid | conntrack.StateUntracked
	ctStates = conntrack.StateNew | conntrack.StateEstablished | conntrack.StateRelated
)

// maxInterfaces is the number of interface indexes a rule can name; bit
// 255 of an interface set stands for "no interface".
const maxInterfaces = 255

// ifNone is the interface-set bit for a packet without that interface.
const ifNone = 255

// rule is a compiled rule. The fields read while scanning rules come
// first and fill one 64-byte cache line.
type rule struct {
	need     uint32 // match kinds present besides state and family
	neg      uint32 // negated address/port/status/helper matches
	states   conntrack.State
	fams     uint8
	dirs     uint8 // bit 0: original, bit 1: reply
	action   Action
	log      bool
	sfams    uint8 // families the saddr match applies to
	dfams    uint8
	proto1   uint8 // the protocol, when protoOne
	protoOne bool  // the rule's protocols are exactly proto1
	// Single port ranges and a single input interface are kept inline.
	sportOne bool
	dportOne bool
	iifOne   bool
	s4One    bool // saddr is the one IPv4 range s4
	d4One    bool
	status   conntrack.Status
	sp, dp   range16
	iif1     int16
	s4, d4   range4
	saddr    *addrSet
	daddr    *addrSet
	sport    *portSet
	dport    *portSet

	protos    *bits256 // when mProto and not protoOne
	iif, oif  *bits256
	icmpType  *bits256
	icmpCode  *bits256
	tcpFlags  *bits256
	reasons   [2]uint64
	ctHelper  string
	protoSet  bits256 // effective protocols (explicit and implied)
	reject    rejectSpec
	helper    string
	logPrefix string
	logLevel  slog.Level
	id        int // counter index
	pos       int // index in the chain
	comment   string
}

// numIndexKeys is the number of (ct state, protocol class, family class)
// combinations of a chain's pre-index: 5 x 5 x 3. Each is further split
// by input interface class (see ifClasses).
const numIndexKeys = 5 * 5 * 3

// maxIfIndexed is the number of interfaces that get their own index class;
// packets from other interfaces (and without one) share one more class.
const maxIfIndexed = 7

// maxIndexEntries bounds a chain's index size; beyond it the interface
// dimension is not used.
const maxIndexEntries = 4 << 20

type chain struct {
	rules    []rule
	policy   Action
	policyID int
	// index[k] lists the rules that can match a packet of index key k
	// (see Eval), as a window into indexData.
	index     []struct{ off, n uint32 }
	indexData []uint16
	// ifIndexed interfaces (0..ifIndexed-1) have their own index class;
	// class ifIndexed holds every other input interface and none.
	ifIndexed int
	// dmask[i] has bit (port mod 64) set for every destination port rule
	// i can match (all bits when it has no positive dport match): Eval
	// skips a rule without touching it when the packet's bit is clear.
	dmask   []uint64
	defined bool
}

// Ruleset is a compiled, immutable rule set. All methods are safe for
// concurrent use; Eval's worker argument selects the caller's counter slot.
// Counters belong to the Ruleset: a reload (a new Ruleset) starts them at
// zero, while connection state, which lives in conntrack, is kept.
type Ruleset struct {
	chains  [NumChains]chain
	ifnames []string

	// Counters: (workers+1) slabs of stride entries; the last slab is for
	// out-of-range worker indexes and is updated with atomic adds.
	workers  int
	stride   int
	counters []counter
	nIDs     int
	ids      []counterID

	logLim   *rate.Limiter
	rejLim   *rate.Limiter
	logger   *slog.Logger
	now      func() time.Time
	suppress []paddedCount // per worker (+1), messages suppressed
	logState *logState
}

type counter struct{ pkts, bytes atomic.Uint64 }

type paddedCount struct {
	n atomic.Uint64
	_ [56]byte
}

type counterID struct {
	chain   Chain
	rule    int
	comment string
}

// compiler holds the state of one Compile call.
type compiler struct {
	spec     *Spec
	errs     Errors
	warns    []Warning
	ifIndex  map[string]int
	helpers  map[string]bool
	sets     map[string]*compiledSet
	setOrder []string
}

type compiledSet struct {
	spec     *SetSpec
	kind     setKind
	addr     *addrSet
	port     *portSet
	state    uint8 // 0 new, 1 resolving, 2 done
	hasError bool
}

type setKind uint8

const (
	setEmpty setKind = iota
	setAddr
	setPort
)

func (k setKind) plural() string {
	switch k {
	case setAddr:
		return "addresses"
	case setPort:
		return "ports"
	}
	return "nothing"
}

func (c *compiler) errorf(ch Chain, ruleIdx int, field string, elem int, format string, args ...any) {
	c.errs = append(c.errs, &Error{Chain: ch, Rule: ruleIdx, Field: field, Elem: elem, Msg: fmt.Sprintf(format, args...)})
}

func (c *compiler) setErrorf(set string, elem int, format string, args ...any) {
	c.errs = append(c.errs, &Error{Set: set, Rule: -1, Field: FieldElems, Elem: elem, Msg: fmt.Sprintf(format, args...)})
}

// Compile validates spec and compiles it into a Ruleset. On failure the
// error is Errors (every problem found). Warnings name rules that can never
// match.
func Compile(spec Spec) (*Ruleset, []Warning, error) {
	c := &compiler{spec: &spec, ifIndex: map[string]int{}, helpers: map[string]bool{}, sets: map[string]*compiledSet{}}
	if len(spec.Interfaces) > maxInterfaces {
		c.errorf(NumChains, -1, "interfaces", -1, "%d interfaces; at most %d are supported", len(spec.Interfaces), maxInterfaces)
	}
	for i, n := range spec.Interfaces {
		if _, dup := c.ifIndex[n]; dup || n == "" {
			c.errorf(NumChains, -1, "interfaces", i, "interface name %q is empty or repeated", n)
			continue
		}
		c.ifIndex[n] = i
	}
	for _, h := range spec.Helpers {
		c.helpers[h] = true
	}
	c.compileSets()

	rs := &Ruleset{ifnames: slices.Clone(spec.Interfaces)}
	var seen [NumChains]bool
	id := 0
	for ci := range spec.Chains {
		cs := &spec.Chains[ci]
		if cs.Chain >= NumChains {
			c.errorf(NumChains, -1, "chains", ci, "unknown chain %d", cs.Chain)
			continue
		}
		if seen[cs.Chain] {
			c.errorf(cs.Chain, -1, "", -1, "chain %s is defined twice", cs.Chain)
			continue
		}
		seen[cs.Chain] = true
		ch := &rs.chains[cs.Chain]
		ch.defined = true
		switch cs.Policy {
		case "", "accept":
			ch.policy = Accept
		case "drop":
			ch.policy = Drop
		default:
			c.errorf(cs.Chain, -1, FieldPolicy, -1, "unknown policy %q (want accept or drop)", cs.Policy)
		}
		if len(cs.Rules) > 65535 {
			c.errorf(cs.Chain, -1, "rules", -1, "%d rules; at most 65535 per chain", len(cs.Rules))
			continue
		}
		ch.rules = make([]rule, 0, len(cs.Rules))
		for ri := range cs.Rules {
			r, ok := c.compileRule(cs.Chain, ri, &cs.Rules[ri])
			if !ok {
				continue
			}
			r.id = id
			id++
			rs.ids = append(rs.ids, counterID{cs.Chain, ri, r.comment})
			ch.rules = append(ch.rules, r)
		}
	}
	if len(c.errs) > 0 {
		return nil, nil, c.errs
	}
	for ci := range rs.chains {
		ch := &rs.chains[ci]
		ch.policyID = id
		id++
		rs.ids = append(rs.ids, counterID{Chain(ci), -1, "policy"})
		ch.buildIndex(len(spec.Interfaces))
		c.analyze(Chain(ci), ch)
	}
	rs.nIDs = id
	rs.initRuntime(&spec)
	return rs, c.warns, nil
}

func (rs *Ruleset) initRuntime(spec *Spec) {
	rs.workers = max(spec.Workers, 1)
	// Round each worker's slab up to whole 64-byte lines (4 counters) and
	// add one line of padding so that no line holds two workers' counters.
	rs.stride = (rs.nIDs+3)/4*4 + 4
	rs.counters = make([]counter, (rs.workers+1)*rs.stride)
	rs.suppress = make([]paddedCount, rs.workers+1)
	rs.logger = spec.Logger
	rs.now = spec.now
	if rs.now == nil {
		rs.now = time.Now
	}
	rs.logLim = newLimiter(spec.LogRate, spec.LogBurst, DefaultLogRate, DefaultLogBurst)
	rs.rejLim = newLimiter(spec.RejectRate, spec.RejectBurst, DefaultRejectRate, DefaultRejectBurst)
	rs.logState = &logState{}
}

func newLimiter(r float64, burst int, defRate float64, defBurst int) *rate.Limiter {
	if r < 0 {
		return nil
	}
	if r == 0 {
		r = defRate
	}
	if burst <= 0 {
		burst = defBurst
	}
	return rate.NewLimiter(rate.Limit(r), burst)
}

// compileSets resolves named sets (which may reference each other).
func (c *compiler) compileSets() {
	for i := range c.spec.Sets {
		s := &c.spec.Sets[i]
		if !validSetName(s.Name) {
			c.errs = append(c.errs, &Error{Set: s.Name, Rule: -1, Elem: -1, Msg: fmt.Sprintf("invalid set name %q (use letters, digits, '_' and '-')", s.Name)})
			continue
		}
		if _, dup := c.sets[s.Name]; dup {
			c.errs = append(c.errs, &Error{Set: s.Name, Rule: -1, Elem: -1, Msg: fmt.Sprintf("set %q is defined twice", s.Name)})
			continue
		}
		c.sets[s.Name] = &compiledSet{spec: s}
		c.setOrder = append(c.setOrder, s.Name)
	}
	for _, n := range c.setOrder {
		c.resolveSet(c.sets[n])
	}
}

func validSetName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// looksLikePort reports whether s is made of digits and at most one '-'
// (a port or a port range) rather than an address.
func looksLikePort(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r == '-' || r == ' ') {
			return false
		}
	}
	return true
}

func (c *compiler) resolveSet(cs *compiledSet) {
	switch cs.state {
	case 2:
		return
	case 1:
		cs.hasError = true
		return
	}
	cs.state = 1
	name := cs.spec.Name
	var ab addrBuilder
	var ports []range16
	for i, raw := range cs.spec.Elems {
		e := strings.TrimSpace(raw)
		if strings.HasPrefix(e, "!") {
			c.setErrorf(name, i, "set elements cannot be negated; negate the match that uses the set (\"!@%s\")", name)
			cs.hasError = true
			continue
		}
		var kind setKind
		if ref, ok := strings.CutPrefix(e, "@"); ok {
			other, found := c.sets[ref]
			if !found {
				c.setErrorf(name, i, "unknown set @%s", ref)
				cs.hasError = true
				continue
			}
			c.resolveSet(other)
			if other.state == 1 || other == cs {
				c.setErrorf(name, i, "set @%s refers to itself (through @%s)", name, ref)
				cs.hasError = true
				continue
			}
			if other.hasError {
				cs.hasError = true
				continue
			}
			kind = other.kind
			switch kind {
			case setAddr:
				ab.addSet(other.addr)
			case setPort:
				ports = append(ports, other.port.ranges...)
			}
		} else if looksLikePort(e) {
			r, err := parsePort(e)
			if err != nil {
				c.setErrorf(name, i, "%v", err)
				cs.hasError = true
				continue
			}
			kind = setPort
			ports = append(ports, r)
		} else {
			if err := parseAddr(e, &ab); err != nil {
				c.setErrorf(name, i, "%v", err)
				cs.hasError = true
				continue
			}
			kind = setAddr
		}
		if kind == setEmpty {
			continue
		}
		if cs.kind != setEmpty && kind != cs.kind {
			c.setErrorf(name, i, "set @%s mixes addresses and ports (element %q is one of the %s, earlier ones are %s)", name, e, kind.plural(), cs.kind.plural())
			cs.hasError = true
			continue
		}
		cs.kind = kind
	}
	cs.addr = ab.build()
	cs.port = buildPortSet(ports)
	cs.state = 2
}

// elemsNeg checks the all-or-none negation rule of a list and returns the
// elements without "!".
func (c *compiler) elemsNeg(ch Chain, ri int, field string, elems []string) ([]string, bool, bool) {
	out := make([]string, len(elems))
	neg := false
	ok := true
	for i, e := range elems {
		v, n := splitNeg(e)
		if i == 0 {
			neg = n
		} else if n != neg {
			c.errorf(ch, ri, field, i, "list mixes negated and plain elements: write all of them as \"!x\" (matches none of them) or none")
			ok = false
		}
		if v == "" {
			c.errorf(ch, ri, field, i, "empty value")
			ok = false
		}
		out[i] = v
	}
	return out, neg, ok
}

// addrMatch compiles an address list.
func (c *compiler) addrMatch(ch Chain, ri int, field string, elems []string) (*addrSet, bool, bool) {
	vals, neg, ok := c.elemsNeg(ch, ri, field, elems)
	if !ok {
		return nil, false, false
	}
	if len(vals) == 1 && strings.HasPrefix(vals[0], "@") {
		s, ok := c.setRef(ch, ri, field, 0, vals[0], setAddr)
		if !ok {
			return nil, false, false
		}
		return s.addr, neg, true
	}
	var ab addrBuilder
	for i, v := range vals {
		if strings.HasPrefix(v, "@") {
			s, sok := c.setRef(ch, ri, field, i, v, setAddr)
			if sok {
				ab.addSet(s.addr)
			} else {
				ok = false
			}
			continue
		}
		if err := parseAddr(v, &ab); err != nil {
			c.errorf(ch, ri, field, i, "%v", err)
			ok = false
		}
	}
	return ab.build(), neg, ok
}

func (c *compiler) portMatch(ch Chain, ri int, field string, elems []string) (*portSet, bool, bool) {
	vals, neg, ok := c.elemsNeg(ch, ri, field, elems)
	if !ok {
		return nil, false, false
	}
	if len(vals) == 1 && strings.HasPrefix(vals[0], "@") {
		s, ok := c.setRef(ch, ri, field, 0, vals[0], setPort)
		if !ok {
			return nil, false, false
		}
		return s.port, neg, true
	}
	var rs []range16
	for i, v := range vals {
		if strings.HasPrefix(v, "@") {
			s, sok := c.setRef(ch, ri, field, i, v, setPort)
			if sok {
				rs = append(rs, s.port.ranges...)
			} else {
				ok = false
			}
			continue
		}
		r, err := parsePort(v)
		if err != nil {
			c.errorf(ch, ri, field, i, "%v", err)
			ok = false
			continue
		}
		rs = append(rs, r)
	}
	return buildPortSet(rs), neg, ok
}

func (c *compiler) setRef(ch Chain, ri int, field string, i int, v string, want setKind) (*compiledSet, bool) {
	name := v[1:]
	s, found := c.sets[name]
	if !found {
		c.errorf(ch, ri, field, i, "unknown set @%s%s", name, suggest(name, c.setOrder))
		return nil, false
	}
	if s.hasError {
		c.errorf(ch, ri, field, i, "set @%s has errors", name)
		return nil, false
	}
	if s.kind != setEmpty && s.kind != want {
		c.errorf(ch, ri, field, i, "set @%s holds %s, but %s needs %s", name, s.kind.plural(), field, want.plural())
		return nil, false
	}
	return s, true
}

// byteMatch compiles a list of byte values (ICMP types and codes,
// protocols, interfaces) with negation folded in.
func (c *compiler) byteMatch(ch Chain, ri int, field string, elems []string, parse func(string) (uint8, error)) (bits256, bool) {
	vals, neg, ok := c.elemsNeg(ch, ri, field, elems)
	if !ok {
		return bits256{}, false
	}
	var b bits256
	for i, v := range vals {
		x, err := parse(v)
		if err != nil {
			c.errorf(ch, ri, field, i, "%v", err)
			ok = false
			continue
		}
		b.set(x)
	}
	if neg {
		b = b.not()
	}
	return b, ok
}

// expandCommas splits comma-separated elements ("established,related") of
// a list into one element each, remembering the original index for errors.
func expandCommas(elems []string) (vals []string, idx []int) {
	for i, e := range elems {
		v, neg := splitNeg(e)
		for _, p := range splitList(v) {
			if neg {
				p = "!" + p
			}
			vals = append(vals, p)
			idx = append(idx, i)
		}
		if len(splitList(v)) == 0 {
			vals = append(vals, e)
			idx = append(idx, i)
		}
	}
	return vals, idx
}

func (c *compiler) compileRule(ch Chain, ri int, rs *RuleSpec) (rule, bool) {
	nerr := len(c.errs)
	r := rule{states: allStates, fams: famAll, protoSet: allBits(), pos: ri, comment: rs.Comment}
	if strings.ContainsAny(rs.Comment, "\n\r") {
		c.errorf(ch, ri, FieldComment, -1, "comment must be one line")
	}

	rc := &ruleCompiler{c: c, ch: ch, ri: ri, rs: rs, r: &r}
	rc.familyProto()
	rc.addrPortIface()
	rc.conntrack()
	rc.icmpFlags()
	pspec := rc.pspec

	// Families implied by the addresses.
	if r.need&mSAddr != 0 {
		c.addrFams(ch, ri, &r, FieldSAddr, r.sfams, len(rs.Family) > 0)
	}
	if r.need&mDAddr != 0 {
		c.addrFams(ch, ri, &r, FieldDAddr, r.dfams, len(rs.Family) > 0)
	}
	const packetMatches = mSAddr | mDAddr | mSPort | mDPort | mICMPType | mICMPCode | mTCPFlags
	if r.need&packetMatches != 0 || pspec.explicit || len(rs.Family) > 0 {
		// Anything that reads the packet needs a decoded family.
		r.fams &^= famOther
	}
	if r.protoSet != allBits() {
		r.need |= mProto
		if n, one := singleBit(r.protoSet); one {
			r.proto1, r.protoOne = n, true
		} else {
			ps := r.protoSet
			r.protos = &ps
		}
	}

	// Inline copies for the common single-value matches.
	if r.need&mSPort != 0 && len(r.sport.ranges) == 1 && r.sport.bitmap == nil {
		r.sportOne, r.sp = true, r.sport.ranges[0]
	}
	if r.need&mDPort != 0 && len(r.dport.ranges) == 1 && r.dport.bitmap == nil {
		r.dportOne, r.dp = true, r.dport.ranges[0]
	}
	if r.need&mSAddr != 0 && len(r.saddr.v4) == 1 && len(r.saddr.v6) == 0 {
		r.s4One, r.s4 = true, r.saddr.v4[0]
	}
	if r.need&mDAddr != 0 && len(r.daddr.v4) == 1 && len(r.daddr.v6) == 0 {
		r.d4One, r.d4 = true, r.daddr.v4[0]
	}
	if r.need&mIIf != 0 {
		if i, one := singleBit(*r.iif); one && i != ifNone {
			r.iifOne, r.iif1 = true, int16(i)
		}
	}

	// Action.
	c.compileAction(ch, ri, rs, &r)
	return r, len(c.errs) == nerr
}

// ruleCompiler compiles the matches of one rule.
type ruleCompiler struct {
	c     *compiler
	ch    Chain
	ri    int
	rs    *RuleSpec
	r     *rule
	pspec protoSpec
}

func (rc *ruleCompiler) needCt(field string) {
	if rc.ch == Prerouting {
		rc.c.errorf(rc.ch, rc.ri, field, -1, "%s needs connection tracking, but prerouting runs before it (use the forward or input chain)", field)
	}
}

// familyProto compiles family and proto.
func (rc *ruleCompiler) familyProto() {
	c, ch, ri, rs, r, pspec := rc.c, rc.ch, rc.ri, rc.rs, rc.r, &rc.pspec
	if len(rs.Family) > 0 {
		vals, neg, ok := c.elemsNeg(ch, ri, FieldFamily, rs.Family)
		var f uint8
		for i, v := range vals {
			switch strings.ToLower(v) {
			case "ip", "ip4", "ipv4":
				f |= famV4
			case "ip6", "ipv6":
				f |= famV6
			case "inet":
				f |= famV4 | famV6
			default:
				c.errorf(ch, ri, FieldFamily, i, "unknown family %q (want ip or ip6)", v)
				ok = false
			}
		}
		if ok {
			if neg {
				f = (famV4 | famV6) &^ f
			}
			r.fams &= f
		}
	}

	// Protocol.
	if len(rs.Proto) > 0 {
		pspec.explicit = true
		vals, neg, ok := c.elemsNeg(ch, ri, FieldProto, rs.Proto)
		pspec.neg = neg
		var b bits256
		for i, v := range vals {
			p, err := parseProto(strings.ToLower(v))
			if err != nil {
				c.errorf(ch, ri, FieldProto, i, "%v", err)
				ok = false
				continue
			}
			b.set(uint8(p))
			pspec.protos = append(pspec.protos, p)
			pspec.elems = append(pspec.elems, i)
		}
		if ok {
			if neg {
				b = b.not()
			}
			r.protoSet = b
		}
	}

}

// addrPortIface compiles saddr, daddr, sport, dport, iif and oif.
func (rc *ruleCompiler) addrPortIface() {
	c, ch, ri, rs, r, pspec := rc.c, rc.ch, rc.ri, rc.rs, rc.r, &rc.pspec
	if len(rs.SAddr) > 0 {
		s, neg, ok := c.addrMatch(ch, ri, FieldSAddr, rs.SAddr)
		if ok {
			r.saddr, r.need = s, r.need|mSAddr
			r.sfams = matchFams(s, neg)
			if neg {
				r.neg |= mSAddr
			}
		}
	}
	if len(rs.DAddr) > 0 {
		s, neg, ok := c.addrMatch(ch, ri, FieldDAddr, rs.DAddr)
		if ok {
			r.daddr, r.need = s, r.need|mDAddr
			r.dfams = matchFams(s, neg)
			if neg {
				r.neg |= mDAddr
			}
		}
	}

	// Ports.
	portProtos := bitsOf(uint8(packet.TCP), uint8(packet.UDP), uint8(packet.UDPLite), uint8(packet.SCTP))
	for _, pf := range []struct {
		field string
		elems []string
		bit   uint32
		dst   **portSet
	}{{FieldSPort, rs.SPort, mSPort, &r.sport}, {FieldDPort, rs.DPort, mDPort, &r.dport}} {
		if len(pf.elems) == 0 {
			continue
		}
		s, neg, ok := c.portMatch(ch, ri, pf.field, pf.elems)
		if !ok {
			continue
		}
		*pf.dst, r.need = s, r.need|pf.bit
		if neg {
			r.neg |= pf.bit
		}
		c.implyProto(ch, ri, r, pf.field, portProtos, pspec, "a protocol with ports (tcp, udp, udplite, sctp)")
	}

	// Interfaces.
	ifParse := func(s string) (uint8, error) {
		if i, ok := c.ifIndex[s]; ok {
			return uint8(i), nil
		}
		return 0, fmt.Errorf("unknown interface %q%s", s, suggest(s, c.spec.Interfaces))
	}
	if len(rs.IIf) > 0 {
		if ch == Output {
			c.errorf(ch, ri, FieldIIf, -1, "iif is not known in the output chain (packets the router sends have no input interface)")
		} else if b, ok := c.byteMatch(ch, ri, FieldIIf, rs.IIf, ifParse); ok {
			r.iif, r.need = &b, r.need|mIIf
		}
	}
	if len(rs.OIf) > 0 {
		switch ch {
		case Prerouting:
			c.errorf(ch, ri, FieldOIf, -1, "oif is not known in prerouting (routing has not happened yet)")
		case Input:
			c.errorf(ch, ri, FieldOIf, -1, "oif is not known in the input chain (the packet is for the router itself)")
		default:
			if b, ok := c.byteMatch(ch, ri, FieldOIf, rs.OIf, ifParse); ok {
				r.oif, r.need = &b, r.need|mOIf
			}
		}
	}
}

// conntrack compiles the ct_* matches.
func (rc *ruleCompiler) conntrack() {
	c, ch, ri, rs, r := rc.c, rc.ch, rc.ri, rc.rs, rc.r
	if len(rs.CtState) > 0 {
		rc.needCt(FieldCtState)
		vals, idx := expandCommas(rs.CtState)
		var st conntrack.State
		neg := false
		for k, v := range vals {
			name, n := splitNeg(v)
			if k == 0 {
				neg = n
			} else if n != neg {
				c.errorf(ch, ri, FieldCtState, idx[k], "list mixes negated and plain states")
			}
			s, ok := conntrack.ParseState(strings.ToLower(name))
			if !ok {
				c.errorf(ch, ri, FieldCtState, idx[k], "unknown ct state %q (want new, established, related, invalid, untracked)", name)
				continue
			}
			st |= s
		}
		if neg {
			st = allStates &^ st
		}
		r.states &= st
	}
	if rs.CtDirection != "" {
		rc.needCt(FieldCtDirection)
		v, neg := splitNeg(rs.CtDirection)
		switch strings.ToLower(v) {
		case "original":
			r.dirs = 1
		case "reply":
			r.dirs = 2
		default:
			c.errorf(ch, ri, FieldCtDirection, -1, "unknown ct direction %q (want original or reply)", v)
		}
		if neg {
			r.dirs ^= 3
		}
		r.need |= mDir
	}
	if len(rs.CtStatus) > 0 {
		rc.needCt(FieldCtStatus)
		vals, idx := expandCommas(rs.CtStatus)
		neg := false
		for k, v := range vals {
			name, n := splitNeg(v)
			if k == 0 {
				neg = n
			} else if n != neg {
				c.errorf(ch, ri, FieldCtStatus, idx[k], "list mixes negated and plain status bits")
			}
			s, ok := conntrack.ParseStatus(strings.ToLower(name))
			if !ok {
				c.errorf(ch, ri, FieldCtStatus, idx[k], "unknown ct status %q (want assured, expected, seen-reply, confirmed, snat, dnat, seq-adjust, dying, fixed-timeout, helper)", name)
				continue
			}
			r.status |= s
		}
		if neg {
			r.neg |= mStatus
		}
		r.need |= mStatus
	}
	if len(rs.CtReason) > 0 {
		rc.needCt(FieldCtReason)
		vals, neg, ok := c.elemsNeg(ch, ri, FieldCtReason, rs.CtReason)
		if ok {
			var set [2]uint64
			for i, v := range vals {
				reason, found := conntrack.ParseReason(v)
				if !found {
					c.errorf(ch, ri, FieldCtReason, i, "unknown INVALID reason %q%s", v, suggest(v, reasonTexts()))
					continue
				}
				set[reason>>6] |= 1 << (reason & 63)
			}
			if neg {
				set = [2]uint64{^set[0], ^set[1]}
			}
			r.reasons = set
			r.need |= mReason
			r.states &= conntrack.StateInvalid
		}
	}
	if rs.CtHelper != "" {
		rc.needCt(FieldCtHelper)
		v, neg := splitNeg(rs.CtHelper)
		if !c.helpers[v] {
			c.errorf(ch, ri, FieldCtHelper, -1, "unknown helper %q%s", v, knownList(c.spec.Helpers))
		}
		r.ctHelper = v
		r.need |= mHelper
		if neg {
			r.neg |= mHelper
		}
	}
	if r.need&(mDir|mStatus|mHelper) != 0 {
		// These need a connection: INVALID and UNTRACKED packets have none.
		r.states &= ctStates
	}

}

// icmpFlags compiles the ICMP and TCP flag matches.
func (rc *ruleCompiler) icmpFlags() {
	c, ch, ri, rs, r, pspec := rc.c, rc.ch, rc.ri, rc.rs, rc.r, &rc.pspec
	icmp4 := len(rs.ICMPType) > 0 || len(rs.ICMPCode) > 0
	icmp6 := len(rs.ICMPv6Type) > 0 || len(rs.ICMPv6Code) > 0
	if icmp4 && icmp6 {
		f := FieldICMPv6Type
		if len(rs.ICMPv6Type) == 0 {
			f = FieldICMPv6Code
		}
		c.errorf(ch, ri, f, -1, "a rule cannot match both icmp and icmpv6 fields (a packet is one or the other; write two rules)")
	} else {
		type bf struct {
			field string
			elems []string
			names map[string]uint8
			what  string
			dst   **bits256
			bit   uint32
		}
		var fields []bf
		var proto packet.Proto
		var fam uint8
		if icmp4 {
			proto, fam = packet.ICMP, famV4
			fields = []bf{{FieldICMPType, rs.ICMPType, icmpTypeNames, "icmp type", &r.icmpType, mICMPType},
				{FieldICMPCode, rs.ICMPCode, icmpCodeNames, "icmp code", &r.icmpCode, mICMPCode}}
		} else if icmp6 {
			proto, fam = packet.ICMPv6, famV6
			fields = []bf{{FieldICMPv6Type, rs.ICMPv6Type, icmpv6TypeNames, "icmpv6 type", &r.icmpType, mICMPType},
				{FieldICMPv6Code, rs.ICMPv6Code, icmpv6CodeNames, "icmpv6 code", &r.icmpCode, mICMPCode}}
		}
		for _, f := range fields {
			if len(f.elems) == 0 {
				continue
			}
			names := f.names
			what := f.what
			b, ok := c.byteMatch(ch, ri, f.field, f.elems, func(s string) (uint8, error) {
				return parseByteName(strings.ToLower(s), names, what)
			})
			if !ok {
				continue
			}
			*f.dst, r.need = &b, r.need|f.bit
			c.implyProto(ch, ri, r, f.field, bitsOf(uint8(proto)), pspec, proto.String())
			if r.fams&fam == 0 && len(rs.Family) > 0 {
				c.errorf(ch, ri, f.field, -1, "%s matches %s packets, but the rule's family excludes them", f.field, proto)
			}
			r.fams &= fam
		}
	}

	// TCP flags.
	if rs.TCPFlags != "" {
		b, err := parseTCPFlags(rs.TCPFlags)
		if err != nil {
			c.errorf(ch, ri, FieldTCPFlags, -1, "%v", err)
		} else {
			r.tcpFlags, r.need = &b, r.need|mTCPFlags
			c.implyProto(ch, ri, r, FieldTCPFlags, bitsOf(uint8(packet.TCP)), pspec, "tcp")
		}
	}

}

func matchFams(s *addrSet, neg bool) uint8 {
	f := s.fams()
	if neg && f == 0 {
		// "Not in an empty set" matches every IP packet.
		f = famV4 | famV6
	}
	return f
}

func (c *compiler) addrFams(ch Chain, ri int, r *rule, field string, f uint8, explicit bool) {
	if f == 0 {
		// An empty set: the rule can never match; analyze() warns.
		r.fams = 0
		return
	}
	if explicit && r.fams&f == 0 {
		c.errorf(ch, ri, field, -1, "%s has only %s entries, but the rule's family is %s", field, famName(f), famName(r.fams&^famOther))
		return
	}
	if r.fams&(famV4|famV6) != 0 && r.fams&f == 0 {
		c.errorf(ch, ri, field, -1, "%s has only %s entries, but the rule's other matches need %s packets", field, famName(f), famName(r.fams&^famOther))
		return
	}
	r.fams &= f
}

func famName(f uint8) string {
	switch f & (famV4 | famV6) {
	case famV4:
		return "IPv4"
	case famV6:
		return "IPv6"
	case famV4 | famV6:
		return "IPv4 and IPv6"
	}
	return "no"
}

// singleBit returns the only member of b, if it has exactly one.
func singleBit(b bits256) (uint8, bool) {
	n, at := 0, 0
	for i := 0; i < 256; i++ {
		if b.has(uint8(i)) {
			n++
			at = i
		}
	}
	return uint8(at), n == 1
}

func bitsOf(vals ...uint8) bits256 {
	var b bits256
	for _, v := range vals {
		b.set(v)
	}
	return b
}

// protoSpec is a rule's explicit proto list.
type protoSpec struct {
	explicit bool
	neg      bool
	protos   []packet.Proto
	elems    []int // index of each protocol in the proto list
}

// implyProto narrows the rule's protocols to those a match needs, and
// reports explicit protocols the match cannot apply to.
func (c *compiler) implyProto(ch Chain, ri int, r *rule, field string, need bits256, ps *protoSpec, what string) {
	if ps.explicit && !ps.neg {
		for i, p := range ps.protos {
			if !need.has(uint8(p)) {
				c.errorf(ch, ri, FieldProto, ps.elems[i], "proto %s conflicts with %s, which needs %s", p, field, what)
			}
		}
	}
	r.protoSet = r.protoSet.and(need)
}

func (c *compiler) compileAction(ch Chain, ri int, rs *RuleSpec, r *rule) {
	if rs.Action == "" {
		c.errorf(ch, ri, FieldAction, -1, "missing action (want accept, drop, reject, notrack, helper, continue, counter or log)")
		return
	}
	a, ok := ParseAction(strings.ToLower(rs.Action))
	if !ok {
		c.errorf(ch, ri, FieldAction, -1, "unknown action %q (want accept, drop, reject, notrack, helper, continue, counter or log)", rs.Action)
		return
	}
	r.action = a
	r.log = rs.Log || rs.LogPrefix != "" || strings.EqualFold(rs.Action, "log")
	switch a {
	case Notrack, Helper:
		if ch != Prerouting {
			c.errorf(ch, ri, FieldAction, -1, "action %s is only valid in the prerouting chain (it must run before connection tracking)", a)
		}
	case Reject:
		if ch == Prerouting {
			c.errorf(ch, ri, FieldAction, -1, "action reject is not available in prerouting (use drop, or reject in the forward or input chain)")
		}
	}
	if a == Helper {
		switch {
		case rs.Helper == "":
			c.errorf(ch, ri, FieldHelper, -1, "action helper needs a helper name (helper = \"ftp\")")
		case !c.helpers[rs.Helper]:
			c.errorf(ch, ri, FieldHelper, -1, "unknown helper %q%s", rs.Helper, knownList(c.spec.Helpers))
		}
		r.helper = rs.Helper
	} else if rs.Helper != "" {
		c.errorf(ch, ri, FieldHelper, -1, "helper is only valid with action = \"helper\" (this rule's action is %s)", a)
	}
	if a == Reject {
		rj, err := parseReject(strings.ToLower(rs.RejectWith))
		if err != nil {
			c.errorf(ch, ri, FieldRejectWith, -1, "%v", err)
		} else if rj.tcp && r.protoSet != bitsOf(uint8(packet.TCP)) {
			c.errorf(ch, ri, FieldRejectWith, -1, "reject_with tcp-reset needs proto = \"tcp\" (only TCP segments can be answered with a reset)")
		}
		r.reject = rj
	} else if rs.RejectWith != "" {
		c.errorf(ch, ri, FieldRejectWith, -1, "reject_with is only valid with action = \"reject\" (this rule's action is %s)", a)
	}
	if len(rs.LogPrefix) > 128 {
		c.errorf(ch, ri, FieldLogPrefix, -1, "log_prefix is %d bytes long; at most 128", len(rs.LogPrefix))
	}
	for _, b := range []byte(rs.LogPrefix) {
		if b < 0x20 || b == 0x7f {
			c.errorf(ch, ri, FieldLogPrefix, -1, "log_prefix contains a control character")
			break
		}
	}
	r.logPrefix = rs.LogPrefix
	lvl, err := parseLogLevel(rs.LogLevel)
	if err != nil {
		c.errorf(ch, ri, FieldLogLevel, -1, "%v", err)
	}
	r.logLevel = lvl
}

package filter

import (
	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// The pre-index: for each chain and each combination of (ct state class,
// protocol class, family class, input interface class) the list of rules
// that can match such a packet, in order. Eval scans only that list, and
// skips without reading them the rules whose destination ports cannot
// match (chain.dmask).

// dportMask returns the rule's destination-port pre-filter (see
// chain.dmask).
func (r *rule) dportMask() uint64 {
	if r.need&mDPort == 0 || r.neg&mDPort != 0 {
		return ^uint64(0)
	}
	var m uint64
	for _, x := range r.dport.ranges {
		if int(x.hi)-int(x.lo) >= 63 {
			return ^uint64(0)
		}
		for p := int(x.lo); p <= int(x.hi); p++ {
			m |= 1 << (p & 63)
		}
	}
	return m
}

// Index keys.

var stateClasses = [5]conntrack.State{
	conntrack.StateNew, conntrack.StateEstablished, conntrack.StateRelated,
	conntrack.StateInvalid, conntrack.StateUntracked,
}

var famClasses = [3]uint8{famV4, famV6, famOther}

// protoClass returns the index class of a protocol.
func protoClass(p packet.Proto) int {
	switch p {
	case packet.TCP:
		return 0
	case packet.UDP:
		return 1
	case packet.ICMP:
		return 2
	case packet.ICMPv6:
		return 3
	}
	return 4
}

// Lookup tables for Eval: the protocol class of each protocol, the state
// bit and state class of each ctinfo value.
var (
	protoClassOf [256]uint8
	ctStateOf    [256]conntrack.State
	ctClassOf    [256]uint8
)

func init() {
	for i := range 256 {
		protoClassOf[i] = uint8(protoClass(packet.Proto(i)))
		ctStateOf[i] = conntrack.CtInfo(i).State()
		ctClassOf[i] = uint8(stateClass(ctStateOf[i]))
	}
}

func stateClass(s conntrack.State) int {
	switch s {
	case conntrack.StateNew:
		return 0
	case conntrack.StateEstablished:
		return 1
	case conntrack.StateRelated:
		return 2
	case conntrack.StateInvalid:
		return 3
	}
	return 4
}

func famClass(f uint8) int {
	switch f {
	case famV4:
		return 0
	case famV6:
		return 1
	}
	return 2
}

func indexKey(state, proto, fam int) int { return (state*5+proto)*3 + fam }

// protoClassBits are the protocols of each class.
var protoClassBits = func() [5]bits256 {
	var out [5]bits256
	for p := 0; p < 256; p++ {
		out[protoClass(packet.Proto(p))].set(uint8(p))
	}
	return out
}()

func (ch *chain) buildIndex(nIfaces int) {
	ch.ifIndexed = min(nIfaces, maxIfIndexed)
	if numIndexKeys*(ch.ifIndexed+1)*len(ch.rules) > maxIndexEntries {
		ch.ifIndexed = 0
	}
	nIfc := ch.ifIndexed + 1
	// The input interfaces of the last class: those not indexed, and none.
	var rest bits256
	for i := ch.ifIndexed; i < 256; i++ {
		rest.set(uint8(i))
	}
	ch.dmask = make([]uint64, len(ch.rules))
	for i := range ch.rules {
		ch.dmask[i] = ch.rules[i].dportMask()
	}
	ch.index = make([]struct{ off, n uint32 }, numIndexKeys*nIfc)
	for s := range stateClasses {
		for p := range protoClassBits {
			for f := range famClasses {
				for ifc := 0; ifc < nIfc; ifc++ {
					k := indexKey(s, p, f)*nIfc + ifc
					ch.index[k].off = uint32(len(ch.indexData))
					for i := range ch.rules {
						r := &ch.rules[i]
						if r.states&stateClasses[s] == 0 || r.fams&famClasses[f] == 0 ||
							r.protoSet.and(protoClassBits[p]).empty() {
							continue
						}
						if r.need&mIIf != 0 {
							if ifc < ch.ifIndexed && !r.iif.has(uint8(ifc)) ||
								ifc == ch.ifIndexed && r.iif.and(rest).empty() {
								continue
							}
						}
						ch.indexData = append(ch.indexData, uint16(i))
					}
					ch.index[k].n = uint32(len(ch.indexData)) - ch.index[k].off
				}
			}
		}
	}
}

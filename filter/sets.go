package filter

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// bits256 is a set of byte values: protocols, ICMP types and codes, TCP
// flag combinations, interface indexes (bit 255: no interface).
type bits256 [4]uint64

func (b *bits256) set(i uint8)      { b[i>>6] |= 1 << (i & 63) }
func (b *bits256) has(i uint8) bool { return b[i>>6]&(1<<(i&63)) != 0 }

func (b bits256) not() bits256 { return bits256{^b[0], ^b[1], ^b[2], ^b[3]} }

func (b bits256) and(o bits256) bits256 {
	return bits256{b[0] & o[0], b[1] & o[1], b[2] & o[2], b[3] & o[3]}
}

func (b bits256) empty() bool { return b[0]|b[1]|b[2]|b[3] == 0 }

func (b bits256) subsetOf(o bits256) bool { return b.and(o.not()).empty() }

func allBits() bits256 { return bits256{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)} }

// u128 is an IPv6 address as two big-endian halves, compared as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) lessEq(b u128) bool { return !b.less(a) }

func (a u128) inc() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

func u128From16(b *[16]byte) u128 {
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

type range4 struct{ lo, hi uint32 }
type range6 struct{ lo, hi u128 }
type range16 struct{ lo, hi uint16 }

// addrSet is a set of IPv4 and IPv6 addresses as sorted, merged,
// non-adjacent ranges per family, looked up by bisection.
type addrSet struct {
	v4 []range4
	v6 []range6
}

// fams returns the families the set has entries for (bit 0: IPv4, bit 1:
// IPv6).
func (s *addrSet) fams() uint8 {
	var f uint8
	if len(s.v4) > 0 {
		f |= famV4
	}
	if len(s.v6) > 0 {
		f |= famV6
	}
	return f
}

func (s *addrSet) contains4(a uint32) bool {
	r := s.v4
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].lo <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && a <= r[lo-1].hi
}

func (s *addrSet) contains6(a u128) bool {
	r := s.v6
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].lo.lessEq(a) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && a.lessEq(r[lo-1].hi)
}

// addrBuilder collects ranges before they are merged.
type addrBuilder struct {
	v4 []range4
	v6 []range6
}

func (b *addrBuilder) addPrefix(p netip.Prefix) {
	p = p.Masked()
	a := p.Addr()
	if a.Is4() {
		v := binary.BigEndian.Uint32(a.AsSlice())
		host := uint32(0)
		if p.Bits() < 32 {
			host = ^uint32(0) >> p.Bits()
		}
		b.v4 = append(b.v4, range4{v, v | host})
		return
	}
	a16 := a.As16()
	v := u128From16(&a16)
	hi := v
	bits := p.Bits()
	switch {
	case bits == 0:
		hi = u128{^uint64(0), ^uint64(0)}
	case bits < 64:
		hi = u128{v.hi | ^uint64(0)>>bits, ^uint64(0)}
	case bits < 128:
		hi = u128{v.hi, v.lo | ^uint64(0)>>(bits-64)}
	}
	b.v6 = append(b.v6, range6{v, hi})
}

func (b *addrBuilder) addRange(from, to netip.Addr) {
	if from.Is4() {
		b.v4 = append(b.v4, range4{binary.BigEndian.Uint32(from.AsSlice()), binary.BigEndian.Uint32(to.AsSlice())})
		return
	}
	f, t := from.As16(), to.As16()
	b.v6 = append(b.v6, range6{u128From16(&f), u128From16(&t)})
}

func (b *addrBuilder) addSet(s *addrSet) {
	b.v4 = append(b.v4, s.v4...)
	b.v6 = append(b.v6, s.v6...)
}

func (b *addrBuilder) build() *addrSet {
	s := &addrSet{}
	if len(b.v4) > 0 {
		r := slices.Clone(b.v4)
		slices.SortFunc(r, func(x, y range4) int { return cmp.Compare(x.lo, y.lo) })
		out := r[:1]
		for _, x := range r[1:] {
			last := &out[len(out)-1]
			if last.hi == ^uint32(0) || x.lo <= last.hi+1 {
				last.hi = max(last.hi, x.hi)
				continue
			}
			out = append(out, x)
		}
		s.v4 = slices.Clip(out)
	}
	if len(b.v6) > 0 {
		r := slices.Clone(b.v6)
		slices.SortFunc(r, func(x, y range6) int {
			if x.lo.less(y.lo) {
				return -1
			}
			if y.lo.less(x.lo) {
				return 1
			}
			return 0
		})
		out := r[:1]
		for _, x := range r[1:] {
			last := &out[len(out)-1]
			next, ok := last.hi.inc()
			if !ok || x.lo.lessEq(next) {
				if last.hi.less(x.hi) {
					last.hi = x.hi
				}
				continue
			}
			out = append(out, x)
		}
		s.v6 = slices.Clip(out)
	}
	return s
}

// within4 reports whether every range of a lies inside one range of b
// (both sorted and merged).
func within4(a, b []range4) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].hi < x.lo {
			j++
		}
		if j == len(b) || b[j].lo > x.lo || b[j].hi < x.hi {
			return false
		}
	}
	return true
}

func within6(a, b []range6) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].hi.less(x.lo) {
			j++
		}
		if j == len(b) || x.lo.less(b[j].lo) || b[j].hi.less(x.hi) {
			return false
		}
	}
	return true
}

func disjoint4(a, b []range4) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i].hi < b[j].lo:
			i++
		case b[j].hi < a[i].lo:
			j++
		default:
			return false
		}
	}
	return true
}

func disjoint6(a, b []range6) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i].hi.less(b[j].lo):
			i++
		case b[j].hi.less(a[i].lo):
			j++
		default:
			return false
		}
	}
	return true
}

// portSet is a set of ports: up to maxPortRanges ranges scanned in order,
// or a bitmap of all 65536 ports.
type portSet struct {
	ranges []range16 // sorted and merged; kept for analysis
	bitmap *[1024]uint64
}

const maxPortRanges = 6

func (s *portSet) has(p uint16) bool {
	if s.bitmap != nil {
		return s.bitmap[p>>6]&(1<<(p&63)) != 0
	}
	for _, r := range s.ranges {
		if p < r.lo {
			return false
		}
		if p <= r.hi {
			return true
		}
	}
	return false
}

func buildPortSet(rs []range16) *portSet {
	s := &portSet{}
	if len(rs) > 0 {
		r := slices.Clone(rs)
		slices.SortFunc(r, func(x, y range16) int { return cmp.Compare(x.lo, y.lo) })
		out := r[:1]
		for _, x := range r[1:] {
			last := &out[len(out)-1]
			if last.hi == 0xffff || x.lo <= last.hi+1 {
				last.hi = max(last.hi, x.hi)
				continue
			}
			out = append(out, x)
		}
		s.ranges = slices.Clip(out)
	}
	if len(s.ranges) > maxPortRanges {
		bm := new([1024]uint64)
		for _, r := range s.ranges {
			for p := uint32(r.lo); p <= uint32(r.hi); p++ {
				bm[p>>6] |= 1 << (p & 63)
			}
		}
		s.bitmap = bm
	}
	return s
}

func within16(a, b []range16) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].hi < x.lo {
			j++
		}
		if j == len(b) || b[j].lo > x.lo || b[j].hi < x.hi {
			return false
		}
	}
	return true
}

func disjoint16(a, b []range16) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i].hi < b[j].lo:
			i++
		case b[j].hi < a[i].lo:
			j++
		default:
			return false
		}
	}
	return true
}

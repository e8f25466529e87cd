package pipeline

import (
	"fmt"
	"net/netip"
	"sort"
)

// Route sends packets whose destination is in Prefix to device Dev (an
// index into the pipeline's devices).
type Route struct {
	Prefix netip.Prefix
	Dev    int
}

// Routes is an immutable longest-prefix-match table for IPv4 and IPv6.
//
// The prefixes are flattened into sorted, non-overlapping address ranges,
// each carrying the device of the longest prefix that covers it, so a lookup
// is one binary search whatever the nesting of the routes.
type Routes struct {
	v4 []rng4
	v6 []rng6
}

type rng4 struct {
	lo, hi uint32
	dev    int32
}

type rng6 struct {
	lo, hi u128
	dev    int32
}

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) addOne() u128 {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
	}
	return u128{hi, lo}
}

func (a u128) subOne() u128 {
	lo := a.lo - 1
	hi := a.hi
	if a.lo == 0 {
		hi--
	}
	return u128{hi, lo}
}

func u128From(a netip.Addr) u128 {
	b := a.As16()
	return u128{beU64(b[:8]), beU64(b[8:])}
}

func beU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// NewRoutes builds the table. Two routes for the same prefix are an error.
func NewRoutes(routes []Route) (*Routes, error) {
	seen := map[netip.Prefix]bool{}
	var p4, p6 []Route
	for _, r := range routes {
		p := r.Prefix.Masked()
		if !p.IsValid() {
			return nil, fmt.Errorf("route: invalid prefix %v", r.Prefix)
		}
		if seen[p] {
			return nil, fmt.Errorf("route: duplicate route for %v", p)
		}
		seen[p] = true
		if p.Addr().Is4() {
			p4 = append(p4, Route{p, r.Dev})
		} else {
			p6 = append(p6, Route{p, r.Dev})
		}
	}
	rt := &Routes{}
	// Flatten: sweep the prefixes sorted by start address and, for equal
	// starts, shortest first; keep a stack of enclosing prefixes.
	type iv struct {
		lo, hi u128
		dev    int32
	}
	flatten := func(ps []Route) []iv {
		var in []iv
		for _, r := range ps {
			lo := u128From(r.Prefix.Addr())
			hi := lastAddr(r.Prefix)
			in = append(in, iv{lo, hi, int32(r.Dev)})
		}
		sort.Slice(in, func(i, j int) bool {
			if in[i].lo != in[j].lo {
				return in[i].lo.less(in[j].lo)
			}
			return in[j].hi.less(in[i].hi) // wider first
		})
		var out []iv
		var stack []iv
		emit := func(lo, hi u128, dev int32) {
			if hi.less(lo) {
				return
			}
			if n := len(out); n > 0 && out[n-1].dev == dev && out[n-1].hi.addOne() == lo {
				out[n-1].hi = hi
				return
			}
			out = append(out, iv{lo, hi, dev})
		}
		// cursor is the first address not yet emitted; prefixes are
		// either nested or disjoint, so the stack holds the chain of
		// prefixes enclosing the cursor, innermost on top.
		var cursor u128
		for _, x := range in {
			// Close the enclosing prefixes that end before x starts.
			for len(stack) > 0 && stack[len(stack)-1].hi.less(x.lo) {
				top := stack[len(stack)-1]
				if !top.hi.less(cursor) {
					emit(cursor, top.hi, top.dev)
				}
				cursor = top.hi.addOne()
				stack = stack[:len(stack)-1]
			}
			if len(stack) > 0 && cursor.less(x.lo) {
				emit(cursor, x.lo.subOne(), stack[len(stack)-1].dev)
			}
			stack = append(stack, x)
			cursor = x.lo
		}
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if !top.hi.less(cursor) {
				emit(cursor, top.hi, top.dev)
			}
			stack = stack[:len(stack)-1]
			if top.hi == (u128{^uint64(0), ^uint64(0)}) {
				// Wrapped: nothing after the last address.
				stack = stack[:0]
				break
			}
			cursor = top.hi.addOne()
		}
		return out
	}
	for _, x := range flatten(p4) {
		rt.v4 = append(rt.v4, rng4{uint32(x.lo.lo), uint32(x.hi.lo), x.dev})
	}
	for _, x := range flatten(p6) {
		rt.v6 = append(rt.v6, rng6{x.lo, x.hi, x.dev})
	}
	return rt, nil
}

// lastAddr returns the last address of p as a u128 (IPv4 in the low 32
// bits).
func lastAddr(p netip.Prefix) u128 {
	a := u128From(p.Addr())
	if p.Addr().Is4() {
		host := 32 - p.Bits()
		var m uint64
		if host > 0 {
			m = 1<<host - 1
		}
		return u128{0, a.lo | m}
	}
	host := 128 - p.Bits()
	switch {
	case host == 0:
		return a
	case host < 64:
		return u128{a.hi, a.lo | (1<<host - 1)}
	case host == 64:
		return u128{a.hi, ^uint64(0)}
	default:
		return u128{a.hi | (1<<(host-64) - 1), ^uint64(0)}
	}
}

// Lookup4 returns the device for an IPv4 destination (the first 4 bytes of
// addr), or -1.
func (r *Routes) Lookup4(addr *[16]byte) int {
	a := uint32(addr[0])<<24 | uint32(addr[1])<<16 | uint32(addr[2])<<8 | uint32(addr[3])
	v := r.v4
	i := sort.Search(len(v), func(i int) bool { return v[i].hi >= a })
	if i < len(v) && v[i].lo <= a {
		return int(v[i].dev)
	}
	return -1
}

// Lookup6 returns the device for an IPv6 destination, or -1.
func (r *Routes) Lookup6(addr *[16]byte) int {
	a := u128{beU64(addr[:8]), beU64(addr[8:])}
	v := r.v6
	i := sort.Search(len(v), func(i int) bool { return !v[i].hi.less(a) })
	if i < len(v) && !a.less(v[i].lo) {
		return int(v[i].dev)
	}
	return -1
}

// Lookup returns the device for a destination of the given family, or -1.
func (r *Routes) Lookup(family uint8, addr *[16]byte) int {
	if r == nil {
		return -1
	}
	if family == 4 {
		return r.Lookup4(addr)
	}
	return r.Lookup6(addr)
}

// lookupSlow is the reference implementation for tests: the longest
// matching prefix by linear scan.
func lookupSlow(routes []Route, a netip.Addr) int {
	best, dev := -1, -1
	for _, r := range routes {
		if r.Prefix.Masked().Contains(a) && r.Prefix.Bits() > best {
			best, dev = r.Prefix.Bits(), r.Dev
		}
	}
	return dev
}

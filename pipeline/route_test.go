package pipeline

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestRoutesLongestPrefix(t *testing.T) {
	routes := []Route{
		{netip.MustParsePrefix("0.0.0.0/0"), 0},
		{netip.MustParsePrefix("10.0.0.0/8"), 1},
		{netip.MustParsePrefix("10.1.0.0/16"), 2},
		{netip.MustParsePrefix("10.1.2.0/24"), 3},
		{netip.MustParsePrefix("10.1.2.128/32"), 4},
		{netip.MustParsePrefix("192.168.0.0/16"), 5},
		{netip.MustParsePrefix("fd00::/8"), 6},
		{netip.MustParsePrefix("fd00:1::/32"), 7},
		{netip.MustParsePrefix("fd00:1::1/128"), 8},
	}
	rt, err := NewRoutes(routes)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]int{
		"1.2.3.4": 0, "10.0.0.1": 1, "10.1.0.1": 2, "10.1.2.1": 3, "10.1.2.128": 4,
		"10.1.2.129": 3, "10.1.3.0": 2, "10.2.0.0": 1, "11.0.0.0": 0, "192.168.255.255": 5,
		"255.255.255.255": 0, "fd00::1": 6, "fd00:1::1": 8, "fd00:1::2": 7, "fe80::1": -1, "::": -1,
	}
	for a, want := range cases {
		addr := netip.MustParseAddr(a)
		var b [16]byte
		fam := uint8(6)
		if addr.Is4() {
			fam = 4
			x := addr.As4()
			copy(b[:], x[:])
		} else {
			b = addr.As16()
		}
		if got := rt.Lookup(fam, &b); got != want {
			t.Errorf("Lookup(%s) = %d, want %d", a, got, want)
		}
	}
	if _, err := NewRoutes([]Route{{netip.MustParsePrefix("10.0.0.0/8"), 0}, {netip.MustParsePrefix("10.0.0.0/8"), 1}}); err == nil {
		t.Error("duplicate prefix accepted")
	}
}

// TestRoutesRandom checks the flattened table against a linear scan on
// random nested prefixes and random addresses.
func TestRoutesRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var routes []Route
		seen := map[netip.Prefix]bool{}
		v6 := round%2 == 1
		for i := 0; i < 1+r.IntN(20); i++ {
			var p netip.Prefix
			if v6 {
				var b [16]byte
				b[0] = 0xfd
				b[1] = byte(r.IntN(4))
				b[15] = byte(r.IntN(4))
				p = netip.PrefixFrom(netip.AddrFrom16(b), r.IntN(129)).Masked()
			} else {
				b := [4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(4))}
				p = netip.PrefixFrom(netip.AddrFrom4(b), r.IntN(33)).Masked()
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			routes = append(routes, Route{p, i})
		}
		rt, err := NewRoutes(routes)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 300; j++ {
			var a netip.Addr
			var b [16]byte
			fam := uint8(4)
			if v6 {
				b[0] = 0xfd
				b[1] = byte(r.IntN(5))
				b[15] = byte(r.IntN(5))
				if r.IntN(8) == 0 {
					b[0] = byte(r.IntN(256))
				}
				a = netip.AddrFrom16(b)
				fam = 6
			} else {
				x := [4]byte{10, byte(r.IntN(5)), byte(r.IntN(5)), byte(r.IntN(5))}
				if r.IntN(8) == 0 {
					x[0] = byte(r.IntN(256))
				}
				copy(b[:], x[:])
				a = netip.AddrFrom4(x)
			}
			if got, want := rt.Lookup(fam, &b), lookupSlow(routes, a); got != want {
				t.Fatalf("round %d: Lookup(%s) = %d, want %d; routes %v", round, a, got, want, routes)
			}
		}
	}
}

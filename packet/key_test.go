package packet_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// The query/reply pairs of nf_conntrack_proto_icmp.c and
// nf_conntrack_proto_icmpv6.c, written out independently of key.go.
var (
	icmp4Pairs = map[uint8]uint8{8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
	icmp6Pairs = map[uint8]uint8{128: 129, 129: 128, 139: 140, 140: 139}
)

func TestInvertICMPAllTypes(t *testing.T) {
	for _, fam := range []struct {
		name   string
		proto  packet.Proto
		src    string
		dst    string
		counts map[uint8]uint8
	}{
		{"icmp", packet.ICMP, "10.0.0.1", "10.0.0.2", icmp4Pairs},
		{"icmpv6", packet.ICMPv6, "fd00::1", "fd00::2", icmp6Pairs},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for typ := 0; typ < 256; typ++ {
				k := icmpKeyProto(fam.proto, fam.src, fam.dst, uint8(typ), 3, 0x1234)
				inv, ok := k.Invert()
				want, invertible := fam.counts[uint8(typ)]
				if ok != invertible {
					t.Errorf("type %d: ok = %v, want %v", typ, ok, invertible)
					continue
				}
				if !ok {
					if inv != (packet.FlowKey{}) {
						t.Errorf("type %d: non-invertible key inverted to %v", typ, inv)
					}
					continue
				}
				w := icmpKeyProto(fam.proto, fam.dst, fam.src, want, 3, 0x1234)
				if inv != w {
					t.Errorf("type %d: Invert() = %v, want %v", typ, inv, w)
				}
				back, ok := inv.Invert()
				if !ok || back != k {
					t.Errorf("type %d: inverting twice gives %v (%v)", typ, back, ok)
				}
				if inv.ICMPType() != want || inv.ICMPCode() != 3 || inv.ICMPID() != 0x1234 {
					t.Errorf("type %d: accessors type %d code %d id %d", typ, inv.ICMPType(), inv.ICMPCode(), inv.ICMPID())
				}
			}
		})
	}
}

func TestInvertAndReversePorts(t *testing.T) {
	tests := []struct {
		name string
		k    packet.FlowKey
		want packet.FlowKey
	}{
		{"tcp4", pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80"), pt.Key(packet.TCP, "10.0.0.2:80", "10.0.0.1:1234")},
		{"udp6", pt.Key(packet.UDP, "[fd00::1]:53", "[fd00::2]:5353"), pt.Key(packet.UDP, "[fd00::2]:5353", "[fd00::1]:53")},
		{"sctp", pt.Key(packet.SCTP, "10.0.0.1:1", "10.0.0.2:2"), pt.Key(packet.SCTP, "10.0.0.2:2", "10.0.0.1:1")},
		{"gre", pt.Key(packet.GRE, "10.0.0.1", "10.0.0.2"), pt.Key(packet.GRE, "10.0.0.2", "10.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, ok := tt.k.Invert()
			if !ok || inv != tt.want {
				t.Errorf("Invert() = %v, %v; want %v", inv, ok, tt.want)
			}
			if r := tt.k.Reverse(); r != tt.want {
				t.Errorf("Reverse() = %v, want %v", r, tt.want)
			}
		})
	}
	// Reverse keeps an ICMP key's identifier and type.
	k := pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 7)
	if r := k.Reverse(); r != pt.ICMPKey("10.0.0.2", "10.0.0.1", 8, 0, 7) {
		t.Errorf("ICMP Reverse() = %v", r)
	}
}

// randomKey returns a key whose Invert succeeds.
func randomKey(r *rand.Rand) packet.FlowKey {
	var k packet.FlowKey
	if r.IntN(2) == 0 {
		k.Family = 4
		for i := 0; i < 4; i++ {
			k.Src[i], k.Dst[i] = byte(r.Uint32()), byte(r.Uint32())
		}
	} else {
		k.Family = 6
		for i := range k.Src {
			k.Src[i], k.Dst[i] = byte(r.Uint32()), byte(r.Uint32())
		}
	}
	switch r.IntN(5) {
	case 0:
		k.Proto = packet.TCP
	case 1:
		k.Proto = packet.UDP
	case 2:
		k.Proto = packet.GRE
		return k
	case 3, 4:
		k.Proto = packet.ICMP
		pairs := icmp4Pairs
		if k.Family == 6 {
			k.Proto, pairs = packet.ICMPv6, icmp6Pairs
		}
		types := make([]uint8, 0, len(pairs))
		for t := range pairs {
			types = append(types, t)
		}
		typ := types[r.IntN(len(types))]
		k.SrcPort, k.DstPort = uint16(r.Uint32()), uint16(typ)<<8|uint16(r.IntN(256))
		return k
	}
	k.SrcPort, k.DstPort = uint16(r.Uint32()), uint16(r.Uint32())
	return k
}

func TestSymHashSymmetric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[uint64]packet.FlowKey{}
	for i := 0; i < 100000; i++ {
		k := randomKey(r)
		seed := r.Uint64()
		inv, ok := k.Invert()
		if !ok {
			t.Fatalf("random key %v not invertible", k)
		}
		if a, b := k.SymHash(seed), inv.SymHash(seed); a != b {
			t.Fatalf("SymHash(%v) = %#x, SymHash(%v) = %#x", k, a, inv, b)
		}
		h := k.SymHash(42)
		if prev, dup := seen[h]; dup && prev != k && prev != inv {
			t.Fatalf("64-bit SymHash collision between %v and %v", prev, k)
		}
		seen[h] = k
	}
}

func TestHashProperties(t *testing.T) {
	k := pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")
	inv, _ := k.Invert()
	if k.Hash(1) == inv.Hash(1) {
		t.Error("Hash is the same for both directions")
	}
	if k.SymHash(1) == k.SymHash(2) || k.Hash(1) == k.Hash(2) {
		t.Error("the seed does not change the hash")
	}
	// Every field feeds SymHash.
	variants := []func(*packet.FlowKey){
		func(k *packet.FlowKey) { k.Src[3]++ },
		func(k *packet.FlowKey) { k.Dst[0]++ },
		func(k *packet.FlowKey) { k.SrcPort++ },
		func(k *packet.FlowKey) { k.DstPort++ },
		func(k *packet.FlowKey) { k.Proto = packet.UDP },
		func(k *packet.FlowKey) { k.Family = 6 },
	}
	for i, f := range variants {
		v := k
		f(&v)
		if v.SymHash(1) == k.SymHash(1) {
			t.Errorf("variant %d: SymHash unchanged", i)
		}
		if v.Hash(1) == k.Hash(1) {
			t.Errorf("variant %d: Hash unchanged", i)
		}
	}
	// An ICMP request and its reply hash alike; different ids do not.
	req := pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 7)
	rep := pt.ICMPKey("10.0.0.2", "10.0.0.1", 0, 0, 7)
	other := pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 8)
	if req.SymHash(5) != rep.SymHash(5) || req.SymHash(5) == other.SymHash(5) {
		t.Error("ICMP SymHash does not follow the identifier")
	}
}

func TestKeyAccessorsAndString(t *testing.T) {
	tests := []struct {
		k        packet.FlowKey
		src, dst string
		str      string
	}{
		{pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80"), "10.0.0.1", "10.0.0.2", "tcp src=10.0.0.1 dst=10.0.0.2 sport=1234 dport=80"},
		{pt.Key(packet.UDP, "[fd00::1]:53", "[fd00::2]:5353"), "fd00::1", "fd00::2", "udp src=fd00::1 dst=fd00::2 sport=53 dport=5353"},
		{pt.ICMPKey("10.0.0.1", "10.0.0.2", 8, 0, 7), "10.0.0.1", "10.0.0.2", "icmp src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=7"},
		{pt.ICMPKey("fd00::1", "fd00::2", 129, 0, 9), "fd00::1", "fd00::2", "icmpv6 src=fd00::1 dst=fd00::2 type=129 code=0 id=9"},
		{pt.Key(packet.GRE, "10.0.0.1", "10.0.0.2"), "10.0.0.1", "10.0.0.2", "gre src=10.0.0.1 dst=10.0.0.2"},
		{pt.Key(packet.Proto(253), "10.0.0.1", "10.0.0.2"), "10.0.0.1", "10.0.0.2", "253 src=10.0.0.1 dst=10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if tt.k.SrcAddr() != netip.MustParseAddr(tt.src) || tt.k.DstAddr() != netip.MustParseAddr(tt.dst) {
				t.Errorf("addresses %v %v", tt.k.SrcAddr(), tt.k.DstAddr())
			}
			if s := tt.k.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
		})
	}
	// An IPv4 key keeps its address in the first 4 bytes, the rest zero.
	k := pt.Key(packet.TCP, "1.2.3.4:5", "6.7.8.9:10")
	if k.Src != [16]byte{1, 2, 3, 4} || k.Dst != [16]byte{6, 7, 8, 9} || k.Family != 4 {
		t.Errorf("IPv4 key layout %v %v family %d", k.Src, k.Dst, k.Family)
	}
	// IPv4 and IPv4-mapped IPv6 keys differ.
	m := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("[::ffff:1.2.3.4]:5"), netip.MustParseAddrPort("[::ffff:6.7.8.9]:10"))
	if m == k || m.Family != 6 {
		t.Errorf("IPv4-mapped key %v equals the IPv4 key", m)
	}
	if (packet.FlowKey{}).SrcAddr().IsValid() {
		t.Error("zero key has a valid address")
	}
}

func TestProtoAndFlagNames(t *testing.T) {
	for _, p := range []packet.Proto{packet.ICMP, packet.IGMP, packet.TCP, packet.UDP, packet.GRE, packet.ESP, packet.AH, packet.ICMPv6, packet.SCTP, packet.UDPLite} {
		q, ok := packet.ProtoByName(p.String())
		if !ok || q != p {
			t.Errorf("ProtoByName(%q) = %v, %v", p.String(), q, ok)
		}
	}
	if _, ok := packet.ProtoByName("nope"); ok {
		t.Error("ProtoByName accepted an unknown name")
	}
	if s := packet.Proto(99).String(); s != "99" {
		t.Errorf("Proto(99) = %q", s)
	}
	if s := (packet.SYN | packet.ACK).String(); s != "SYN|ACK" {
		t.Errorf("SYN|ACK = %q", s)
	}
	if s := packet.TCPFlags(0).String(); s != "NONE" {
		t.Errorf("no flags = %q", s)
	}
	if s := packet.TCPFlags(0xff).String(); s != "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR" {
		t.Errorf("all flags = %q", s)
	}
}

func TestKeyNoAllocs(t *testing.T) {
	k := pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")
	icmp := pt.ICMPKey("fd00::1", "fd00::2", 128, 0, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		sinkU64 += k.SymHash(7) + k.Hash(7) + icmp.SymHash(7)
		sinkKey, sinkBool = icmp.Invert()
		sinkKey = k.Reverse()
	})
	if allocs != 0 {
		t.Errorf("SymHash/Hash/Invert/Reverse allocate %v times", allocs)
	}
}

func BenchmarkSymHash(b *testing.B) {
	keys := []struct {
		name string
		k    packet.FlowKey
	}{
		{"tcp4", pt.Key(packet.TCP, "10.0.0.1:1234", "10.0.0.2:80")},
		{"tcp6", pt.Key(packet.TCP, "[fd00::1]:1234", "[fd00::2]:80")},
	}
	for _, kk := range keys {
		b.Run(kk.name, func(b *testing.B) {
			b.ReportAllocs()
			k := kk.k
			for b.Loop() {
				sinkU64 += k.SymHash(1)
			}
		})
	}
}

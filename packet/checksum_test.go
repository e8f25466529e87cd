package packet_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// naiveSum is the textbook RFC 1071 sum: 16-bit big-endian words (an odd
// final byte padded with a zero byte) added in 32 bits, with the carries
// folded back at the end.
func naiveSum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestChecksumAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	ones := make([]byte, 70000)
	for i := range ones {
		ones[i] = 0xff
	}
	// Every length up to 300 (both parities, every tail of the unrolled
	// loops), then random lengths up to 70000, with random initial sums.
	lengths := make([]int, 0, 600)
	for n := 0; n <= 300; n++ {
		lengths = append(lengths, n)
	}
	for i := 0; i < 300; i++ {
		lengths = append(lengths, r.IntN(len(buf)))
	}
	lengths = append(lengths, 65535, 65536, 69999)
	for _, n := range lengths {
		for _, data := range [][]byte{buf, ones} {
			off := r.IntN(8) // unaligned starts too
			if off+n > len(data) {
				off = 0
			}
			b := data[off : off+n]
			for _, initial := range []uint32{0, 0xffff, uint32(r.Uint32() & 0xffff), r.Uint32()} {
				if got, want := packet.Checksum(b, initial), naiveSum(b, initial); got != want {
					t.Fatalf("len %d off %d initial %#x: Checksum %#04x, naive %#04x", n, off, initial, got, want)
				}
			}
		}
	}
}

func TestChecksumKnownVectors(t *testing.T) {
	tests := []struct {
		b    []byte
		want uint16
	}{
		// RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
		{[]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0xddf2},
		{nil, 0},
		{[]byte{0xab}, 0xab00},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 0xffff},
		{[]byte{0x80, 0x00, 0x80, 0x00}, 0x0001},
	}
	for _, tt := range tests {
		if got := packet.Checksum(tt.b, 0); got != tt.want {
			t.Errorf("Checksum(% x) = %#04x, want %#04x", tt.b, got, tt.want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2000; i++ {
		var src, dst [16]byte
		fam := uint8(4)
		n := 4
		if i%2 == 1 {
			fam, n = 6, 16
		}
		for j := 0; j < n; j++ {
			src[j], dst[j] = byte(r.Uint32()), byte(r.Uint32())
		}
		proto := packet.Proto(r.IntN(256))
		length := r.IntN(70000)
		// The pseudo header as bytes: addresses, zero, protocol, length.
		var ph []byte
		ph = append(ph, src[:n]...)
		ph = append(ph, dst[:n]...)
		ph = binary.BigEndian.AppendUint32(ph, uint32(length))
		ph = append(ph, 0, 0, 0, byte(proto))
		want := naiveSum(ph, 0)
		if got := naiveSum(nil, packet.PseudoHeaderSum(fam, &src, &dst, proto, length)); got != want {
			t.Fatalf("family %d proto %d length %d: %#04x, want %#04x", fam, proto, length, got, want)
		}
	}
}

func TestChecksumUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 20000; i++ {
		b := make([]byte, 20+2*r.IntN(30))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%7 == 0 {
			for j := range b {
				b[j] = 0xff // all-ones data exercises the ones'-complement corner cases
			}
		}
		csum := ^naiveSum(b, 0)
		if i%2 == 0 {
			at := 2 * r.IntN(len(b)/2)
			old := binary.BigEndian.Uint16(b[at:])
			nw := uint16(r.Uint32())
			binary.BigEndian.PutUint16(b[at:], nw)
			got := packet.ChecksumUpdate16(csum, old, nw)
			if want := ^naiveSum(b, 0); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
				t.Fatalf("16-bit update at %d %#x->%#x: %#04x, recomputed %#04x", at, old, nw, got, want)
			}
			// The updated checksum verifies.
			if naiveSum(b, uint32(got)) != 0xffff {
				t.Fatalf("updated checksum %#04x does not verify", got)
			}
		} else {
			at := 2 * r.IntN(len(b)/2-1)
			old := binary.BigEndian.Uint32(b[at:])
			nw := r.Uint32()
			binary.BigEndian.PutUint32(b[at:], nw)
			got := packet.ChecksumUpdate32(csum, old, nw)
			if naiveSum(b, uint32(got)) != 0xffff {
				t.Fatalf("32-bit update at %d: checksum %#04x does not verify", at, got)
			}
		}
	}
}

func TestL4ChecksumValidAndSet(t *testing.T) {
	pkts := map[string][]byte{
		"tcp4":         pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Flags: packet.ACK, Payload: []byte("odd")}),
		"tcp6":         pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Flags: packet.ACK, Payload: []byte("even")}),
		"udp4":         pt.UDP4("10.0.0.1:1", "10.0.0.2:2", []byte("x")),
		"udp6":         pt.UDP6("[fd00::1]:1", "[fd00::2]:2", []byte("xy")),
		"icmp4":        pt.ICMP4Echo("10.0.0.1", "10.0.0.2", 8, 1, 2),
		"icmp6":        pt.ICMP6Echo("fd00::1", "fd00::2", 128, 1, 2),
		"icmp6-ext":    pt.ICMP("fd00::1", "fd00::2", pt.ICMPOpts{Type: 128, ID: 1, Ext: []pt.Ext{pt.HopByHop}}),
		"udp4-padded":  pt.SetTotalLen(append(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", []byte("abc")), 0xaa, 0xbb), 33),
		"tcp4-options": pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Flags: packet.SYN, MSS: 1400, WScale: 2}),
	}
	for name, b := range pkts {
		t.Run(name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(b)
			if p.Err != packet.ErrNone || !p.L4ChecksumValid() {
				t.Fatalf("built packet: err %v, checksum valid %v", p.Err, p.L4ChecksumValid())
			}
			bad := pt.BadL4Checksum(b)
			p.Decode(bad)
			if p.L4ChecksumValid() {
				t.Fatal("corrupted checksum reported valid")
			}
			p.SetL4Checksum()
			if !p.L4ChecksumValid() || string(bad) != string(b) {
				t.Fatalf("SetL4Checksum did not restore the original bytes:\n got % x\nwant % x", bad, b)
			}
		})
	}
}

func TestL4ChecksumSpecialCases(t *testing.T) {
	var p packet.Parsed
	// UDP with a zero checksum is accepted (no checksum).
	p.Decode(pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: []byte("x"), NoChecksum: true}))
	if !p.L4ChecksumValid() {
		t.Error("UDP without checksum rejected")
	}
	// A UDP checksum that computes to zero is sent as 0xffff.
	found := false
	for i := 0; i < 65536 && !found; i++ {
		payload := binary.BigEndian.AppendUint16(nil, uint16(i))
		b := pt.UDP4("10.0.0.1:1", "10.0.0.2:2", payload)
		if b[26] == 0xff && b[27] == 0xff {
			found = true
			p.Decode(b)
			b[26], b[27] = 0x12, 0x34
			p.SetL4Checksum()
			if b[26] != 0xff || b[27] != 0xff || !p.L4ChecksumValid() {
				t.Errorf("SetL4Checksum wrote %#02x%02x for a zero sum", b[26], b[27])
			}
		}
	}
	if !found {
		t.Error("no payload gave a zero UDP checksum")
	}
	// Fragments, undecodable packets and other protocols report valid.
	for name, b := range map[string][]byte{
		"fragment": pt.FragmentAt4(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", make([]byte, 100)), 0, 32, true),
		"gre":      pt.Raw("10.0.0.1", "10.0.0.2", packet.GRE, []byte{1, 2, 3, 4}, pt.IPOpts{}),
		"udplite":  pt.Raw("10.0.0.1", "10.0.0.2", packet.UDPLite, []byte{0, 1, 0, 2, 0, 0, 1, 2}, pt.IPOpts{}),
		"broken":   pt.SetDataOffset(pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{}), 2),
	} {
		b = pt.Clone(b)
		b[len(b)-1] ^= 0x40 // any transport checksum is now wrong
		p.Decode(b)
		if !p.L4ChecksumValid() {
			t.Errorf("%s: reported invalid", name)
		}
	}
}

func TestSetIPv4Checksum(t *testing.T) {
	b := pt.TCP4("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{IPOptions: []byte{0x94, 4, 0, 0}})
	c := pt.BadIPChecksum(b)
	packet.SetIPv4Checksum(c)
	if string(c) != string(b) {
		t.Errorf("SetIPv4Checksum gave % x, want % x", c[:24], b[:24])
	}
	// Short or inconsistent headers are left alone rather than panicking.
	for _, s := range [][]byte{nil, {0x45}, make([]byte, 19), {0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		packet.SetIPv4Checksum(s)
	}
}

func TestChecksumNoAllocs(t *testing.T) {
	b := make([]byte, 1500)
	allocs := testing.AllocsPerRun(100, func() {
		sinkInt += int(packet.Checksum(b, 0)) + int(packet.ChecksumUpdate32(1, 2, 3))
	})
	if allocs != 0 {
		t.Errorf("Checksum allocates %v times", allocs)
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500, 65535} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				sinkInt += int(packet.Checksum(buf, 0))
			}
		})
		b.Run(fmt.Sprint("naive-", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkInt += int(naiveSum(buf, 0))
			}
		})
	}
}

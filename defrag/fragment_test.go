package defrag_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// collect runs defrag.Fragment and returns the fragments, each in a buffer
// of exactly the size asked for.
func collect(pkt []byte, size int) ([][]byte, bool) {
	var out [][]byte
	ok := defrag.Fragment(pkt, size, func(n int) []byte {
		b := make([]byte, n)
		out = append(out, b)
		return b
	})
	return out, ok
}

func TestFragmentRoundTrip(t *testing.T) {
	for name, pkt := range testPackets() {
		for _, size := range []int{68, 576, 1280, 1500, 9000} {
			v6 := pkt[0]>>4 == 6
			if v6 && size < 1280 || size >= len(pkt) || len(pkt) > 20000 && size < 1280 {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				frags, ok := collect(pkt, size)
				if !ok {
					t.Fatal("Fragment failed")
				}
				var first packet.Parsed
				first.Decode(frags[0])
				next := 0
				for i, f := range frags {
					if len(f) > size {
						t.Fatalf("fragment %d: %d bytes > %d", i, len(f), size)
					}
					var p packet.Parsed
					p.Decode(f)
					if p.Err.IsIPLevel() || !p.Fragment || int(p.FragOff) != next || p.MoreFrags != (i < len(frags)-1) {
						t.Fatalf("fragment %d: err %v fragment %v offset %d (want %d) more %v", i, p.Err, p.Fragment, p.FragOff, next, p.MoreFrags)
					}
					if p.IPID != first.IPID || p.TTL != first.TTL || p.TOS != first.TOS || p.Key.Src != first.Key.Src || p.Key.Dst != first.Key.Dst {
						t.Fatalf("fragment %d: header fields differ from the first fragment's", i)
					}
					if v6 {
						uf, _ := pt.Unfragmentable6(pkt)
						if p.FragHdrOff != uf {
							t.Fatalf("fragment %d: fragment header at %d, want %d", i, p.FragHdrOff, uf)
						}
						next += len(f) - uf - 8
					} else {
						next += len(f) - p.L4Off
					}
					if i < len(frags)-1 && next%8 != 0 {
						t.Fatalf("fragment %d ends at %d, not a multiple of 8", i, next)
					}
				}
				// The independent test fragmenter produces the same bytes.
				var want [][]byte
				if v6 {
					want = pt.Fragment6ID(pkt, size, first.IPID)
				} else {
					want = pt.Fragment4(pkt, size)
				}
				if len(want) != len(frags) {
					t.Fatalf("%d fragments, packettest made %d", len(frags), len(want))
				}
				for i := range want {
					if !bytes.Equal(frags[i], want[i]) {
						t.Fatalf("fragment %d differs from packettest's\n got % x\nwant % x", i, frags[i][:48], want[i][:48])
					}
				}
				// And they reassemble to the original.
				tb := defrag.New(defrag.Config{})
				whole, maxFrag := feed(t, tb, frags, 0)
				checkWhole(t, whole, pkt)
				if int(maxFrag) > size || int(maxFrag) != len(frags[0]) {
					t.Fatalf("max fragment %d (size %d, first %d)", maxFrag, size, len(frags[0]))
				}
			})
		}
	}
}

// Refragmenting a reassembled datagram to its largest fragment's size
// gives fragments no larger than the sender's, which reassemble again.
func TestRefragmentReassembled(t *testing.T) {
	for name, pkt := range testPackets() {
		t.Run(name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			whole, maxFrag := feed(t, tb, fragmentBoth(pkt, 1400), 0)
			frags, ok := collect(whole, int(maxFrag))
			if !ok || maxLen(frags) > int(maxFrag) {
				t.Fatalf("refragment: ok %v, largest %d > %d", ok, maxLen(frags), maxFrag)
			}
			again, _ := feed(t, tb, frags, 0)
			checkWhole(t, again, pkt)
		})
	}
}

func TestFragmentKeepsDF(t *testing.T) {
	pkt := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, 0), DF: true, ID: 8})
	frags, ok := collect(pkt, 1500)
	if !ok {
		t.Fatal("Fragment failed")
	}
	for i, f := range frags {
		var p packet.Parsed
		p.Decode(f)
		if !p.DontFrag {
			t.Errorf("fragment %d lost DF", i)
		}
	}
}

func TestFragmentOfAFragment(t *testing.T) {
	orig := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, 0), ID: 8})
	// A middle fragment (offset 1000, 1000 bytes, MF) split again: offsets
	// continue from 1000 and every piece keeps MF.
	mid := pt.FragmentAt4(orig, 1000, 1000, true)
	frags, ok := collect(mid, 500)
	if !ok {
		t.Fatal("Fragment failed")
	}
	off := 1000
	for i, f := range frags {
		var p packet.Parsed
		p.Decode(f)
		if int(p.FragOff) != off || !p.MoreFrags {
			t.Fatalf("piece %d: offset %d more %v", i, p.FragOff, p.MoreFrags)
		}
		off += len(f) - 20
	}
	if off != 2000 {
		t.Fatalf("pieces end at %d", off)
	}
	// With the other fragments, the pieces reassemble the original.
	tb := defrag.New(defrag.Config{})
	all := append([][]byte{pt.FragmentAt4(orig, 0, 1000, true), pt.FragmentAt4(orig, 2000, 1008, false)}, frags...)
	whole, _ := feed(t, tb, all, 0)
	checkWhole(t, whole, orig)
}

func TestFragmentFailures(t *testing.T) {
	v4 := pt.UDP4("10.0.0.1:1", "10.0.0.2:2", payload(3000, 0))
	v6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(3000, 0))
	v6frag := pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Payload: payload(3000, 0), Ext: []pt.Ext{pt.FragExt(0, false, 1)}})
	v6badExt := pt.Clone(v6)
	v6badExt[6] = byte(packet.IPv6Opts) // claims a header whose length runs past the packet
	v6badExt[41] = 0xff
	tests := []struct {
		name string
		pkt  []byte
		size int
	}{
		{"empty", nil, 1500},
		{"bad-version", pt.SetVersion(v4, 5), 1500},
		{"v4-short", v4[:19], 1500},
		{"v4-total-past-buffer", v4[:100], 1500},
		{"v4-bad-ihl", pt.SetIHL(v4, 4), 1500},
		{"v4-size-below-header-plus-8", v4, 27},
		{"v4-options-leave-no-room", pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(100, 0), IPOptions: bytes.Repeat([]byte{0x94, 4, 0, 0}, 10)}), 67},
		{"v6-short", v6[:39], 1500},
		{"v6-payload-past-buffer", v6[:100], 1500},
		{"v6-size-below-headers-plus-8", v6, 55},
		{"v6-already-has-fragment-header", v6frag, 1280},
		{"v6-bad-ext-header", v6badExt, 1280},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := collect(tt.pkt, tt.size); ok {
				t.Error("Fragment succeeded")
			}
		})
	}
	// Running out of buffers fails too.
	n := 0
	ok := defrag.Fragment(v4, 576, func(size int) []byte {
		if n == 2 {
			return nil
		}
		n++
		return make([]byte, size)
	})
	if ok {
		t.Error("Fragment succeeded without buffers")
	}
	if defrag.Fragment(v4, 576, func(size int) []byte { return make([]byte, size-1) }) {
		t.Error("Fragment succeeded with short buffers")
	}
}

func TestFragmentFitsPassesThrough(t *testing.T) {
	for _, pkt := range [][]byte{pt.UDP4("10.0.0.1:1", "10.0.0.2:2", payload(100, 0)), pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(100, 0))} {
		frags, ok := collect(append(pt.Clone(pkt), 1, 2, 3), len(pkt))
		if !ok || len(frags) != 1 || !bytes.Equal(frags[0], pkt) {
			t.Errorf("packet that fits: ok %v, %d pieces", ok, len(frags))
		}
	}
}

func TestFragmentIDv6(t *testing.T) {
	a := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(3000, 1))
	b := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(3000, 2))
	id := func(pkt []byte) uint32 {
		frags, _ := collect(pkt, 1280)
		return binary.BigEndian.Uint32(frags[0][44:])
	}
	if id(a) != id(a) {
		t.Error("the same datagram got different identifications")
	}
	if id(a) == id(b) {
		t.Error("different datagrams got the same identification")
	}
}

func TestFragmentNoAllocs(t *testing.T) {
	pkt4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(8000, 0), IPOptions: []byte{0x94, 4, 0, 0}})
	pkt6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(8000, 0))
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	n := 0
	alloc := func(size int) []byte {
		b := bufs[n][:size]
		n++
		return b
	}
	allocs := testing.AllocsPerRun(100, func() {
		n = 0
		defrag.Fragment(pkt4, 1500, alloc)
		n = 0
		defrag.Fragment(pkt6, 1280, alloc)
	})
	if allocs != 0 {
		t.Errorf("Fragment allocates %v times", allocs)
	}
}

func BenchmarkFragment(b *testing.B) {
	for _, bb := range []struct {
		name string
		pkt  []byte
		size int
	}{
		{"udp4-3000-mtu1500", pt.UDP4("10.0.0.1:1", "10.0.0.2:2", payload(3000, 0)), 1500},
		{"udp6-8000-mtu1280", pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(8000, 0)), 1280},
	} {
		buf := make([]byte, 1500)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.pkt)))
			for b.Loop() {
				defrag.Fragment(bb.pkt, bb.size, func(n int) []byte { return buf[:n] })
			}
		})
	}
}

// FuzzDefrag feeds random fragment sets (random offsets, lengths, flags,
// identifications, families and clock steps, overlapping or not) through a
// small Table. Nothing may panic, the limits must hold after every
// fragment, every reassembled datagram must be made of the bytes its
// fragments carried, and expiry must release everything.
func FuzzDefrag(f *testing.F) {
	f.Add([]byte{0, 24, 0, 0, 0, 8, 24, 0, 0, 3, 0, 24, 0, 0, 6})
	f.Add([]byte{1, 24, 0, 0, 0, 9, 24, 0, 0, 3, 1, 24, 0, 0, 6})
	f.Add([]byte{0x18, 63, 7, 0, 1, 0x28, 63, 7, 0, 0, 0x08, 10, 3, 0, 5, 0xf0, 0, 0, 0, 0})
	const maxBytes = 32 << 10
	const maxDgrams = 4
	var bases4, bases6 [3][]byte
	for i := range bases4 {
		bases4[i] = pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(700+100*i, byte(i)), ID: uint16(i)})
		bases6[i] = pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(700+100*i, byte(i)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := defrag.New(defrag.Config{MaxBytes: maxBytes, MaxDatagrams: maxDgrams, Timeout: 10 * time.Second, Timeout6: 20 * time.Second})
		var now int64
		adds := uint64(0)
		for len(data) >= 5 {
			op, a, b, c := data[0], data[1], data[2], binary.BigEndian.Uint16(data[3:5])
			data = data[5:]
			v6 := op&1 != 0
			which := int(op>>1) % 3
			more := op&8 != 0
			now += int64(op>>4) * int64(time.Second)
			off := int(c) % 128 * 8
			n := int(a)%64 + int(b)%9
			var frag, base []byte
			hdr := 20
			if v6 {
				base, hdr = bases6[which], 40
				frag = pt.FragmentAt6(base, uint32(which), off, n, more)
			} else {
				base = bases4[which]
				frag = pt.FragmentAt4(base, off, n, more)
			}
			var p packet.Parsed
			p.Decode(frag)
			if p.Fragment {
				adds++
			}
			whole, maxFrag, st := tb.AddStatus(&p, now)
			if tb.Mem() > maxBytes || tb.Len() > maxDgrams {
				t.Fatalf("limits exceeded: %d bytes, %d datagrams", tb.Mem(), tb.Len())
			}
			if st != defrag.Reassembled {
				if whole != nil {
					t.Fatalf("status %v with a datagram", st)
				}
				continue
			}
			var w packet.Parsed
			w.Decode(whole)
			if w.Err.IsIPLevel() || w.Fragment || w.Length != len(whole) || int(maxFrag) < hdr {
				t.Fatalf("reassembled: err %v fragment %v length %d/%d max %d", w.Err, w.Fragment, w.Length, len(whole), maxFrag)
			}
			// Every byte is the one the fragments carried at its offset:
			// the base packet's, or FragmentAt's 0xee padding past its end.
			data := base[hdr:]
			for i, got := range whole[hdr:] {
				want := byte(0xee)
				if i < len(data) {
					want = data[i]
				}
				if got != want {
					t.Fatalf("byte %d of the reassembled data is %#x, want %#x", i, got, want)
				}
			}
		}
		tb.Reap(now + int64(time.Minute))
		if tb.Len() != 0 || tb.Mem() != 0 {
			t.Fatalf("after expiry: %d datagrams, %d bytes", tb.Len(), tb.Mem())
		}
		s := tb.Stats()
		if s.Fragments != adds || s.Datagrams != 0 || s.Bytes != 0 {
			t.Fatalf("stats %+v, %d fragments added", s, adds)
		}
	})
}

package defrag_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

const sec = int64(time.Second)

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// add decodes b and hands it to t.
func add(tb testing.TB, t *defrag.Table, b []byte, now int64) ([]byte, uint16, defrag.Status) {
	tb.Helper()
	var p packet.Parsed
	p.Decode(b)
	return t.AddStatus(&p, now)
}

// feed adds every fragment, expects all but the last to be queued and the
// last to complete the datagram, and returns it (copied).
func feed(tb testing.TB, t *defrag.Table, frags [][]byte, now int64) ([]byte, uint16) {
	tb.Helper()
	for i, f := range frags {
		whole, maxFrag, st := add(tb, t, f, now)
		if i < len(frags)-1 {
			if st != defrag.Queued {
				tb.Fatalf("fragment %d of %d: %v", i, len(frags), st)
			}
			continue
		}
		if st != defrag.Reassembled {
			tb.Fatalf("last fragment: %v", st)
		}
		return pt.Clone(whole), maxFrag
	}
	return nil, 0
}

func maxLen(frags [][]byte) int {
	m := 0
	for _, f := range frags {
		m = max(m, len(f))
	}
	return m
}

func checkWhole(t *testing.T, whole, orig []byte) {
	t.Helper()
	if !bytes.Equal(whole, orig) {
		t.Fatalf("reassembled datagram differs from the original (%d vs %d bytes)", len(whole), len(orig))
	}
	var p packet.Parsed
	p.Decode(whole)
	if p.Err != packet.ErrNone || p.Fragment || !p.L4ChecksumValid() {
		t.Fatalf("reassembled: err %v fragment %v checksum valid %v", p.Err, p.Fragment, p.L4ChecksumValid())
	}
}

func testPackets() map[string][]byte {
	return map[string][]byte{
		"udp4":          pt.UDP("10.0.0.1:1000", "10.0.0.2:2000", pt.UDPOpts{Payload: payload(3000, 1), ID: 0x1234, TOS: 0x10}),
		"tcp4-options":  pt.TCP("10.0.0.1:1000", "10.0.0.2:2000", pt.TCPOpts{Flags: packet.ACK, Payload: payload(5000, 2), ID: 7, IPOptions: []byte{0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0}}),
		"icmp4":         pt.ICMP("10.0.0.1", "10.0.0.2", pt.ICMPOpts{Type: 8, ID: 1, Seq: 1, Data: payload(4000, 3), IPID: 99}),
		"udp6":          pt.UDP6("[fd00::1]:1000", "[fd00::2]:2000", payload(3000, 4)),
		"tcp6-ext":      pt.TCP("[fd00::1]:1000", "[fd00::2]:2000", pt.TCPOpts{Flags: packet.ACK, Payload: payload(4000, 5), Ext: []pt.Ext{pt.HopByHop, pt.DestOpts, pt.Routing, pt.DestOpts}}),
		"icmp6":         pt.ICMP("fd00::1", "fd00::2", pt.ICMPOpts{Type: 128, ID: 1, Seq: 1, Data: payload(2500, 6)}),
		"udp4-max-size": pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(65535-28, 7), ID: 3}),
		"udp6-max-size": pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(65535-8, 8)),
	}
}

func fragmentBoth(pkt []byte, size int) [][]byte {
	if pkt[0]>>4 == 4 {
		return pt.Fragment4(pkt, size)
	}
	return pt.Fragment6(pkt, size)
}

func TestInOrder(t *testing.T) {
	for name, pkt := range testPackets() {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{576, 1280, 1500, 9000} {
				if size >= len(pkt) {
					continue
				}
				tb := defrag.New(defrag.Config{})
				frags := fragmentBoth(pkt, size)
				whole, maxFrag := feed(t, tb, frags, 0)
				checkWhole(t, whole, pkt)
				if int(maxFrag) != maxLen(frags) {
					t.Errorf("size %d: max fragment %d, want %d", size, maxFrag, maxLen(frags))
				}
				if tb.Len() != 0 || tb.Mem() != 0 {
					t.Errorf("size %d: %d datagrams, %d bytes left", size, tb.Len(), tb.Mem())
				}
			}
		})
	}
}

func TestAnyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for name, pkt := range testPackets() {
		t.Run(name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			frags := fragmentBoth(pkt, 1280)
			for round := 0; round < 20; round++ {
				perm := r.Perm(len(frags))
				if round == 0 {
					for i := range perm {
						perm[i] = len(frags) - 1 - i // reverse
					}
				}
				shuffled := make([][]byte, len(frags))
				for i, j := range perm {
					shuffled[i] = frags[j]
				}
				whole, _ := feed(t, tb, shuffled, int64(round))
				checkWhole(t, whole, pkt)
			}
		})
	}
}

func TestDuplicates(t *testing.T) {
	pkt := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 0), ID: 5})
	f := func(off, n int, more bool) []byte { return pt.FragmentAt4(pkt, off, n, more) }
	// 72 bytes of UDP: [0,24) [24,48) [48,72).
	tests := []struct {
		name  string
		steps [][]byte
		want  []defrag.Status
	}{
		{"resend-same", [][]byte{f(0, 24, true), f(0, 24, true), f(24, 24, true), f(48, 24, false)},
			[]defrag.Status{defrag.Queued, defrag.Duplicate, defrag.Queued, defrag.Reassembled}},
		{"resend-last", [][]byte{f(48, 24, false), f(48, 24, false), f(0, 24, true), f(24, 24, true)},
			[]defrag.Status{defrag.Queued, defrag.Duplicate, defrag.Queued, defrag.Reassembled}},
		// In order, [0,24) and [24,48) form one run: [8,40) lies within it.
		{"inside-a-run", [][]byte{f(0, 24, true), f(24, 24, true), f(8, 32, true), f(48, 24, false)},
			[]defrag.Status{defrag.Queued, defrag.Queued, defrag.Duplicate, defrag.Reassembled}},
		// Out of order, [24,48) then [0,24) are two runs: [8,40) spans both
		// and is an overlap, as in the kernel.
		{"across-two-runs", [][]byte{f(24, 24, true), f(0, 24, true), f(8, 32, true)},
			[]defrag.Status{defrag.Queued, defrag.Queued, defrag.Overlap}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			for i, b := range tt.steps {
				whole, _, st := add(t, tb, b, 0)
				if st != tt.want[i] {
					t.Fatalf("step %d: %v, want %v", i, st, tt.want[i])
				}
				if st == defrag.Reassembled {
					checkWhole(t, whole, pkt)
				}
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	pkt4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 0), ID: 5})
	pkt6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(64, 0))
	for _, fam := range []struct {
		name string
		pkt  []byte
		f    func(off, n int, more bool) []byte
	}{
		{"v4", pkt4, func(off, n int, more bool) []byte { return pt.FragmentAt4(pkt4, off, n, more) }},
		{"v6", pkt6, func(off, n int, more bool) []byte { return pt.FragmentAt6(pkt6, 9, off, n, more) }},
	} {
		f := fam.f
		tests := []struct {
			name  string
			steps [][]byte
		}{
			{"tail-overlap", [][]byte{f(0, 24, true), f(16, 24, true)}},
			{"head-overlap", [][]byte{f(24, 24, true), f(16, 16, true)}},
			{"covers-existing", [][]byte{f(24, 8, true), f(16, 24, true)}},
			{"same-end-covers-last", [][]byte{f(48, 24, false), f(40, 32, false)}},
			{"first-overlaps-middle", [][]byte{f(16, 16, true), f(0, 24, true)}},
			{"spans-a-gap", [][]byte{f(0, 8, true), f(32, 8, true), f(0, 48, true)}},
		}
		for _, tt := range tests {
			t.Run(fam.name+"/"+tt.name, func(t *testing.T) {
				tb := defrag.New(defrag.Config{})
				for i, b := range tt.steps[:len(tt.steps)-1] {
					if _, _, st := add(t, tb, b, 0); st != defrag.Queued {
						t.Fatalf("step %d: %v", i, st)
					}
				}
				if _, _, st := add(t, tb, tt.steps[len(tt.steps)-1], 0); st != defrag.Overlap {
					t.Fatalf("overlapping fragment: %v", st)
				}
				if tb.Len() != 0 || tb.Mem() != 0 || tb.Stats().Overlaps != 1 {
					t.Fatalf("after overlap: %d datagrams, %d bytes, stats %+v", tb.Len(), tb.Mem(), tb.Stats())
				}
				// Nothing of the dropped datagram remains: a complete set
				// sent afterwards reassembles from scratch.
				whole, _ := feed(t, tb, [][]byte{f(24, 24, true), f(0, 24, true), f(48, 24, false)}, 0)
				checkWhole(t, whole, fam.pkt)
			})
		}
	}
}

func TestTimeout(t *testing.T) {
	pkt4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, 0), ID: 5})
	pkt6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(3000, 0))
	f4, f6 := pt.Fragment4(pkt4, 1500), pt.Fragment6(pkt6, 1500)
	tb := defrag.New(defrag.Config{}) // 30 s for IPv4, 60 s for IPv6
	add(t, tb, f4[0], 0)
	add(t, tb, f6[0], 0)
	add(t, tb, f4[1], 29*sec) // later fragments do not extend the timer
	if n := tb.Reap(30*sec - 1); n != 0 || tb.Len() != 2 {
		t.Fatalf("reaped %d before the timeout", n)
	}
	if n := tb.Reap(30 * sec); n != 1 || tb.Len() != 1 {
		t.Fatalf("reaped %d at 30 s, %d left", n, tb.Len())
	}
	// The missing IPv4 piece arrives too late: it starts a new datagram.
	if _, _, st := add(t, tb, f4[2], 31*sec); st != defrag.Queued {
		t.Fatalf("late fragment: %v", st)
	}
	if n := tb.Reap(60 * sec); n != 1 {
		t.Fatalf("IPv6 datagram: reaped %d at 60 s", n)
	}
	if n := tb.Reap(61 * sec); n != 1 || tb.Len() != 0 || tb.Mem() != 0 {
		t.Fatalf("reaped %d at 61 s; %d datagrams, %d bytes left", n, tb.Len(), tb.Mem())
	}
	if s := tb.Stats(); s.Timeouts != 3 || s.Reassembled != 0 || s.Datagrams != 0 || s.Bytes != 0 {
		t.Fatalf("stats %+v", s)
	}

	// Add expires a stale datagram of the same key itself.
	tb = defrag.New(defrag.Config{Timeout: time.Second})
	add(t, tb, f4[0], 0)
	add(t, tb, f4[1], 0)
	if _, _, st := add(t, tb, f4[2], 2*sec); st != defrag.Queued {
		t.Fatalf("fragment after expiry: %v", st)
	}
	if s := tb.Stats(); s.Timeouts != 1 || tb.Len() != 1 {
		t.Fatalf("stats %+v, %d datagrams", s, tb.Len())
	}
}

func TestMemoryLimit(t *testing.T) {
	const maxBytes = 64 << 10
	tb := defrag.New(defrag.Config{MaxBytes: maxBytes})
	var queued, dropped int
	for id := 0; id < 1000; id++ {
		pkt := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, byte(id)), ID: uint16(id)})
		_, _, st := add(t, tb, pt.Fragment4(pkt, 1500)[0], 0)
		switch st {
		case defrag.Queued:
			queued++
		case defrag.NoMemory:
			dropped++
		default:
			t.Fatalf("datagram %d: %v", id, st)
		}
		if tb.Mem() > maxBytes {
			t.Fatalf("memory %d above the %d limit", tb.Mem(), maxBytes)
		}
	}
	if queued == 0 || dropped == 0 || queued*1480 > maxBytes {
		t.Fatalf("queued %d, dropped %d", queued, dropped)
	}
	// Full: even the rest of a held datagram is refused (as the kernel
	// does above ipfrag_high_thresh) ...
	pkt0 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, 0), ID: 0})
	if _, _, st := add(t, tb, pt.Fragment4(pkt0, 1500)[1], 0); st != defrag.NoMemory {
		t.Fatalf("fragment of a held datagram while full: %v", st)
	}
	if s := tb.Stats(); s.NoMemory != uint64(dropped)+1 || int(s.Bytes) != tb.Mem() || int(s.Datagrams) != queued {
		t.Fatalf("stats %+v", s)
	}
	// ... until expiry frees memory.
	tb.Reap(30 * sec)
	if tb.Mem() != 0 {
		t.Fatalf("%d bytes held after expiry", tb.Mem())
	}
	whole, _ := feed(t, tb, pt.Fragment4(pkt0, 1500), 31*sec)
	checkWhole(t, whole, pkt0)
}

func TestMaxDatagrams(t *testing.T) {
	tb := defrag.New(defrag.Config{MaxDatagrams: 3})
	pkts := make([][][]byte, 4)
	for i := range pkts {
		pkts[i] = pt.Fragment4(pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(2000, byte(i)), ID: uint16(i)}), 1000)
	}
	for i := 0; i < 3; i++ {
		if _, _, st := add(t, tb, pkts[i][0], 0); st != defrag.Queued {
			t.Fatal(st)
		}
	}
	if _, _, st := add(t, tb, pkts[3][0], 0); st != defrag.NoMemory {
		t.Fatalf("fourth datagram: %v", st)
	}
	// Held datagrams still complete.
	add(t, tb, pkts[0][1], 0)
	if _, _, st := add(t, tb, pkts[0][2], 0); st != defrag.Reassembled {
		t.Fatalf("held datagram: %v", st)
	}
	if _, _, st := add(t, tb, pkts[3][0], 0); st != defrag.Queued {
		t.Fatalf("fourth datagram after one completed: %v", st)
	}
}

func TestTooBig(t *testing.T) {
	big4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(65535-28, 1), ID: 1})
	big4opts := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(65535-32, 1), ID: 2, IPOptions: []byte{0x94, 4, 0, 0}})
	big6 := pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Payload: payload(65535-8-8, 1), Ext: []pt.Ext{pt.HopByHop}})
	tests := []struct {
		name  string
		steps [][]byte
	}{
		// The last fragment's data ends at 65535: with any IPv4 header the
		// datagram exceeds 65535 bytes.
		{"v4-past-65535", [][]byte{pt.FragmentAt4(big4, 65520, 15, false)}},
		// 24-byte header + data ending at 65512 + 8: 65536.
		{"v4-options-push-it-over", [][]byte{pt.FragmentAt4(big4opts, 0, 64, true), pt.FragmentAt4(big4opts, 65456, 56, false)}},
		// IPv6: the hop-by-hop header (8) counts in the payload length.
		{"v6-unfragmentable-part-pushes-it-over", [][]byte{pt.FragmentAt6(big6, 1, 65528, 7, false), pt.FragmentAt6(big6, 1, 0, 64, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			var st defrag.Status
			for _, b := range tt.steps {
				_, _, st = add(t, tb, b, 0)
			}
			if st != defrag.TooBig || tb.Len() != 0 {
				t.Fatalf("status %v, %d datagrams held", st, tb.Len())
			}
			if tb.Stats().TooBig != 1 {
				t.Fatalf("stats %+v", tb.Stats())
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	pkt4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 0), ID: 5})
	pkt6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(64, 0))
	f4 := func(off, n int, more bool) []byte { return pt.FragmentAt4(pkt4, off, n, more) }
	f6 := func(off, n int, more bool) []byte { return pt.FragmentAt6(pkt6, 9, off, n, more) }
	tcp6 := pt.TCP6("[fd00::1]:1", "[fd00::2]:2", pt.TCPOpts{Payload: payload(64, 0)})
	tests := []struct {
		name      string
		steps     [][]byte
		last      defrag.Status
		wantHeld  int
		completes [][]byte // fragments that must then complete the datagram (nil: none)
	}{
		// IPv4 kills the datagram on an inconsistent end.
		{"v4-two-different-ends", [][]byte{f4(48, 24, false), f4(0, 24, true), f4(48, 16, false)}, defrag.Malformed, 0, nil},
		{"v4-data-past-the-end", [][]byte{f4(24, 24, false), f4(48, 8, true)}, defrag.Malformed, 0, nil},
		{"v4-zero-length", [][]byte{f4(0, 24, true), f4(24, 0, true)}, defrag.Malformed, 0, nil},
		// IPv6 drops only the fragment: the datagram can still complete.
		{"v6-two-different-ends", [][]byte{f6(48, 24, false), f6(0, 24, true), f6(48, 16, false)}, defrag.Malformed, 1,
			[][]byte{f6(24, 24, true)}},
		{"v6-data-past-the-end", [][]byte{f6(48, 24, false), f6(72, 8, true)}, defrag.Malformed, 1,
			[][]byte{f6(0, 24, true), f6(24, 24, true)}},
		// IPv6 non-last fragments must be multiples of 8: the datagram dies.
		{"v6-not-multiple-of-8", [][]byte{f6(0, 24, true), f6(24, 20, true)}, defrag.Malformed, 0, nil},
		// RFC 8200: the first fragment must hold the upper-layer header.
		{"v6-first-fragment-without-tcp-header", [][]byte{pt.FragmentAt6(tcp6, 3, 0, 8, true)}, defrag.Malformed, 0, nil},
		{"not-a-fragment", [][]byte{pt.UDP4("10.0.0.1:1", "10.0.0.2:2", nil)}, defrag.NotFragment, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			var st defrag.Status
			for _, b := range tt.steps {
				_, _, st = add(t, tb, b, 0)
			}
			if st != tt.last || tb.Len() != tt.wantHeld {
				t.Fatalf("last status %v with %d datagrams held; want %v, %d", st, tb.Len(), tt.last, tt.wantHeld)
			}
			for i, b := range tt.completes {
				whole, _, st := add(t, tb, b, 0)
				if i == len(tt.completes)-1 {
					if st != defrag.Reassembled {
						t.Fatalf("completing fragment: %v", st)
					}
					checkWhole(t, whole, pkt6)
				}
			}
		})
	}
}

func TestIPv4TrimsNonLastFragments(t *testing.T) {
	pkt := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 0), ID: 5})
	tb := defrag.New(defrag.Config{})
	// 20 bytes with MF: the kernel keeps 16 of them.
	add(t, tb, pt.FragmentAt4(pkt, 0, 20, true), 0)
	add(t, tb, pt.FragmentAt4(pkt, 16, 40, true), 0)
	whole, _, st := add(t, tb, pt.FragmentAt4(pkt, 56, 16, false), 0)
	if st != defrag.Reassembled {
		t.Fatal(st)
	}
	checkWhole(t, whole, pkt)
}

func TestIPLevelErrorsRejected(t *testing.T) {
	tb := defrag.New(defrag.Config{})
	var p packet.Parsed
	p.Decode(pt.BadIPChecksum(pt.FragmentAt4(pt.UDP4("10.0.0.1:1", "10.0.0.2:2", payload(64, 0)), 0, 24, true)))
	p.Fragment = true // as if a caller handed it over anyway
	if _, _, st := tb.AddStatus(&p, 0); st != defrag.Malformed {
		t.Fatalf("packet with a bad IP header: %v", st)
	}
}

func TestECN(t *testing.T) {
	const notECT, ect1, ect0, ce = 0, 1, 2, 3
	tests := []struct {
		name    string
		tos     [3]uint8
		ok      bool
		wantECN uint8
	}{
		{"all-not-ect", [3]uint8{notECT, notECT, notECT}, true, notECT},
		{"all-ect0", [3]uint8{ect0, ect0, ect0}, true, ect0},
		{"ce-and-ect0", [3]uint8{ect0, ce, ect0}, true, ce},
		{"ce-and-ect1", [3]uint8{ce, ect1, ect1}, true, ce},
		{"all-ce", [3]uint8{ce, ce, ce}, true, ce},
		{"ect0-and-ect1", [3]uint8{ect0, ect1, ect0}, true, ect0},
		{"not-ect-and-ect0", [3]uint8{notECT, ect0, ect0}, false, 0},
		{"not-ect-and-ce", [3]uint8{ce, notECT, notECT}, false, 0},
	}
	for _, v6 := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("v6=%v/%s", v6, tt.name), func(t *testing.T) {
				tb := defrag.New(defrag.Config{})
				var frags [][]byte
				for i, tos := range tt.tos {
					var pkt []byte
					if v6 {
						pkt = pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Payload: payload(64, 0), TOS: 0x20 | tos})
						frags = append(frags, pt.FragmentAt6(pkt, 1, 24*i, 24, i < 2))
					} else {
						pkt = pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 0), TOS: 0x20 | tos, ID: 9})
						frags = append(frags, pt.FragmentAt4(pkt, 24*i, 24, i < 2))
					}
				}
				add(t, tb, frags[0], 0)
				add(t, tb, frags[1], 0)
				whole, _, st := add(t, tb, frags[2], 0)
				if !tt.ok {
					if st != defrag.Malformed {
						t.Fatalf("status %v", st)
					}
					return
				}
				if st != defrag.Reassembled {
					t.Fatalf("status %v", st)
				}
				var p packet.Parsed
				p.Decode(whole)
				if p.Err != packet.ErrNone || p.TOS != 0x20|tt.wantECN {
					t.Fatalf("err %v tos %#x, want %#x", p.Err, p.TOS, 0x20|tt.wantECN)
				}
			})
		}
	}
}

func TestDontFragment(t *testing.T) {
	// The reassembled datagram has DF only if the largest fragment had it.
	withDF := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(100, 0), ID: 4, DF: true})
	noDF := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(100, 0), ID: 4})
	tests := []struct {
		name   string
		frags  [][]byte
		wantDF bool
	}{
		{"largest-has-df", [][]byte{pt.FragmentAt4(withDF, 0, 64, true), pt.FragmentAt4(noDF, 64, 44, false)}, true},
		{"only-small-has-df", [][]byte{pt.FragmentAt4(noDF, 0, 64, true), pt.FragmentAt4(withDF, 64, 44, false)}, false},
		{"none", [][]byte{pt.FragmentAt4(noDF, 0, 64, true), pt.FragmentAt4(noDF, 64, 44, false)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := defrag.New(defrag.Config{})
			whole, maxFrag := feed(t, tb, tt.frags, 0)
			var p packet.Parsed
			p.Decode(whole)
			if p.Err != packet.ErrNone || p.DontFrag != tt.wantDF || p.Fragment || maxFrag != 84 {
				t.Fatalf("err %v DF %v fragment %v max %d", p.Err, p.DontFrag, p.Fragment, maxFrag)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	a := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 1), ID: 1})
	b := pt.TCP("10.0.0.1:1", "10.0.0.2:2", pt.TCPOpts{Payload: payload(52, 2), ID: 1}) // same id, other protocol
	c := pt.UDP("10.0.0.3:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(64, 3), ID: 1}) // other source
	tb := defrag.New(defrag.Config{})
	for _, p := range [][]byte{a, b, c} {
		add(t, tb, pt.FragmentAt4(p, 0, 40, true), 0)
	}
	if tb.Len() != 3 {
		t.Fatalf("%d datagrams, want 3", tb.Len())
	}
	for _, p := range [][]byte{a, b, c} {
		whole, _, st := add(t, tb, pt.FragmentAt4(p, 40, 32, false), 0)
		if st != defrag.Reassembled {
			t.Fatal(st)
		}
		checkWhole(t, whole, p)
	}
	// IPv6: the key has no protocol; the first fragment's next header wins.
	u6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(64, 4))
	first := pt.FragmentAt6(u6, 7, 0, 40, true)
	second := pt.FragmentAt6(u6, 7, 40, 32, false)
	second[40] = byte(packet.TCP) // a different next header in a later fragment
	whole, _ := feed(t, tb, [][]byte{second, first}, 0)
	checkWhole(t, whole, u6)
}

func TestStatusTexts(t *testing.T) {
	seen := map[string]bool{}
	for s := defrag.Status(0); s < defrag.NumStatuses; s++ {
		if seen[s.String()] || s.String() == "" {
			t.Errorf("status %d text %q", s, s.String())
		}
		seen[s.String()] = true
		if s.IsDrop() != (s != defrag.NotFragment && s != defrag.Queued && s != defrag.Reassembled) {
			t.Errorf("%v: IsDrop %v", s, s.IsDrop())
		}
	}
	if m := (defrag.Stats{Overlaps: 3}).Map(); m["overlaps"] != 3 || len(m) != 10 {
		t.Errorf("Map() = %v", m)
	}
}

func TestConfig(t *testing.T) {
	c := defrag.DefaultConfig()
	if c.MaxBytes != 4<<20 || c.Timeout != 30*time.Second || c.Timeout6 != 60*time.Second || c.Validate() != nil {
		t.Errorf("defaults %+v", c)
	}
	for _, bad := range []defrag.Config{{MaxBytes: -1}, {MaxDatagrams: -1}, {Timeout: -1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

func TestAddNoAllocs(t *testing.T) {
	pkt4 := pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(4000, 0), ID: 1})
	pkt6 := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(4000, 0))
	var parsed []packet.Parsed
	for _, f := range append(pt.Fragment4(pkt4, 1500), pt.Fragment6(pkt6, 1280)...) {
		var p packet.Parsed
		p.Decode(f)
		parsed = append(parsed, p)
	}
	tb := defrag.New(defrag.Config{})
	run := func() {
		for i := range parsed {
			_, _, st := tb.AddStatus(&parsed[i], 0)
			if st != defrag.Queued && st != defrag.Reassembled {
				t.Fatal(st)
			}
		}
	}
	run() // warm the pools
	if a := testing.AllocsPerRun(100, run); a != 0 {
		t.Errorf("reassembly allocates %v times per two datagrams", a)
	}
	if tb.Len() != 0 {
		t.Fatalf("%d datagrams left", tb.Len())
	}
}

func BenchmarkReassemble(b *testing.B) {
	for _, bb := range []struct {
		name string
		pkt  []byte
		size int
	}{
		{"udp4-3000-mtu1500", pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(3000, 0), ID: 1}), 1500},
		{"udp6-8000-mtu1280", pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(8000, 0)), 1280},
		{"udp4-65507-mtu1500", pt.UDP("10.0.0.1:1", "10.0.0.2:2", pt.UDPOpts{Payload: payload(65507, 0), ID: 1}), 1500},
	} {
		frags := fragmentBoth(bb.pkt, bb.size)
		parsed := make([]packet.Parsed, len(frags))
		for i, f := range frags {
			parsed[i].Decode(f)
		}
		b.Run(bb.name, func(b *testing.B) {
			tb := defrag.New(defrag.Config{})
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.pkt)))
			for b.Loop() {
				for i := range parsed {
					tb.AddStatus(&parsed[i], 0)
				}
			}
			if s := tb.Stats(); s.Reassembled == 0 || s.Overlaps+s.Malformed+s.NoMemory != 0 {
				b.Fatalf("stats %+v", s)
			}
		})
	}
}

// An IPv6 atomic fragment (offset 0, M clear) is a whole packet: it is not
// queued, and does not disturb a pending datagram with its identification
// (RFC 6946; the kernel's nf_defrag_ipv6 would queue it).
func TestAtomicFragment6(t *testing.T) {
	pkt := pt.UDP6("[fd00::1]:1", "[fd00::2]:2", payload(64, 0))
	tb := defrag.New(defrag.Config{})
	add(t, tb, pt.FragmentAt6(pkt, 7, 0, 24, true), 0)
	atomic := pt.UDP("[fd00::1]:1", "[fd00::2]:2", pt.UDPOpts{Payload: []byte("x"), Ext: []pt.Ext{pt.FragExt(0, false, 7)}})
	if _, _, st := add(t, tb, atomic, 0); st != defrag.NotFragment {
		t.Fatalf("atomic fragment: %v", st)
	}
	add(t, tb, pt.FragmentAt6(pkt, 7, 24, 24, true), 0)
	whole, _, st := add(t, tb, pt.FragmentAt6(pkt, 7, 48, 24, false), 0)
	if st != defrag.Reassembled {
		t.Fatalf("pending datagram: %v", st)
	}
	checkWhole(t, whole, pkt)
}

// A tiny first fragment (the TCP header split across fragments, RFC 1858)
// decodes without error and reassembles: tracking sees the whole segment.
func TestTinyFirstFragment(t *testing.T) {
	pkt := pt.TCP("10.0.0.1:1234", "10.0.0.2:80", pt.TCPOpts{Flags: packet.SYN, MSS: 1460, WScale: 7, SACKPerm: true, ID: 3, Payload: payload(40, 0)})
	frags := [][]byte{pt.FragmentAt4(pkt, 0, 8, true), pt.FragmentAt4(pkt, 8, 16, true), pt.FragmentAt4(pkt, 24, len(pkt)-44, false)}
	var p packet.Parsed
	p.Decode(frags[0])
	if p.Err != packet.ErrNone || !p.Fragment || p.Key.DstPort != 80 {
		t.Fatalf("tiny first fragment: err %v fragment %v key %v", p.Err, p.Fragment, p.Key)
	}
	whole, _ := feed(t, defrag.New(defrag.Config{}), frags, 0)
	checkWhole(t, whole, pkt)
	var w packet.Parsed
	w.Decode(whole)
	if !w.TCPOpts.HasMSS || w.TCPOpts.WScale != 7 {
		t.Fatalf("reassembled options %+v", w.TCPOpts)
	}
}

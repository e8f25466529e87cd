package conntrack

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
)

// FuzzTrack feeds packet sequences built from the fuzz input through
// Track and Commit or Discard, with clock jumps, Reap and control-plane
// deletions in between, and checks after every step that nothing panics,
// that NEW is only ever given in a connection's original direction, that
// the table stays within Max, that events agree with the table, and (at
// checkpoints) the full structural invariants: List reports exactly the
// confirmed unexpired entries, each found again by both its tuples and its
// id; after a complete Reap, List's count equals Len.
func FuzzTrack(f *testing.F) {
	// Seeds: a TCP handshake with data and close, UDP exchanges with a
	// time jump, pings with errors quoting them, a mixed bag.
	f.Add([]byte{0x00, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0, 1, 0, 0, 4, 0, 0, 0, 0, 5})
	f.Add([]byte{0x03, 10, 1, 0, 0, 10, 1, 1, 0, 60, 3, 0, 10, 1, 0, 0, 60, 200, 10, 1, 1, 0})
	f.Add([]byte{0x10, 20, 0, 1, 0, 20, 1, 1, 0, 30, 0, 0, 5, 31, 1, 1, 2, 0})
	f.Add([]byte("mixed traffic through a small table with a few helpers and errors, and some more bytes"))
	f.Fuzz(func(t *testing.T, data []byte) {
		runTrackFuzz(t, data)
	})
}

// fzReader hands out fuzz bytes, zeros past the end.
type fzReader struct {
	b []byte
	i int
}

func (r *fzReader) u8() byte {
	r.i++
	if r.i > len(r.b) {
		return 0
	}
	return r.b[r.i-1]
}

func (r *fzReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fzReader) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }
func (r *fzReader) done() bool  { return r.i >= len(r.b) }

// fzSink counts events per type.
type fzSink struct{ n [8]int }

func (s *fzSink) Event(t EventType, info *EntryInfo) {
	if info.ID == 0 {
		panic("event for id 0")
	}
	s.n[t&7]++
}

var (
	fzHosts4 = []string{"10.0.0.1", "10.0.0.2", "192.0.2.1"}
	fzHosts6 = []string{"fd00::1", "fd00::2", "fd00:2::1"}
	fzPorts  = []int{1000, 1001, 21, 80}
	fzFlags  = []packet.TCPFlags{fSYN, fSYN | fACK, fACK, fACK | fPSH, fACK, fFIN | fACK, fRST, fRST | fACK, fSYN, fACK | fPSH,
		fSYN | fFIN, 0, fFIN}
	fzICMP4Types = []uint8{8, 0, 13, 14, 9, 40, 17}
	fzICMP6Types = []uint8{128, 129, 139, 135, 137, 200, 130}
)

// fzGen is the packet generator's state.
type fzGen struct {
	r    *fzReader
	seqs map[[2]string]uint32 // next seq per (src, dst) endpoint pair
	past [][]byte             // recent packets, for ICMP errors and retransmissions
}

// near returns a sequence number close to base, or anywhere.
func (g *fzGen) near(base uint32) uint32 {
	switch g.r.u8() % 8 {
	case 0, 1, 2:
		return base
	case 3:
		return base + uint32(g.r.u8())
	case 4:
		return base - uint32(g.r.u8())
	case 5:
		return base + uint32(g.r.u16())*4
	case 6:
		return base - uint32(g.r.u16())*4
	}
	return g.r.u32()
}

func (g *fzGen) hosts(v6 bool) (string, string) {
	hs := fzHosts4
	if v6 {
		hs = fzHosts6
	}
	a := hs[int(g.r.u8())%len(hs)]
	b := hs[int(g.r.u8())%len(hs)]
	return a, b
}

func fzEP(h string, port int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("[%s]:%d", h, port)
	}
	return fmt.Sprintf("%s:%d", h, port)
}

// packet builds the next packet, or nil when the op was not a packet.
func (g *fzGen) packet(op byte) []byte {
	v6 := g.r.u8()&1 == 1
	a, b := g.hosts(v6)
	var pkt []byte
	switch op % 8 {
	case 0, 1, 2: // TCP
		sp, dp := fzPorts[int(g.r.u8())%len(fzPorts)], fzPorts[int(g.r.u8())%len(fzPorts)]
		src, dst := fzEP(a, sp, v6), fzEP(b, dp, v6)
		flags := fzFlags[int(g.r.u8())%len(fzFlags)]
		n := int(g.r.u8() % 4 * 100)
		seq := g.near(g.seqs[[2]string{src, dst}])
		ack := g.near(g.seqs[[2]string{dst, src}])
		ws := int(g.r.u8()%16) - 1
		pkt = packettest.TCP(src, dst, packettest.TCPOpts{Flags: flags, Seq: seq, Ack: ack, Win: g.r.u16() | 1,
			WScale: ws, SACKPerm: ws&1 == 0, Payload: make([]byte, n)})
		end := seq + uint32(n)
		if flags&fSYN != 0 {
			end++
		}
		if flags&fFIN != 0 {
			end++
		}
		g.seqs[[2]string{src, dst}] = end
	case 3: // UDP
		sp, dp := fzPorts[int(g.r.u8())%len(fzPorts)], fzPorts[int(g.r.u8())%len(fzPorts)]
		pkt = packettest.UDP(fzEP(a, sp, v6), fzEP(b, dp, v6), packettest.UDPOpts{Payload: []byte{g.r.u8()}, NoChecksum: !v6 && g.r.u8()&1 == 1})
	case 4: // ICMP query or other type
		id := uint16(g.r.u8() % 3)
		if v6 {
			pkt = packettest.ICMP6Echo(a, b, fzICMP6Types[int(g.r.u8())%len(fzICMP6Types)], id, 1)
		} else {
			pkt = packettest.ICMP4Echo(a, b, fzICMP4Types[int(g.r.u8())%len(fzICMP4Types)], id, 1)
		}
	case 5: // ICMP error quoting an earlier packet, maybe truncated
		if len(g.past) == 0 {
			return nil
		}
		q := g.past[int(g.r.u8())%len(g.past)]
		qv6 := q[0]>>4 == 6
		if cut := int(g.r.u8()); cut < len(q) && g.r.u8()&3 == 0 {
			q = q[:cut]
		}
		ha, hb := g.hosts(qv6)
		if g.r.u8()&1 == 0 {
			// Often send it to the quoted packet's source, as a router would.
			if qv6 {
				if len(q) >= 24 {
					var s [16]byte
					copy(s[:], q[8:24])
					hb = netipString(s[:], true)
				}
			} else if len(q) >= 16 {
				hb = netipString(q[12:16], false)
			}
		}
		if qv6 {
			if g.r.u8()&7 == 0 {
				pkt = packettest.ICMP6Redirect("fe80::1", hb, "fe80::2", ha, q)
			} else {
				pkt = packettest.ICMP6Error(ha, hb, 1+g.r.u8()%4, g.r.u8()%5, q)
			}
		} else {
			types := []uint8{3, 11, 12, 4, 5}
			pkt = packettest.ICMP4Error(ha, hb, types[int(g.r.u8())%len(types)], g.r.u8()%5, q)
		}
	case 6: // GRE
		pkt = packettest.Raw(a, b, packet.GRE, []byte{0, 0, 8, 0}, packettest.IPOpts{})
	case 7: // retransmit an earlier packet, or its corrupted copy
		if len(g.past) == 0 {
			return nil
		}
		pkt = packettest.Clone(g.past[int(g.r.u8())%len(g.past)])
		if g.r.u8()&3 == 0 && len(pkt) > 0 {
			pkt[int(g.r.u16())%len(pkt)] ^= 1 << (g.r.u8() % 8)
		}
		return pkt
	}
	if len(g.past) < 16 {
		g.past = append(g.past, pkt)
	} else {
		g.past[int(g.r.u8())%16] = pkt
	}
	return pkt
}

func netipString(b []byte, v6 bool) string {
	if v6 {
		return fmt.Sprintf("%x:%x:%x:%x:%x:%x:%x:%x",
			binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]),
			binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:]), binary.BigEndian.Uint16(b[12:]), binary.BigEndian.Uint16(b[14:]))
	}
	return fmt.Sprintf("%d.%d.%d.%d", b[0], b[1], b[2], b[3])
}

// runTrackFuzz is FuzzTrack's body (also driven by a PRNG in
// TestTableRandomTraffic).
func runTrackFuzz(t *testing.T, data []byte) {
	r := &fzReader{b: data}
	mode := r.u8()
	ex := NewExpectations(8)
	sink := &fzSink{}
	fh := &tbHelper{name: "fz"}
	fh.dropIf = func(h *HelperContext) bool { return h.Packet.Length%7 == 0 }
	fh.onHelp = func(h *HelperContext) {
		if h.Packet.Length%5 != 0 {
			return
		}
		k := h.Tuple[1]
		k.DstPort = uint16(h.Packet.Length)
		x := Expectation{Tuple: k, SrcPortWild: true, Master: h.ConnID, MasterTuple: h.Tuple[0], Helper: "fz", Expires: h.Now + 300*tbSec}
		_ = h.Expect.Add(x, 2, h.Now)
	}
	cfg := DefaultConfig()
	cfg.TCP.Loose = mode&1 == 0
	cfg.Checksum = mode&2 == 0
	cfg.TCP.BeLiberal = mode&4 != 0
	max := 8 + int(mode>>4)*4
	tab := NewTable(cfg, TableOptions{Seed: uint64(mode), Max: max, Expect: ex, Events: sink, Helpers: []Helper{fh}})
	g := &fzGen{r: r, seqs: map[[2]string]uint32{}}
	now := tbStart
	var p packet.Parsed
	for step := 0; !r.done() && step < 2000; step++ {
		op := r.u8()
		switch {
		case op >= 0xf0: // clock jump
			switch op & 3 {
			case 0:
				now += int64(r.u8()) * int64(time.Millisecond)
			case 1:
				now += int64(r.u8()) * tbSec
			case 2:
				now += int64(r.u16()) * tbSec
			case 3:
				now += int64(r.u8()) * int64(time.Hour)
			}
			continue
		case op >= 0xe8: // housekeeping
			tab.Reap(now, int(r.u8()%8))
			ex.Reap(now, 4)
			continue
		case op >= 0xe4: // control plane
			switch op & 3 {
			case 0:
				var id ConnID
				tab.List(now, func(info *EntryInfo) bool { id = info.ID; return r.u8()&1 == 0 })
				if id != 0 && !tab.Delete(id) {
					t.Fatalf("step %d: Delete of a listed id failed", step)
				}
			case 1:
				tab.DeleteMatching(now, func(info *EntryInfo) bool { return info.Orig.Proto == packet.UDP })
			case 2:
				tab.Flush()
				if tab.Len() != 0 {
					t.Fatalf("step %d: Len %d after Flush", step, tab.Len())
				}
			case 3:
				checkTableInvariants(t, tab, now)
			}
			continue
		}
		b := g.packet(op)
		if b == nil {
			continue
		}
		p.Decode(b)
		_, prior, priorOK := tab.Lookup(p.Key, now)
		args := TrackArgs{Now: now, ChecksumVerified: r.u8()&15 == 0}
		if r.u8()&3 == 0 {
			args.Helper = 1
		}
		res := tab.Track(&p, args)
		accept := r.u8()&7 != 0
		if res.Info == New && priorOK && prior == Reply && !(p.Proto == packet.TCP && p.TCPFlags&fSYN != 0) {
			t.Fatalf("step %d: packet matching a reply tuple is NEW (%v %v)", step, p.Key, p.TCPFlags)
		}
		if res.Info == Invalid && res.HasConn() {
			t.Fatalf("step %d: INVALID result attached to an entry", step)
		}
		if res.IsNewEntry() && res.Info != New && res.Info != Related {
			t.Fatalf("step %d: new entry with ctinfo %v", step, res.Info)
		}
		if accept {
			tab.Commit(&res, &p, now)
		} else {
			tab.Discard(&res)
		}
		if accept && res.HasConn() && !p.IsICMPError() && res.Info != Untracked {
			info, d, ok := tab.Lookup(p.Key, now)
			if !ok {
				t.Fatalf("step %d: accepted %v packet's entry not found", step, res.Info)
			}
			if want := res.Info.Dir(); d != want && info.Orig != info.Reply {
				t.Fatalf("step %d: %v packet %v found its entry %v/%v in direction %v", step, res.Info, p.Key, info.Orig, info.Reply, d)
			}
			if res.Info == New && info.Orig != p.Key {
				t.Fatalf("step %d: NEW packet is not the entry's original tuple", step)
			}
		}
		if tab.Len() > tab.Max() {
			t.Fatalf("step %d: Len %d > Max %d", step, tab.Len(), tab.Max())
		}
		linked := 0
		for i := uint32(0); i < tab.nslots; i++ {
			if tab.at(i).linked {
				linked++
			}
		}
		if linked != tab.Len() {
			t.Fatalf("step %d: %d confirmed entries, Len %d: a tentative entry leaked", step, linked, tab.Len())
		}
		if st := tab.Stats(); uint64(sink.n[EventNew]) != st.Insert {
			t.Fatalf("step %d: %d NEW events, %d inserts", step, sink.n[EventNew], st.Insert)
		}
		if destroyed := sink.n[EventDestroy] + sink.n[EventExpired] + sink.n[EventEarlyDrop]; sink.n[EventNew]-destroyed != linked {
			t.Fatalf("step %d: NEW-DESTROY events = %d, %d entries", step, sink.n[EventNew]-destroyed, linked)
		}
		if step%32 == 0 {
			checkTableInvariants(t, tab, now)
		}
	}
	checkTableInvariants(t, tab, now)
	// After a complete reap nothing is expired: List shows every entry.
	tab.Reap(now, math.MaxInt)
	n := 0
	tab.List(now, func(*EntryInfo) bool { n++; return true })
	if n != tab.Len() {
		t.Fatalf("after a full Reap: List %d, Len %d", n, tab.Len())
	}
}

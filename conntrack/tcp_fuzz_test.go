package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
)

// FuzzTCPTracker feeds random segment sequences in random directions
// through tcpSim (the tracker applied the way the table applies it) and
// checks invariants after every packet. The input drives genSeg, which
// aims sequence numbers at the current window edges so that the fuzzer
// reaches every rule, not just the table's INVALID cells.
func FuzzTCPTracker(f *testing.F) {
	// Seeds: empty; all zeros (SYN, then packets at the exact window
	// edges); ascending bytes; a handshake-like prefix of SYN, SYN/ACK and
	// ACK picks (genFlags indexes 0, 1, 2) in alternating directions; the
	// liberal and no-loose configurations.
	f.Add([]byte{})
	f.Add(make([]byte, 256))
	asc := make([]byte, 256)
	for i := range asc {
		asc[i] = byte(i)
	}
	f.Add(asc)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 3, 7, 200, 9, 4, 4, 4, 2, 1, 0, 0, 0, 8, 5, 5, 5, 5, 6, 6, 6, 1, 1, 1, 1, 9})
	f.Add([]byte{2, 0, 2, 0, 1, 0, 7, 7, 7, 7, 0, 0, 8, 8, 8, 3, 3, 3, 3, 3, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &fuzzBytes{b: data}
		sim := newTCPSim()
		mode := src.byte()
		sim.cfg.BeLiberal = mode&1 != 0
		sim.cfg.Loose = mode&2 == 0
		sim.cfg.IgnoreInvalidRST = mode&4 != 0
		for step := 0; step < 64 && !src.done(); step++ {
			if b := src.byte(); b >= 0xf0 {
				sim.advance(time.Duration(b&0x0f) * 20 * time.Second)
			}
			from := tcpEnd(src.byte() & 1)
			seg := genSeg(src, sim, from)
			checkTCPStep(t, sim, from, seg)
		}
	})
}

// checkTCPStep sends one segment and checks the invariants of the tracker.
func checkTCPStep(t *testing.T, sim *tcpSim, from tcpEnd, seg tcpSeg) {
	t.Helper()
	prevAlive := sim.exists && sim.now < sim.expires
	prevState, prevStatus, prevOrigin, prevConn := sim.conn.state, sim.status, sim.origin, sim.conn
	st := sim.send(from, seg)
	idx := tcpIndexOf(seg.flags)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s %v (state before %v, alive %v): "+format, append([]any{from, seg, prevState, prevAlive}, args...)...)
	}

	if sim.exists {
		c := &sim.conn
		if c.state >= numTCPStates || c.lastIndex >= numTCPIndex || c.lastDir > Reply {
			fail("corrupt entry %+v", *c)
		}
		if c.dir[0].scale > tcpMaxWScale || c.dir[1].scale > tcpMaxWScale || c.lastWscale > tcpMaxWScale {
			fail("window scale above 14: %+v", *c)
		}
		if c.dir[Original].maxwin == 0 {
			// init gives the original side a window of at least 1; windows
			// only grow, and a resynchronisation (always answering an
			// original-direction SYN) restores it as at least 1.
			fail("original direction lost its window: %+v", c.dir[0])
		}
	}
	switch st.v {
	case vInvalid:
		switch st.reason {
		case ReasonTCPFlags, ReasonTCPInvalidNew, ReasonTCPNoSYN, ReasonTCPState, ReasonTCPInvalidRST:
		case ReasonTCPSeqAboveWindow, ReasonTCPAckAboveSent:
			if sim.cfg.BeLiberal {
				fail("window INVALID (%q) in liberal mode", st.reason)
			}
		default:
			fail("unexpected reason %q", st.reason)
		}
		if st.reason == ReasonTCPNoSYN && sim.cfg.Loose {
			fail("no-SYN with loose on")
		}
		if st.reason == ReasonTCPInvalidRST && (sim.cfg.IgnoreInvalidRST || idx != tcpRstSet) {
			fail("invalid RST: ignore=%v index %v", sim.cfg.IgnoreInvalidRST, idx)
		}
		if prevAlive {
			if sim.conn.state != prevState {
				fail("INVALID packet changed the state to %v", sim.conn.state)
			}
			if (st.reason == ReasonTCPState || st.reason == ReasonTCPInvalidRST) && sim.conn != prevConn {
				fail("INVALID (%q) packet changed the entry", st.reason)
			}
		}
		if st.out.refresh && (st.out.detail != tcpDetailTimeoutLowered || st.out.timeout != sim.cfg.TimeoutUnack ||
			prevStatus&StatusAssured == 0 || (idx != tcpRstSet && idx != tcpFinSet)) {
			fail("INVALID packet refreshed the timeout: %+v", st.out)
		}
	case vIgnore:
		if st.out.refresh {
			fail("ignored packet refreshed the timeout")
		}
		if !prevAlive || sim.conn.state != prevState {
			fail("ignored packet: alive %v, state %v", prevAlive, sim.conn.state)
		}
		if st.out.detail == tcpDetailTableIgnore && sim.conn.dir != prevConn.dir {
			fail("table-ignored packet changed the window data")
		}
	case vAccept:
		if st.deleted {
			if idx != tcpRstSet || (prevAlive && prevStatus&StatusSeenReply != 0) {
				fail("entry deleted by %v, status %v", idx, prevStatus)
			}
			break
		}
		if !sim.exists {
			fail("accepted but no entry")
		}
		if st.out.new != sim.conn.state {
			fail("out.new %v, state %v", st.out.new, sim.conn.state)
		}
		if st.out.refresh && !validTCPTimeout(&sim.cfg, st.out.timeout) {
			fail("timeout %v is no configured timeout", st.out.timeout)
		}
		if st.out.assured && (sim.conn.state != TCPEstablished || prevStatus&StatusSeenReply == 0) {
			fail("ASSURED set in %v with status %v", sim.conn.state, prevStatus)
		}
	}
	if st.created {
		switch {
		case idx == tcpSynSet && sim.conn.state == TCPSynSent:
		case idx == tcpAckSet && sim.cfg.Loose && sim.conn.state == TCPEstablished:
			if sim.conn.dir[0].flags&tcpFlagBeLiberal == 0 || sim.conn.dir[1].flags&tcpFlagBeLiberal == 0 {
				fail("pickup without BE_LIBERAL")
			}
		default:
			fail("entry created by %v in state %v", idx, sim.conn.state)
		}
		if sim.origin != from {
			fail("new entry's original direction is not its first packet's")
		}
		if prevAlive && from != prevOrigin && !(st.recreate && prevState == TCPTimeWait && idx == tcpSynSet) {
			// Only a reply-direction SYN on TIME_WAIT may replace an entry.
			fail("reply-direction packet created an entry (recreate %v)", st.recreate)
		}
	}
	if st.recreate && (idx != tcpSynSet || (prevState != TCPTimeWait && prevState != TCPClose)) {
		fail("re-created by %v from %v", idx, prevState)
	}
}

func validTCPTimeout(cfg *TCPConfig, d time.Duration) bool {
	if d == cfg.TimeoutRetrans || d == cfg.TimeoutUnack {
		return true
	}
	for s := TCPSynSent; s < numTCPStates; s++ {
		if d == cfg.Timeouts[s] {
			return true
		}
	}
	return false
}

// TestTCPRandomSequences runs the fuzz invariants over a fixed set of
// pseudo-random inputs, so that plain go test exercises them too.
func TestTCPRandomSequences(t *testing.T) {
	var x uint64 = 0x9e3779b97f4a7c15
	for n := 0; n < 3000; n++ {
		buf := make([]byte, 400)
		for i := range buf {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			buf[i] = byte(x)
		}
		src := &fuzzBytes{b: buf}
		sim := newTCPSim()
		mode := src.byte()
		sim.cfg.BeLiberal = mode&1 != 0
		sim.cfg.Loose = mode&2 == 0
		sim.cfg.IgnoreInvalidRST = mode&4 != 0
		for step := 0; step < 40 && !src.done(); step++ {
			if b := src.byte(); b >= 0xf0 {
				sim.advance(time.Duration(b&0x0f) * 20 * time.Second)
			}
			from := tcpEnd(src.byte() & 1)
			checkTCPStep(t, sim, from, genSeg(src, sim, from))
		}
	}
}

var sinkTCPOut tcpOut

// establishedConn returns an entry after a handshake with wscale 7 both
// ways and SACK permitted, and the tracker inputs of both directions.
func establishedConn(cfg *TCPConfig) (tcpConn, [2]tcpIn) {
	var c tcpConn
	syn := tseg(fS, ci, 0, 65535, 0).wscale(7).sackPerm().mss()
	c.init(&syn, cfg)
	in := [2]tcpIn{{dir: Original, cfg: cfg, remaining: time.Hour}, {dir: Reply, cfg: cfg, remaining: time.Hour}}
	c.packet(&syn, in[0])
	synack := tseg(fS|fA, si, ci+1, 65535, 0).wscale(7).sackPerm().mss()
	c.packet(&synack, in[1])
	in[0].status, in[1].status = StatusSeenReply, StatusSeenReply
	ack := tseg(fA, ci+1, si+1, 2048, 0)
	c.packet(&ack, in[0])
	in[0].status, in[1].status = StatusSeenReply|StatusAssured, StatusSeenReply|StatusAssured
	return c, in
}

// dataLoop sends one in-window packet per call: client data segments of
// 1448 bytes, every other one acknowledged by the server (with a SACK
// block when sack is set).
type dataLoop struct {
	c        tcpConn
	in       [2]tcpIn
	data     tcpSeg
	ack      tcpSeg
	i        int
	withSACK bool
}

func newDataLoop(cfg *TCPConfig, withSACK bool) *dataLoop {
	l := &dataLoop{withSACK: withSACK}
	l.c, l.in = establishedConn(cfg)
	l.data = tseg(fA|fP, ci+1, si+1, 2048, 1448)
	l.ack = tseg(fA, si+1, 0, 2048, 0)
	if withSACK {
		l.ack = l.ack.sackBlock(0, 0)
	}
	return l
}

func (l *dataLoop) step() tcpOut {
	l.i++
	if l.i%3 != 0 {
		out := l.c.packet(&l.data, l.in[0])
		l.data.seq += l.data.dataLen
		return out
	}
	l.ack.ack = l.data.seq - l.data.dataLen
	if l.withSACK {
		l.ack.opts.SACK[0] = [2]uint32{l.data.seq - l.data.dataLen, l.data.seq}
	}
	return l.c.packet(&l.ack, l.in[1])
}

func TestTCPNoAllocs(t *testing.T) {
	cfg := DefaultConfig().TCP
	for _, withSACK := range []bool{false, true} {
		l := newDataLoop(&cfg, withSACK)
		n := testing.AllocsPerRun(1000, func() {
			sinkTCPOut = l.step()
			if sinkTCPOut.action != tcpAccept {
				t.Fatalf("packet %d not accepted: %v %q", l.i, sinkTCPOut.action, sinkTCPOut.detail)
			}
		})
		if n != 0 {
			t.Errorf("sack=%v: %v allocs per packet", withSACK, n)
		}
	}
	var p packet.Parsed
	raw := rawTCP{src: netip.MustParseAddrPort("10.0.0.2:1"), dst: netip.MustParseAddrPort("10.0.0.3:2"), flags: fA, payloadLen: 100}.build()
	p.Decode(raw)
	var s tcpSeg
	if n := testing.AllocsPerRun(1000, func() {
		s = segOf(&p)
		var c tcpConn
		syn := tseg(fS, 1, 0, 1, 0)
		c.init(&syn, &cfg)
		sinkTCPOut = c.packet(&syn, tcpIn{cfg: &cfg})
		sinkTCPOut.reason = tcpCheckFlags(s.flags)
	}); n != 0 {
		t.Errorf("segOf/init/first packet: %v allocs", n)
	}
}

func BenchmarkTCPPacket(b *testing.B) {
	cfg := DefaultConfig().TCP
	for _, bc := range []struct {
		name string
		sack bool
	}{{"established-data", false}, {"established-data-sack", true}} {
		b.Run(bc.name, func(b *testing.B) {
			l := newDataLoop(&cfg, bc.sack)
			b.ReportAllocs()
			for b.Loop() {
				sinkTCPOut = l.step()
			}
			if sinkTCPOut.action != tcpAccept {
				b.Fatalf("not accepted: %v %q", sinkTCPOut.action, sinkTCPOut.detail)
			}
		})
	}
	b.Run("handshake", func(b *testing.B) {
		syn := tseg(fS, ci, 0, 65535, 0).wscale(7).sackPerm().mss()
		synack := tseg(fS|fA, si, ci+1, 65535, 0).wscale(7).sackPerm().mss()
		ack := tseg(fA, ci+1, si+1, 2048, 0)
		in := [2]tcpIn{{dir: Original, cfg: &cfg}, {dir: Reply, cfg: &cfg}}
		b.ReportAllocs()
		for b.Loop() {
			var c tcpConn
			c.init(&syn, &cfg)
			c.packet(&syn, in[0])
			c.packet(&synack, in[1])
			in[0].status = StatusSeenReply
			sinkTCPOut = c.packet(&ack, in[0])
			in[0].status = 0
		}
	})
	b.Run("segOf", func(b *testing.B) {
		var p packet.Parsed
		s := tseg(fA, 0, 0, 0, 0).sackBlock(1, 2)
		p.Decode(rawTCP{src: netip.MustParseAddrPort("10.0.0.2:1"), dst: netip.MustParseAddrPort("10.0.0.3:2"), flags: fA, opts: tcpOptBytes(&s), payloadLen: 1448}.build())
		b.ReportAllocs()
		var seg tcpSeg
		for b.Loop() {
			seg = segOf(&p)
		}
		sinkTCPOut.reason = Reason(seg.dataLen)
	})
}

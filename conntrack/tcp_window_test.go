package conntrack

import (
	"testing"
	"time"
)

// distinctTimeouts makes the timeouts of the rules of 2.8 distinguishable
// (UNACK and RETRANS are both 300 s by default).
func distinctTimeouts(s *tcpSim) {
	s.cfg.TimeoutUnack = 200 * time.Second
	s.cfg.TimeoutRetrans = 250 * time.Second
}

func mustSend(t *testing.T, sim *tcpSim, from tcpEnd, seg tcpSeg, want verdict) tcpStep {
	t.Helper()
	st := sim.send(from, seg)
	if st.v != want {
		t.Fatalf("%s %v: %v (action %v, detail %q, reason %q), want %v", from, seg, st.v, st.out.action, st.out.detail, st.reason, want)
	}
	return st
}

func TestTCPWindowScaling(t *testing.T) {
	tests := []struct {
		name                 string
		cws, sws             int // -1: no option
		wantCScale, wantSScl uint8
	}{
		{"both", 7, 8, 7, 8},
		{"client only", 7, -1, 0, 0},
		{"server only", -1, 8, 0, 0},
		{"none", -1, -1, 0, 0},
		{"capped", 15, 200, 14, 14},
		{"zero", 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newTCPSim()
			syn := tseg(fS, ci, 0, 300, 0)
			if tt.cws >= 0 {
				syn = syn.wscale(uint8(tt.cws))
			}
			synack := tseg(fS|fA, si, ci+1, 400, 0)
			if tt.sws >= 0 {
				synack = synack.wscale(uint8(tt.sws))
			}
			mustSend(t, sim, epClient, syn, vAccept)
			mustSend(t, sim, epServer, synack, vAccept)
			o, r := sim.conn.dir[Original], sim.conn.dir[Reply]
			if o.scale != tt.wantCScale || r.scale != tt.wantSScl {
				t.Fatalf("scales %d/%d, want %d/%d", o.scale, r.scale, tt.wantCScale, tt.wantSScl)
			}
			// SYN/ACK window is never scaled: the client may send up to
			// ack + 400.
			if o.maxend != ci+1+400 {
				t.Errorf("client maxend %d after SYN/ACK, want %d (unscaled)", o.maxend, ci+1+400)
			}
			mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, 10, 0), vAccept)
			if got, want := sim.conn.dir[Reply].maxend, uint32(si+1+10<<tt.wantCScale); got != want {
				t.Errorf("server maxend %d after client ACK win 10, want %d", got, want)
			}
			mustSend(t, sim, epServer, tseg(fA, si+1, ci+1, 1000, 0), vAccept)
			if got, want := sim.conn.dir[Original].maxend, max(uint32(ci+1+1000<<tt.wantSScl), ci+1+400); got != want {
				t.Errorf("client maxend %d after server ACK win 1000, want %d", got, want)
			}
			if got, want := sim.conn.dir[Reply].maxwin, max(uint32(1000)<<tt.wantSScl, 400); got != want {
				t.Errorf("server maxwin %d, want %d", got, want)
			}
		})
	}
}

func TestTCPSACKRaisesAck(t *testing.T) {
	for _, perm := range []bool{true, false} {
		sim := newTCPSim()
		syn := tseg(fS, ci, 0, win, 0)
		if perm {
			syn = syn.sackPerm()
		}
		mustSend(t, sim, epClient, syn, vAccept)
		mustSend(t, sim, epServer, tseg(fS|fA, si, ci+1, 3000, 0), vAccept)
		mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 0), vAccept)
		mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 2000), vAccept)
		// The server lost the first 1000 bytes and SACKs the second.
		mustSend(t, sim, epServer, tseg(fA, si+1, ci+1, 3000, 0).sackBlock(ci+1001, ci+2001), vAccept)
		o, r := sim.conn.dir[Original], sim.conn.dir[Reply]
		wantEnd, wantWin := uint32(ci+2001+3000), uint32(5000)
		if !perm {
			wantEnd, wantWin = ci+1+3000, 3000
		}
		if o.maxend != wantEnd || r.maxwin != wantWin {
			t.Errorf("sackPerm=%v: client maxend %d server maxwin %d, want %d %d", perm, o.maxend, r.maxwin, wantEnd, wantWin)
		}
		// A SACK block beyond what was sent fails bound III only when SACK
		// is permitted.
		want := vInvalid
		if !perm {
			want = vAccept
		}
		mustSend(t, sim, epServer, tseg(fA, si+1, ci+1, 3000, 0).sackBlock(ci+1001, ci+2002).sackBlock(ci+1, ci+500), want)
	}
}

func TestTCPZeroWindow(t *testing.T) {
	sim := newTCPSim()
	distinctTimeouts(sim)
	mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
	mustSend(t, sim, epServer, tseg(fS|fA, si, ci+1, 1000, 0), vAccept)
	mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 0), vAccept)
	mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 1000), vAccept)
	st := mustSend(t, sim, epServer, tseg(fA, si+1, ci+1001, 0, 0), vAccept)
	if got := sim.conn.dir[Original].maxend; got != ci+1001+1 {
		t.Errorf("client maxend %d after a zero window, want ack+1 = %d", got, ci+1002)
	}
	// 2.8-2d: last recorded window 0 -> RETRANS timeout.
	if st.out.timeout != 250*time.Second {
		t.Errorf("timeout after zero window %v, want RETRANS 250s", st.out.timeout)
	}
	// The probe carries one byte at the edge.
	mustSend(t, sim, epClient, tseg(fA, ci+1001, si+1, win, 1), vAccept)
	// The window opens again: back to normal (data unacknowledged: UNACK).
	st = mustSend(t, sim, epServer, tseg(fA, si+1, ci+1002, 1000, 0), vAccept)
	if st.out.timeout != 432000*time.Second {
		t.Errorf("timeout after window reopened %v, want ESTABLISHED", st.out.timeout)
	}
}

func TestTCPRetransmissions(t *testing.T) {
	sim := newTCPSim()
	distinctTimeouts(sim)
	for _, x := range hs() {
		mustSend(t, sim, x.from, x.seg, vAccept)
	}
	data := tseg(fA|fP, ci+1, si+1, win, 100)
	wantRetrans := []uint8{0, 1, 2, 3, 4}
	wantTimeout := []time.Duration{200, 200, 200, 250, 250}
	for i := range wantRetrans {
		st := mustSend(t, sim, epClient, data, vAccept)
		if sim.conn.retrans != wantRetrans[i] || st.out.timeout != wantTimeout[i]*time.Second {
			t.Errorf("send %d: retrans %d timeout %v, want %d %vs", i, sim.conn.retrans, st.out.timeout, wantRetrans[i], wantTimeout[i])
		}
	}
	// A different window is not a retransmission.
	mustSend(t, sim, epClient, tseg(fA|fP, ci+1, si+1, win-1, 100), vAccept)
	if sim.conn.retrans != 0 {
		t.Errorf("retrans %d after a changed window", sim.conn.retrans)
	}
	// The server's ACK resets the count and clears unacknowledged data.
	st := mustSend(t, sim, epServer, tseg(fA, si+1, ci+101, win, 0), vAccept)
	if sim.conn.retrans != 0 || st.out.timeout != 432000*time.Second {
		t.Errorf("after ack: retrans %d timeout %v", sim.conn.retrans, st.out.timeout)
	}
	// Rule a needs T[new] > T[RETRANS]: in CLOSE_WAIT (60 s) retransmitted
	// ACKs keep the state's timeout.
	mustSend(t, sim, epServer, tseg(fF|fA, si+1, ci+101, win, 0), vAccept)
	ack := tseg(fA, ci+101, si+2, win, 0)
	for i := 0; i < 5; i++ {
		st = mustSend(t, sim, epClient, ack, vAccept)
	}
	if sim.conn.state != TCPCloseWait || sim.conn.retrans != 4 || st.out.timeout != 60*time.Second {
		t.Errorf("close_wait: state %v retrans %d timeout %v, want CLOSE_WAIT 4 60s", sim.conn.state, sim.conn.retrans, st.out.timeout)
	}
}

// TestTCPTimeoutSelection checks each rule of 2.8-2 and its
// "T[new] > T[x]" condition.
func TestTCPTimeoutSelection(t *testing.T) {
	s := time.Second
	tests := []struct {
		name  string
		steps []expectStep
		want  time.Duration
	}{
		{"e: established", hs(), 432000 * s},
		{"e: syn_sent", hs()[:1], 120 * s},
		{"e: syn_recv", hs()[:2], 60 * s},
		{"c: unacknowledged data", seqs(hs(), []expectStep{
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)}}), 200 * s},
		{"c: unacknowledged data, T[FIN_WAIT] < T[UNACK]", seqs(hs(), []expectStep{
			{from: epClient, seg: tseg(fF|fA, ci+1, si+1, win, 10)}}), 120 * s},
		{"b: rst", seqs(hs(), []expectStep{
			{from: epServer, seg: tseg(fA, si+1, ci+1, win, 100)},
			{from: epClient, seg: tseg(fA, ci+1, si+101, win, 0)},
			{from: epServer, seg: tseg(fR, si+150, 0, 0, 0)}}), 10 * s},
		{"b: rst beats unacknowledged data", seqs(hs(), []expectStep{
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)},
			{from: epClient, seg: tseg(fR, ci+11, 0, 0, 0)}}), 10 * s},
		{"d: zero window", seqs(hs(), []expectStep{
			{from: epServer, seg: tseg(fA, si+1, ci+1, 0, 0)}}), 250 * s},
		{"d: zero window, T[LAST_ACK] < T[RETRANS]", seqs(hs(), []expectStep{
			{from: epClient, seg: tseg(fF|fA, ci+1, si+1, win, 0)},
			{from: epServer, seg: tseg(fF|fA, si+1, ci+2, 0, 0)}}), 30 * s},
		{"a: retransmissions beat unacknowledged data", seqs(hs(), []expectStep{
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)},
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)},
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)},
			{from: epClient, seg: tseg(fA, ci+1, si+1, win, 10)}}), 250 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newTCPSim()
			distinctTimeouts(sim)
			var st tcpStep
			for _, x := range tt.steps {
				st = sim.send(x.from, x.seg)
				if st.v != vAccept {
					t.Fatalf("%s %v: %v (%q)", x.from, x.seg, st.v, st.out.detail)
				}
			}
			if !st.out.refresh || st.out.timeout != tt.want {
				t.Errorf("refresh=%v timeout %v, want %v", st.out.refresh, st.out.timeout, tt.want)
			}
		})
	}
}

func TestTCPCommitRules(t *testing.T) {
	t.Run("rst before reply deletes", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
		st := mustSend(t, sim, epServer, tseg(fR|fA, 0, ci+1, 0, 0), vAccept)
		if st.out.action != tcpAcceptDelete || sim.exists {
			t.Errorf("action %v exists %v, want accept-delete", st.out.action, sim.exists)
		}
	})
	t.Run("rst after reply does not delete", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
		mustSend(t, sim, epServer, tseg(fS|fA, si, ci+1, win, 0), vAccept)
		st := mustSend(t, sim, epServer, tseg(fR, si+1, 0, 0, 0), vAccept)
		if st.out.action != tcpAccept || !sim.exists || sim.conn.state != TCPClose || st.out.timeout != 10*time.Second {
			t.Errorf("action %v exists %v state %v timeout %v", st.out.action, sim.exists, sim.conn.state, st.out.timeout)
		}
	})
	t.Run("syn retransmits do not keep an unanswered entry alive", func(t *testing.T) {
		sim := newTCPSim()
		syn := tseg(fS, ci, 0, win, 0)
		st := mustSend(t, sim, epClient, syn, vAccept)
		if !st.created || sim.expires != 120*time.Second {
			t.Fatalf("first syn: created %v expires %v", st.created, sim.expires)
		}
		for _, at := range []time.Duration{1, 3, 7, 15, 31, 63, 119} {
			sim.now = at * time.Second
			st = mustSend(t, sim, epClient, syn, vAccept)
			if st.created || st.out.refresh || sim.expires != 120*time.Second {
				t.Fatalf("retransmit at %v: created %v refresh %v expires %v", sim.now, st.created, st.out.refresh, sim.expires)
			}
		}
		sim.now = 121 * time.Second
		if st = mustSend(t, sim, epClient, syn, vAccept); !st.created {
			t.Errorf("the SYN after expiry did not create a fresh entry")
		}
	})
	t.Run("syn retransmit after a reply refreshes", func(t *testing.T) {
		sim := newTCPSim()
		syn := tseg(fS, ci, 0, win, 0)
		mustSend(t, sim, epClient, syn, vAccept)
		mustSend(t, sim, epServer, tseg(fA, si, 77, win, 0), vIgnore) // SEEN_REPLY now set
		sim.now = 50 * time.Second
		st := mustSend(t, sim, epClient, syn, vAccept)
		if !st.out.refresh || sim.expires != 170*time.Second {
			t.Errorf("refresh %v expires %v, want 170s", st.out.refresh, sim.expires)
		}
	})
	t.Run("pickup capped at unack until a reply", func(t *testing.T) {
		sim := newTCPSim()
		distinctTimeouts(sim)
		st := mustSend(t, sim, epClient, tseg(fA, ci, si, win, 0), vAccept)
		if !st.created || sim.conn.state != TCPEstablished || st.out.timeout != 200*time.Second || st.out.assured {
			t.Fatalf("pickup: created %v state %v timeout %v assured %v", st.created, sim.conn.state, st.out.timeout, st.out.assured)
		}
		// The first reply is still processed as unreplied (1.1 rule 6).
		st = mustSend(t, sim, epServer, tseg(fA, si, ci, win, 0), vAccept)
		if st.out.assured || st.out.timeout != 200*time.Second {
			t.Errorf("first reply: assured %v timeout %v, want not assured, UNACK", st.out.assured, st.out.timeout)
		}
		st = mustSend(t, sim, epClient, tseg(fA, ci, si, win, 0), vAccept)
		if !st.out.assured || sim.status&StatusAssured == 0 || st.out.timeout != 432000*time.Second {
			t.Errorf("third packet of a pickup: assured %v timeout %v", st.out.assured, st.out.timeout)
		}
	})
	t.Run("assured on the third handshake packet only", func(t *testing.T) {
		sim := newTCPSim()
		for i, x := range hs() {
			st := mustSend(t, sim, x.from, x.seg, vAccept)
			if st.out.assured != (i == 2) {
				t.Errorf("packet %d: assured %v", i+1, st.out.assured)
			}
		}
	})
	t.Run("fixed timeout is never refreshed", func(t *testing.T) {
		sim := handshake(t, ci, si, win)
		sim.status |= StatusFixedTimeout
		exp := sim.expires
		sim.advance(time.Second)
		st := mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 10), vAccept)
		if st.out.refresh || sim.expires != exp {
			t.Errorf("refresh %v with FIXED_TIMEOUT", st.out.refresh)
		}
	})
	t.Run("close_init on the side that sent the first fin", func(t *testing.T) {
		sim := handshake(t, ci, si, win)
		mustSend(t, sim, epServer, tseg(fF|fA, si+1, ci+1, win, 0), vAccept)
		if sim.conn.dir[Reply].flags&tcpFlagCloseInit == 0 || sim.conn.dir[Original].flags&tcpFlagCloseInit != 0 {
			t.Errorf("flags %v / %v", sim.conn.dir[Original].flags, sim.conn.dir[Reply].flags)
		}
		// The FIN retransmitted in FIN_WAIT does not mark the other side.
		mustSend(t, sim, epServer, tseg(fF|fA, si+1, ci+1, win, 0), vAccept)
		if sim.conn.state != TCPLastAck {
			t.Fatalf("state %v", sim.conn.state)
		}
		if sim.conn.dir[Original].flags&tcpFlagCloseInit != 0 {
			t.Errorf("client marked close-init")
		}
	})
}

// TestTCPTimeoutShortening is 2.9: an out-of-window FIN/RST answering the
// other side's FIN/RST lowers an ASSURED entry's timeout to UNACK.
func TestTCPTimeoutShortening(t *testing.T) {
	finFar := tseg(fF|fA, si+9000000, ci+1, win, 0)
	rstFar := tseg(fR, ci+9000000, 0, 0, 0)
	tests := []struct {
		name    string
		prep    func(*tcpSim)
		first   tcpSeg // from the server, out of window
		second  tcpSeg // from the client, out of window
		lowered bool
	}{
		{name: "fin then rst", first: finFar, second: rstFar, lowered: true},
		{name: "rst then fin", first: tseg(fR, si+9000000, 0, 0, 0), second: tseg(fF|fA, ci+9000000, si+1, win, 0), lowered: true},
		{name: "fin then ack: not fin/rst", first: finFar, second: tseg(fA, ci+9000000, si+1, win, 0)},
		{name: "ack then rst: no fin/rst to answer", first: tseg(fA, si+9000000, ci+1, win, 0), second: rstFar},
		{name: "not assured", prep: func(s *tcpSim) { s.status &^= StatusAssured }, first: finFar, second: rstFar},
		{name: "fixed timeout", prep: func(s *tcpSim) { s.status |= StatusFixedTimeout }, first: finFar, second: rstFar},
		{name: "remaining below 120s", prep: func(s *tcpSim) {
			s.cfg.TimeoutUnack = 60 * time.Second
			s.expires = s.now + 120*time.Second // 119 s left after the 1 s step
		}, first: finFar, second: rstFar},
		{name: "remaining at 120s, above unack", prep: func(s *tcpSim) {
			s.cfg.TimeoutUnack = 60 * time.Second
			s.expires = s.now + 121*time.Second // exactly 120 s left
		}, first: finFar, second: rstFar, lowered: true},
		{name: "remaining not above unack", prep: func(s *tcpSim) { s.cfg.TimeoutUnack = 500000 * time.Second }, first: finFar, second: rstFar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := handshake(t, ci, si, win)
			if tt.prep != nil {
				tt.prep(sim)
			}
			sim.advance(time.Second)
			exp := sim.expires
			st := mustSend(t, sim, epServer, tt.first, vInvalid)
			if st.out.refresh || sim.expires != exp {
				t.Fatalf("first packet changed the timeout")
			}
			st = mustSend(t, sim, epClient, tt.second, vInvalid)
			if st.out.refresh != tt.lowered {
				t.Fatalf("lowered=%v (detail %q), want %v", st.out.refresh, st.out.detail, tt.lowered)
			}
			if tt.lowered && (sim.expires != sim.now+sim.cfg.TimeoutUnack || st.out.detail != tcpDetailTimeoutLowered) {
				t.Errorf("expires %v, want now+UNACK", sim.expires-sim.now)
			}
			if !tt.lowered && sim.expires != exp {
				t.Errorf("timeout changed")
			}
			if sim.conn.state != TCPEstablished {
				t.Errorf("state %v", sim.conn.state)
			}
		})
	}
}

func TestTCPLiberalDoesNotUpdateWindow(t *testing.T) {
	for _, mode := range []string{"sysctl", "pickup"} {
		t.Run(mode, func(t *testing.T) {
			var sim *tcpSim
			if mode == "sysctl" {
				sim = handshake(t, ci, si, win)
				sim.cfg.BeLiberal = true
			} else {
				sim = newTCPSim()
				mustSend(t, sim, epClient, tseg(fA, ci, si, win, 0), vAccept)
				mustSend(t, sim, epServer, tseg(fA, si, ci, win, 0), vAccept)
			}
			before := sim.conn.dir
			st := mustSend(t, sim, epClient, tseg(fA, ci+50000000, si+1, 7, 100), vAccept)
			if !st.out.liberal || st.out.detail != tcpDetailSeqOverUpper {
				t.Errorf("liberal=%v detail %q", st.out.liberal, st.out.detail)
			}
			if sim.conn.dir != before {
				t.Errorf("window data changed:\n%+v\n%+v", before, sim.conn.dir)
			}
		})
	}
}

func TestTCPOvershootAdvancesEnd(t *testing.T) {
	sim := handshake(t, ci, si, win)
	st := mustSend(t, sim, epClient, tseg(fA, ci+1+win+1, si+1, win, 100), vIgnore)
	if st.out.detail != tcpDetailOvershoot || st.out.refresh {
		t.Errorf("detail %q refresh %v", st.out.detail, st.out.refresh)
	}
	o := sim.conn.dir[Original]
	if o.end != ci+1+win+101 || o.flags&tcpFlagDataUnack == 0 {
		t.Errorf("client end %d flags %v, want %d with data-unack", o.end, o.flags, ci+1+win+101)
	}
	// More than a window past: INVALID, end unchanged.
	mustSend(t, sim, epClient, tseg(fA, ci+1+3*win, si+1, win, 100), vInvalid)
	if sim.conn.dir[Original].end != o.end {
		t.Errorf("an invalid segment moved end")
	}
}

func TestTCPSeqAdjustHook(t *testing.T) {
	for _, adj := range []bool{false, true} {
		sim := handshake(t, ci, si, win)
		mustSend(t, sim, epClient, tseg(fA|fP, ci+1, si+1, win, 100), vAccept)
		if adj {
			// NAT grew the client's segment at ci+1 by 10 bytes: the
			// server acknowledges in the adjusted sequence space.
			sim.peerAdj[Reply] = tcpSeqOffset{pos: ci + 1, before: 0, after: 10}
		}
		want := vInvalid
		if adj {
			want = vAccept
		}
		mustSend(t, sim, epServer, tseg(fA, si+1, ci+111, win, 0), want)
		if adj && sim.conn.dir[Reply].maxack != ci+101 {
			t.Errorf("server maxack %d, want the un-adjusted %d", sim.conn.dir[Reply].maxack, ci+101)
		}
	}
	o := tcpSeqOffset{pos: 100, before: 3, after: 7}
	if o.at(100) != 3 || o.at(101) != 7 || o.at(99) != 3 {
		t.Errorf("tcpSeqOffset.at: %d %d %d", o.at(99), o.at(100), o.at(101))
	}
}

func TestTCPResyncRestoresWindowData(t *testing.T) {
	sim := handshake(t, ci, si, win)
	mustSend(t, sim, epServer, tseg(fR, si+1, 0, 0, 0), vAccept)
	mustSend(t, sim, epClient, tseg(fS, 777777, 0, 0, 0).wscale(20).sackPerm(), vIgnore)
	if sim.conn.lastIndex != tcpSynSet || sim.conn.lastEnd != 777778 || sim.conn.lastWscale != 14 ||
		sim.conn.lastFlags != tcpFlagWindowScale|tcpFlagSACKPerm {
		t.Fatalf("ignored SYN not recorded: %+v", sim.conn)
	}
	st := mustSend(t, sim, epServer, tseg(fS|fA, 424242, 777778, 5000, 0).wscale(3), vAccept)
	if st.out.detail != tcpDetailResync || st.out.old != TCPClose || st.out.new != TCPSynRecv {
		t.Fatalf("detail %q %v->%v", st.out.detail, st.out.old, st.out.new)
	}
	o, r := sim.conn.dir[Original], sim.conn.dir[Reply]
	// The restored side keeps its old maxack value, but MAXACK_SET is gone
	// with the flags (they are replaced by the SYN's).
	wantO := tcpDirState{end: 777778, maxend: 777778 + 5000, maxwin: 1, maxack: si + 1, scale: 14, flags: tcpFlagWindowScale | tcpFlagSACKPerm}
	if o != wantO {
		t.Errorf("client after resync %+v, want %+v", o, wantO)
	}
	wantR := tcpDirState{end: 424243, maxend: 424243, maxwin: 5000, maxack: 777778, scale: 3, flags: tcpFlagWindowScale | tcpFlagMaxAckSet}
	if r != wantR {
		t.Errorf("server after resync %+v, want %+v", r, wantR)
	}
}

func TestTCPIgnoreBookkeeping(t *testing.T) {
	t.Run("ignored packets do not refresh", func(t *testing.T) {
		sim := handshake(t, ci, si, win)
		sim.advance(10 * time.Second)
		exp := sim.expires
		st := mustSend(t, sim, epClient, tseg(fS, 99, 0, win, 0), vIgnore)
		if st.out.refresh || sim.expires != exp || st.out.old != st.out.new {
			t.Errorf("refresh %v expires %v->%v", st.out.refresh, exp, sim.expires)
		}
	})
	t.Run("syn in last_ack expects a challenge ack", func(t *testing.T) {
		sim := handshake(t, ci, si, win)
		mustSend(t, sim, epClient, clientFIN.seg, vAccept)
		mustSend(t, sim, epServer, serverFINLA.seg, vAccept)
		mustSend(t, sim, epClient, tseg(fS, 99, 0, win, 0), vIgnore)
		if sim.conn.lastFlags&tcpFlagExpChallenge == 0 {
			t.Errorf("challenge-ack mark not set")
		}
	})
	t.Run("syn elsewhere does not", func(t *testing.T) {
		sim := handshake(t, ci, si, win)
		mustSend(t, sim, epClient, tseg(fS, 99, 0, win, 0), vIgnore)
		if sim.conn.lastFlags&tcpFlagExpChallenge != 0 {
			t.Errorf("challenge-ack mark set in ESTABLISHED")
		}
	})
	t.Run("reply ack in syn_sent saves its ack", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
		mustSend(t, sim, epServer, tseg(fA, si, 31337, win, 0), vIgnore)
		if sim.conn.lastAck != 31337 || sim.conn.lastDir != Reply || sim.conn.lastIndex != tcpAckSet {
			t.Errorf("last: %v/%v ack %d", sim.conn.lastIndex, sim.conn.lastDir, sim.conn.lastAck)
		}
	})
}

func TestTCPSYNReinit(t *testing.T) {
	t.Run("client restarts with a higher ISN in SYN_SENT", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0).wscale(3), vAccept)
		mustSend(t, sim, epClient, tseg(fS, ci+10000, 0, 500, 0), vAccept)
		o := sim.conn.dir[Original]
		// No options on the new SYN: the recorded scale stays.
		if o.end != ci+10001 || o.maxend != ci+10001 || o.maxwin != 500 || o.scale != 3 {
			t.Errorf("client %+v", o)
		}
	})
	t.Run("lower ISN does not reinit", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
		mustSend(t, sim, epClient, tseg(fS, ci-10, 0, 500, 0), vAccept)
		if o := sim.conn.dir[Original]; o.end != ci+1 || o.maxwin != win {
			t.Errorf("client %+v", o)
		}
	})
	t.Run("server restarts with a higher ISN in SYN_RECV", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, ci, 0, win, 0), vAccept)
		mustSend(t, sim, epServer, tseg(fS|fA, si, ci+1, win, 0), vAccept)
		mustSend(t, sim, epServer, tseg(fS|fA, si+50000, ci+1, 700, 0), vIgnore) // reply SYN/ACK in SYN_RECV: IG
		mustSend(t, sim, epClient, tseg(fA, ci+1, si+1, win, 0), vAccept)
		if sim.conn.dir[Reply].end != si+1 {
			t.Errorf("ignored SYN/ACK reinitialised the server")
		}
	})
	t.Run("rst seq 0 answering the syn", func(t *testing.T) {
		sim := newTCPSim()
		mustSend(t, sim, epClient, tseg(fS, 0x80000000, 0, win, 0), vAccept)
		mustSend(t, sim, epServer, tseg(fA, si, 99, win, 0), vIgnore) // SEEN_REPLY
		// A RST with seq 0 in SYN_SENT is taken at the sender's end.
		st := mustSend(t, sim, epClient, tseg(fR, 0, 0, 0, 0), vAccept)
		if sim.conn.state != TCPClose || st.out.detail != tcpDetailNone {
			t.Errorf("state %v detail %q", sim.conn.state, st.out.detail)
		}
	})
}

// TestTCPPickupBothSidesUnknown: with no window data on either side (not
// reachable through init, which always fills the original side), the
// first packet seeds both directions so that III and IV pass.
func TestTCPPickupBothSidesUnknown(t *testing.T) {
	cfg := testTCPConfig()
	c := tcpConn{state: TCPEstablished, lastIndex: tcpNoneSet}
	seg := tseg(fA, 100, 200, 10, 5)
	out := c.packet(&seg, tcpIn{dir: Original, status: StatusSeenReply | StatusAssured, cfg: &cfg})
	if out.action != tcpAccept {
		t.Fatalf("%v %q", out.action, out.detail)
	}
	want := [2]tcpDirState{
		{end: 105, maxend: 115, maxwin: 10, maxack: 200, flags: tcpFlagMaxAckSet},
		{end: 200, maxend: 210},
	}
	if c.dir != want {
		t.Errorf("window data %+v, want %+v", c.dir, want)
	}
}

// TestTCPPickupKeepalive: a picked-up connection whose first packet was a
// keepalive probe (seq one below the next byte): the peer's ACK for the
// next byte bumps the prober's end instead of failing bound III.
func TestTCPPickupKeepalive(t *testing.T) {
	sim := newTCPSim()
	mustSend(t, sim, epClient, tseg(fA, 999, 5000, win, 0), vAccept)
	st := mustSend(t, sim, epServer, tseg(fA, 5000, 1000, win, 0), vAccept)
	if sim.conn.dir[Original].end != 1000 || st.out.liberal {
		t.Errorf("client end %d, liberal %v (detail %q): want 1000 and an in-window ACK", sim.conn.dir[Original].end, st.out.liberal, st.out.detail)
	}
	// Any other ack leaves the end alone (and is accepted liberally).
	sim = newTCPSim()
	mustSend(t, sim, epClient, tseg(fA, 999, 5000, win, 0), vAccept)
	st = mustSend(t, sim, epServer, tseg(fA, 5000, 1001, win, 0), vAccept)
	if sim.conn.dir[Original].end != 999 || !st.out.liberal || st.out.detail != tcpDetailAckOverUpper {
		t.Errorf("client end %d, liberal %v detail %q", sim.conn.dir[Original].end, st.out.liberal, st.out.detail)
	}
}

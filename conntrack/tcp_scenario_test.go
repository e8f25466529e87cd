package conntrack

import (
	"fmt"
	"testing"
	"time"
)

// The Linux conntrack packetdrill selftests (reference section 9,
// tools/testing/selftests/net/netfilter/packetdrill/*.pkt) replayed as
// segment sequences. Packetdrill numbers are relative to the initial
// sequence numbers; each scenario runs with several ISN pairs, including
// pairs whose sequence space wraps during the test.

var scenarioISNs = []struct{ l, r uint32 }{
	{1000, 5000000},
	{0xfffffc00, 0x7ffffff0}, // local wraps at once, remote crosses 2^31
	{0x80000000, 0xffff0000}, // remote wraps during large transfers
	{0, 0},
}

// scenarioRun runs build(local ISN, remote ISN) for every ISN pair and
// checks the steps, the number of INVALID packets and the final state.
func scenarioRun(t *testing.T, wantInvalid int, final TCPState, finalStatus Status,
	build func(l, r uint32) []expectStep) {
	t.Helper()
	for _, isn := range scenarioISNs {
		t.Run(fmt.Sprintf("isn=%#x,%#x", isn.l, isn.r), func(t *testing.T) {
			sim := newTCPSim()
			runSteps(t, sim, build(isn.l, isn.r))
			if sim.invalid != wantInvalid {
				t.Errorf("%d INVALID packets, want %d", sim.invalid, wantInvalid)
			}
			if !sim.exists || sim.conn.state != final {
				t.Errorf("final: exists=%v state %v, want %v", sim.exists, sim.conn.state, final)
			}
			if sim.status&(StatusSeenReply|StatusAssured) != finalStatus {
				t.Errorf("final status %v, want %v", sim.status, finalStatus)
			}
		})
	}
}

// 9.1 conntrack_rst_invalid.pkt: out-of-window RSTs are INVALID, the entry
// stays ESTABLISHED; the RST at the exact next seq closes it. The local
// endpoint is the client.
func TestTCPScenarioRSTInvalid(t *testing.T) {
	scenarioRun(t, 4, TCPClose, StatusSeenReply|StatusAssured, scenario91)
}

// 9.2 conntrack_inexact_rst.pkt: once the connection is closing, RSTs are
// not checked.
func TestTCPScenarioInexactRST(t *testing.T) {
	scenarioRun(t, 0, TCPClose, StatusSeenReply|StatusAssured, scenario92)
}

// 9.3 conntrack_syn_challenge_ack.pkt: a SYN answered by a challenge ACK of
// an old incarnation; the RST answering it and the SYN retransmission
// create a fresh entry that completes normally.
func TestTCPScenarioSYNChallengeACK(t *testing.T) {
	scenarioRun(t, 0, TCPEstablished, StatusSeenReply|StatusAssured, scenario93)
	// After the re-creation the entry is UNREPLIED (the reference's
	// "grep UNREPLIED | grep SYN_SENT").
	sim := newTCPSim()
	sim.send(epClient, tseg(fS, 1, 0, 65535, 0))
	sim.send(epServer, tseg(fA, 99, 12345, 240, 0))
	sim.send(epClient, tseg(fR, 12345, 0, 0, 0))
	if sim.status&StatusSeenReply == 0 {
		t.Fatalf("the ignored reply ACK must set SEEN_REPLY")
	}
	st := sim.send(epClient, tseg(fS, 1, 0, 65535, 0))
	if !st.recreate || sim.status&StatusSeenReply != 0 || sim.conn.state != TCPSynSent {
		t.Errorf("after SYN: recreate=%v status=%v state=%v, want a new unreplied SYN_SENT entry", st.recreate, sim.status, sim.conn.state)
	}
}

// 9.4 conntrack_synack_old.pkt: a stale SYN/ACK is INVALID (it acks data
// never sent) but initialises the reply window data; the SYN
// retransmission stays unreplied; the correct SYN/ACK, 65535 below the
// stale one, is accepted.
func TestTCPScenarioSYNACKOld(t *testing.T) {
	scenarioRun(t, 1, TCPEstablished, StatusSeenReply|StatusAssured, scenario94)
	// The details the reference calls out: the stale SYN/ACK initialised
	// the reply direction, and the retransmitted SYN left the entry
	// unreplied without refreshing its timeout.
	sim := newTCPSim()
	sim.send(epClient, tseg(fS, 0, 0, 65535, 0).wscale(8))
	sim.send(epServer, tseg(fS|fA, 145824453, 643160523, 240, 0).wscale(0))
	if r := sim.conn.dir[Reply]; r.end != 145824454 || r.maxwin != 240 {
		t.Errorf("reply window data after the stale SYN/ACK = %+v, want end 145824454 maxwin 240", r)
	}
	exp := sim.expires
	sim.advance(time.Second)
	st := sim.send(epClient, tseg(fS, 0, 0, 65535, 0).wscale(8))
	if st.out.refresh || sim.expires != exp || st.out.detail != tcpDetailSynRetrans {
		t.Errorf("SYN retransmit: refresh=%v expires %v->%v detail %q", st.out.refresh, exp, sim.expires, st.out.detail)
	}
	if sim.status&StatusSeenReply != 0 {
		t.Errorf("INVALID reply packet set SEEN_REPLY")
	}
}

// 9.5 conntrack_synack_reuse.pkt: a new SYN on an established connection
// is ignored, the challenge ACK passes, the RST at the acked position
// closes, and the next SYN starts a fresh entry that the SYN/ACK moves to
// SYN_RECV. The local endpoint is the server.
func TestTCPScenarioSYNACKReuse(t *testing.T) {
	scenarioRun(t, 0, TCPSynRecv, StatusSeenReply, scenario95)
}

// 9.6 conntrack_ack_loss_stall.pkt: the retransmission of the first
// segment, long acknowledged and more than a window behind, is ignored
// (bound II), not INVALID, so the receiver's duplicate ACK can unstall the
// sender.
func TestTCPScenarioACKLossStall(t *testing.T) {
	scenarioRun(t, 0, TCPEstablished, StatusSeenReply|StatusAssured, scenario96)
}

func scenario91(L, R uint32) []expectStep {
	return []expectStep{
		{name: "> S", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept, state: TCPSynSent},
		{name: "< S.", from: epServer, seg: tseg(fS|fA, R, L+1, 65535, 0).mss(), v: vAccept, state: TCPSynRecv},
		{name: "> .", from: epClient, seg: tseg(fA, L+1, R+1, 65535, 0), v: vAccept, state: TCPEstablished, status: StatusAssured},
		{name: "< . 1:1001", from: epServer, seg: tseg(fA, R+1, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< . 1001:2001", from: epServer, seg: tseg(fA, R+1001, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< . 2001:3001", from: epServer, seg: tseg(fA, R+2001, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "> . ack 1001", from: epClient, seg: tseg(fA, L+1, R+1001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "> . ack 2001", from: epClient, seg: tseg(fA, L+1, R+2001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "> . ack 3001", from: epClient, seg: tseg(fA, L+1, R+3001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "< R 0", from: epServer, seg: tseg(fR, R, 0, 0, 0), v: vInvalid, reason: ReasonTCPInvalidRST, state: TCPEstablished},
		{name: "< R 1000000", from: epServer, seg: tseg(fR, R+1000000, 0, 0, 0), v: vInvalid, reason: ReasonTCPSeqAboveWindow,
			detail: tcpDetailSeqOverUpper, state: TCPEstablished},
		{name: "< R 42", from: epServer, seg: tseg(fR, R+42, 0, 0, 0), v: vInvalid, reason: ReasonTCPInvalidRST, state: TCPEstablished},
		{name: "> P. 1:1001", from: epClient, seg: tseg(fP|fA, L+1, R+3001, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< . ack 1001", from: epServer, seg: tseg(fA, R+3001, L+1001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "< R. 3000", from: epServer, seg: tseg(fR|fA, R+3000, L+1001, 0, 0), v: vInvalid, reason: ReasonTCPInvalidRST, state: TCPEstablished},
		{name: "< R. 3001", from: epServer, seg: tseg(fR|fA, R+3001, L+1001, 0, 0), v: vAccept, state: TCPClose},
	}
}

func scenario92(L, R uint32) []expectStep {
	return []expectStep{
		{name: "> S", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept, state: TCPSynSent},
		{name: "< S.", from: epServer, seg: tseg(fS|fA, R, L+1, 65535, 0).mss(), v: vAccept, state: TCPSynRecv},
		{name: "> .", from: epClient, seg: tseg(fA, L+1, R+1, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "< . 1:1001", from: epServer, seg: tseg(fA, R+1, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< . 1001:2001", from: epServer, seg: tseg(fA, R+1001, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< . 2001:3001", from: epServer, seg: tseg(fA, R+2001, L+1, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "> . ack 1001", from: epClient, seg: tseg(fA, L+1, R+1001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "> . ack 2001", from: epClient, seg: tseg(fA, L+1, R+2001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "> . ack 3001", from: epClient, seg: tseg(fA, L+1, R+3001, 65535, 0), v: vAccept, state: TCPEstablished},
		{name: "> P. 1:1001", from: epClient, seg: tseg(fP|fA, L+1, R+3001, 65535, 1000), v: vAccept, state: TCPEstablished},
		{name: "< F.", from: epServer, seg: tseg(fF|fA, R+3001, L+1001, 65535, 0), v: vAccept, state: TCPFinWait},
		{name: "> . ack 3002", from: epClient, seg: tseg(fA, L+1001, R+3002, 65535, 0), v: vAccept, state: TCPCloseWait},
		{name: "> R.", from: epClient, seg: tseg(fR|fA, L+1001, R+3002, 65535, 0), v: vAccept, state: TCPClose, detail: tcpDetailRSTClosing},
		{name: "< R 2001 (spurious)", from: epServer, seg: tseg(fR, R+2001, 0, 0, 0), v: vAccept, state: TCPClose, detail: tcpDetailRSTClosing,
			advance: 100 * time.Millisecond},
	}
}

func scenario93(L, R uint32) []expectStep {
	return []expectStep{
		{name: "> S", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept, state: TCPSynSent},
		{name: "< . challenge ack", from: epServer, seg: tseg(fA, R+145824453, L+643160523, 240, 0).mss().wscale(0),
			v: vIgnore, state: TCPSynSent, advance: 100 * time.Millisecond},
		{name: "> R", from: epClient, seg: tseg(fR, L+643160523, 0, 0, 0), v: vAccept, state: TCPClose, detail: tcpDetailRSTAnswersChallenge,
			status: StatusSeenReply, advance: 10 * time.Millisecond},
		{name: "> S again", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept,
			state: TCPSynSent, recreate: true, advance: 10 * time.Millisecond},
		{name: "< S.", from: epServer, seg: tseg(fS|fA, R, L+1, 250, 0).mss().wscale(0), v: vAccept, state: TCPSynRecv,
			advance: 100 * time.Millisecond},
		{name: "> .", from: epClient, seg: tseg(fA, L+1, R+1, 256, 0), v: vAccept, state: TCPEstablished,
			status: StatusAssured, advance: 10 * time.Millisecond},
	}
}

func scenario94(L, R uint32) []expectStep {
	return []expectStep{
		{name: "> S", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept, state: TCPSynSent},
		{name: "< S. stale", from: epServer, seg: tseg(fS|fA, R+145824453, L+643160523, 240, 0).mss().wscale(0),
			v: vInvalid, reason: ReasonTCPAckAboveSent, state: TCPSynSent, advance: 100 * time.Millisecond},
		{name: "> S retransmit", from: epClient, seg: tseg(fS, L, 0, 65535, 0).mss().sackPerm().wscale(8), v: vAccept,
			state: TCPSynSent, advance: 910 * time.Millisecond},
		{name: "< S. correct", from: epServer, seg: tseg(fS|fA, R+145758918, L+1, 250, 0).mss().wscale(0), v: vAccept, state: TCPSynRecv},
		{name: "> P. 1:2", from: epClient, seg: tseg(fP|fA, L+1, R+145758919, 256, 1), v: vAccept, state: TCPEstablished,
			status: StatusAssured},
	}
}

func scenario95(L, R uint32) []expectStep {
	// R is the remote client's ISN, L the local server's.
	return []expectStep{
		{name: "< S", from: epClient, seg: tseg(fS, R, 0, 32792, 0).mss().wscale(7), v: vAccept, state: TCPSynSent},
		{name: "> S.", from: epServer, seg: tseg(fS|fA, L, R+1, 65535, 0).mss().wscale(8), v: vAccept, state: TCPSynRecv},
		{name: "< .", from: epClient, seg: tseg(fA, R+1, L+1, 257, 0), v: vAccept, state: TCPEstablished, status: StatusAssured,
			advance: 10 * time.Millisecond},
		{name: "< P. 1:101", from: epClient, seg: tseg(fP|fA, R+1, L+1, 257, 100), v: vAccept, state: TCPEstablished},
		{name: "> . ack 101", from: epServer, seg: tseg(fA, L+1, R+101, 256, 0), v: vAccept, state: TCPEstablished,
			advance: time.Millisecond},
		{name: "< S 2000", from: epClient, seg: tseg(fS, R+2000, 0, 32792, 0).mss().wscale(7), v: vIgnore, state: TCPEstablished,
			advance: time.Second},
		{name: "> . challenge ack", from: epServer, seg: tseg(fA, L+1, R+101, 256, 0), v: vAccept, state: TCPEstablished},
		{name: "< R. 101", from: epClient, seg: tseg(fR|fA, R+101, L+1, 257, 0), v: vAccept, state: TCPClose},
		{name: "< S 2000 again", from: epClient, seg: tseg(fS, R+2000, 0, 32792, 0).mss().wscale(0), v: vAccept,
			state: TCPSynSent, recreate: true, advance: 500 * time.Millisecond},
		{name: "> S.", from: epServer, seg: tseg(fS|fA, L+77777, R+2001, 65535, 0).mss(), v: vAccept, state: TCPSynRecv},
	}
}

func scenario96(L, R uint32) []expectStep {
	steps := []expectStep{
		{name: "< S", from: epClient, seg: tseg(fS, R, 0, 32792, 0).mss(), v: vAccept, state: TCPSynSent},
		{name: "> S.", from: epServer, seg: tseg(fS|fA, L, R+1, 65535, 0).mss(), v: vAccept, state: TCPSynRecv},
		{name: "< .", from: epClient, seg: tseg(fA, R+1, L+1, 65535, 0), v: vAccept, state: TCPEstablished,
			advance: 10 * time.Millisecond},
	}
	for k := uint32(0); k < 46; k++ {
		seq := R + 1 + 1460*k
		steps = append(steps,
			expectStep{name: fmt.Sprintf("< P. %d", k), from: epClient, seg: tseg(fP|fA, seq, L+1, 257, 1460), v: vAccept,
				state: TCPEstablished, advance: 100 * time.Microsecond},
			expectStep{name: fmt.Sprintf("> . %d", k), from: epServer, seg: tseg(fA, L+1, seq+1460, 65535, 0), v: vAccept,
				state: TCPEstablished})
	}
	return append(steps,
		expectStep{name: "< P. 1:1461 retransmit", from: epClient, seg: tseg(fP|fA, R+1, L+1, 257, 1460), v: vIgnore, detail: tcpDetailSeqUnderLower,
			state: TCPEstablished, advance: 100 * time.Microsecond},
		expectStep{name: "> . dup ack 67161", from: epServer, seg: tseg(fA, L+1, R+67161, 65535, 0), v: vAccept, state: TCPEstablished},
	)
}

package conntrack

import (
	"testing"
)

// seqCase is a named packet sequence with the expected outcome of every
// packet. The same sequences run against the running kernel in
// TestTCPKernelDifferential.
type seqCase struct {
	name      string
	liberal   bool // nf_conntrack_tcp_be_liberal=1
	ignoreRST bool // nf_conntrack_tcp_ignore_invalid_rst=1
	steps     []expectStep
}

// ISNs and window of the special sequences.
const (
	ci  = 1000
	si  = 5000000
	win = 64000
)

// hs is a plain three-way handshake, no options.
func hs() []expectStep {
	return []expectStep{
		{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
		{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, win, 0), v: vAccept, state: TCPSynRecv},
		{name: "ack", from: epClient, seg: tseg(fA, ci+1, si+1, win, 0), v: vAccept, state: TCPEstablished, status: StatusAssured},
	}
}

func seqs(parts ...[]expectStep) []expectStep {
	var out []expectStep
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Common steps after hs().
var (
	clientFIN   = expectStep{name: "client fin", from: epClient, seg: tseg(fF|fA, ci+1, si+1, win, 0), v: vAccept, state: TCPFinWait}
	serverFINLA = expectStep{name: "server fin", from: epServer, seg: tseg(fF|fA, si+1, ci+2, win, 0), v: vAccept, state: TCPLastAck}
	clientLast  = expectStep{name: "client last ack", from: epClient, seg: tseg(fA, ci+2, si+2, win, 0), v: vAccept, state: TCPTimeWait}
)

func specialSequences() []seqCase {
	return []seqCase{
		// 2.6-1: SYN on TIME_WAIT/CLOSE.
		{name: "reopen after fin close", steps: seqs(hs(), []expectStep{
			clientFIN, serverFINLA, clientLast,
			{name: "new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vAccept, state: TCPSynSent,
				recreate: true, detail: tcpDetailNone},
			{name: "new syn/ack", from: epServer, seg: tseg(fS|fA, si+100000, ci+100001, win, 0), v: vAccept, state: TCPSynRecv},
		})},
		{name: "reopen after own rst", steps: seqs(hs(), []expectStep{
			{name: "client rst", from: epClient, seg: tseg(fR, ci+1, 0, 0, 0), v: vAccept, state: TCPClose},
			{name: "new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vAccept, state: TCPSynSent, recreate: true},
		})},
		{name: "syn after peer rst is ignored, syn/ack resyncs", steps: seqs(hs(), []expectStep{
			{name: "server rst", from: epServer, seg: tseg(fR, si+1, 0, 0, 0), v: vAccept, state: TCPClose},
			{name: "new syn", from: epClient, seg: tseg(fS, ci+100000, 0, 1234, 0).wscale(5).sackPerm(), v: vIgnore, state: TCPClose,
				detail: tcpDetailTableIgnore},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si+200000, ci+100001, win, 0).wscale(6), v: vAccept, state: TCPSynRecv,
				detail: tcpDetailResync},
			{name: "ack", from: epClient, seg: tseg(fA, ci+100001, si+200001, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "data at scaled window edge", from: epServer, seg: tseg(fA, si+200001+100<<5, ci+100001, 10, 0), v: vAccept, state: TCPEstablished},
		})},
		{name: "reply syn in time_wait reopens reversed", steps: seqs(hs(), []expectStep{
			clientFIN, serverFINLA, clientLast,
			{name: "server syn", from: epServer, seg: tseg(fS, si+100000, 0, win, 0), v: vAccept, state: TCPSynSent, recreate: true},
			{name: "client syn/ack", from: epClient, seg: tseg(fS|fA, ci+300000, si+100001, win, 0), v: vAccept, state: TCPSynRecv},
		})},
		// 2.6-2a negative: the SYN/ACK does not answer the ignored SYN.
		{name: "ignored syn, unrelated syn/ack", steps: seqs(hs(), []expectStep{
			{name: "new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vIgnore, state: TCPEstablished},
			{name: "syn/ack wrong ack", from: epServer, seg: tseg(fS|fA, si+200000, ci+5, win, 0), v: vIgnore, state: TCPEstablished,
				detail: tcpDetailTableIgnore},
			{name: "old flow goes on", from: epClient, seg: tseg(fA, ci+1, si+1, win, 10), v: vAccept, state: TCPEstablished},
		})},
		// 2.6-4: challenge ACK in LAST_ACK.
		{name: "challenge ack in last_ack", steps: seqs(hs(), []expectStep{
			clientFIN, serverFINLA,
			{name: "client new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vIgnore, state: TCPLastAck},
			{name: "server challenge ack", from: epServer, seg: tseg(fA, si+2, ci+2, win, 0), v: vIgnore, state: TCPLastAck,
				detail: tcpDetailChallengeACK},
			clientLast,
		})},
		{name: "challenge ack mark is used once", steps: seqs(hs(), []expectStep{
			clientFIN, serverFINLA,
			{name: "client new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vIgnore, state: TCPLastAck},
			{name: "server challenge ack", from: epServer, seg: tseg(fA, si+2, ci+2, win, 0), v: vIgnore, state: TCPLastAck},
			{name: "server ack again", from: epServer, seg: tseg(fA, si+2, ci+2, win, 0), v: vAccept, state: TCPTimeWait},
		})},
		{name: "last_ack without syn: ack is the last ack", steps: seqs(hs(), []expectStep{
			clientFIN, serverFINLA,
			{name: "server ack", from: epServer, seg: tseg(fA, si+2, ci+2, win, 0), v: vAccept, state: TCPTimeWait},
		})},
		// 2.6-5: simultaneous open.
		{name: "simultaneous open", steps: []expectStep{
			{name: "client syn", from: epClient, seg: tseg(fS, ci, 0, win, 0).wscale(1), v: vAccept, state: TCPSynSent},
			{name: "server syn", from: epServer, seg: tseg(fS, si, 0, 100, 0).wscale(2), v: vAccept, state: TCPSynSent2},
			{name: "server syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 100, 0).wscale(2), v: vAccept, state: TCPSynRecv},
			{name: "client syn/ack", from: epClient, seg: tseg(fS|fA, ci, si+1, win, 0).wscale(1), v: vAccept, state: TCPSynRecv},
			{name: "server ack", from: epServer, seg: tseg(fA, si+1, ci+1, 500, 0), v: vAccept, state: TCPEstablished, status: StatusAssured},
			{name: "client data at scaled edge", from: epClient, seg: tseg(fA, ci+1+500<<2, si+1, 500, 0), v: vAccept, state: TCPEstablished},
			{name: "client far past scaled edge", from: epClient, seg: tseg(fA, ci+1+500<<2+2100, si+1, 500, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPEstablished},
		}},
		// 2.6-6a
		{name: "rst while closing is not checked", steps: seqs(hs(), []expectStep{
			clientFIN,
			{name: "server rst far away", from: epServer, seg: tseg(fR, si+99999999, 0, 0, 0), v: vAccept, state: TCPClose,
				detail: tcpDetailRSTClosing},
			{name: "client rst far away", from: epClient, seg: tseg(fR|fA, 7, 9, 0, 0), v: vAccept, state: TCPClose,
				detail: tcpDetailRSTClosing},
		})},
		// 2.6-6b
		{name: "rst seq 0 before established goes to the window check", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, 0x70000000, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, 0x70000001, win, 0), v: vAccept, state: TCPSynRecv},
			{name: "client rst seq 0", from: epClient, seg: tseg(fR, 0, 0, 0, 0), v: vIgnore, state: TCPSynRecv,
				detail: tcpDetailSeqUnderLower},
		}},
		{name: "rst seq 0 before established in window closes", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, win, 0), v: vAccept, state: TCPSynRecv},
			{name: "client rst seq 0", from: epClient, seg: tseg(fR, 0, 0, 0, 0), v: vAccept, state: TCPClose},
		}},
		{name: "rst below peer ack is invalid", steps: seqs(hs(), []expectStep{
			{name: "server data", from: epServer, seg: tseg(fA|fP, si+1, ci+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "client ack", from: epClient, seg: tseg(fA, ci+1, si+1001, win, 0), v: vAccept, state: TCPEstablished},
			{name: "server rst below", from: epServer, seg: tseg(fR, si+500, 0, 0, 0), v: vInvalid, reason: ReasonTCPInvalidRST,
				detail: tcpDetailRSTBelowAck, state: TCPEstablished},
		})},
		{name: "rst below peer ack with ignore_invalid_rst", ignoreRST: true, steps: seqs(hs(), []expectStep{
			{name: "server data", from: epServer, seg: tseg(fA|fP, si+1, ci+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "client ack", from: epClient, seg: tseg(fA, ci+1, si+1001, win, 0), v: vAccept, state: TCPEstablished},
			{name: "server rst below", from: epServer, seg: tseg(fR, si+500, 0, 0, 0), v: vAccept, state: TCPEstablished,
				detail: tcpDetailRSTInexact},
		})},
		{name: "rst not established, inexact seq, closes", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, win, 0), v: vAccept, state: TCPSynRecv},
			{name: "client rst inexact", from: epClient, seg: tseg(fR, ci+30, 0, 0, 0), v: vAccept, state: TCPClose},
		}},
		{name: "rst right after the last data segment closes", steps: seqs(hs(), []expectStep{
			{name: "server data", from: epServer, seg: tseg(fA|fP, si+1, ci+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "server rst after data", from: epServer, seg: tseg(fR, si+101, 0, 0, 0), v: vAccept, state: TCPClose},
		})},
		{name: "rst inexact in window keeps established", steps: seqs(hs(), []expectStep{
			{name: "server data", from: epServer, seg: tseg(fA|fP, si+1, ci+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "client ack", from: epClient, seg: tseg(fA, ci+1, si+101, win, 0), v: vAccept, state: TCPEstablished},
			{name: "server rst inexact", from: epServer, seg: tseg(fR, si+150, 0, 0, 0), v: vAccept, state: TCPEstablished,
				detail: tcpDetailRSTInexact},
			{name: "server rst exact", from: epServer, seg: tseg(fR, si+101, 0, 0, 0), v: vAccept, state: TCPClose},
		})},
		// 2.6-6c
		{name: "rst answering an ignored syn", steps: seqs(hs(), []expectStep{
			{name: "client new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vIgnore, state: TCPEstablished},
			{name: "server rst/ack", from: epServer, seg: tseg(fR|fA, 12345, ci+100001, 0, 0), v: vAccept, state: TCPClose,
				detail: tcpDetailRSTAnswersIgnored},
		})},
		{name: "rst from the ignored syn's own side does not answer it", steps: seqs(hs(), []expectStep{
			{name: "client new syn", from: epClient, seg: tseg(fS, ci+100000, 0, win, 0), v: vIgnore, state: TCPEstablished},
			{name: "client rst/ack far", from: epClient, seg: tseg(fR|fA, ci+9000000, ci+100001, 0, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPEstablished},
		})},
		{name: "syn_sent2: rst from the reply syn's side goes to the window check", steps: []expectStep{
			{name: "client syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "server syn", from: epServer, seg: tseg(fS, si, 0, 1000, 0), v: vAccept, state: TCPSynSent2},
			{name: "server rst seq 0", from: epServer, seg: tseg(fR, 0, 0, 0, 0), v: vIgnore, detail: tcpDetailSeqUnderLower,
				state: TCPSynSent2},
			{name: "client rst far, ack 0", from: epClient, seg: tseg(fR, 900000, 0, 0, 0), v: vAccept,
				detail: tcpDetailRSTAnswersIgnored, state: TCPClose},
		}},
		{name: "rst answering a half-open ack from the same side", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 1000, 0), v: vAccept, state: TCPSynRecv},
			{name: "server ack", from: epServer, seg: tseg(fA, si+1, ci+1, 1000, 0), v: vAccept, state: TCPSynRecv},
			{name: "server rst far, ack = its last end", from: epServer, seg: tseg(fR|fA, 900000, si+1, 0, 0), v: vAccept,
				detail: tcpDetailRSTAnswersIgnored, state: TCPClose},
		}},
		{name: "rst answering a half-open ack", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "server ack", from: epServer, seg: tseg(fA, si, 777, win, 0), v: vIgnore, state: TCPSynSent},
			{name: "client rst/ack", from: epClient, seg: tseg(fR|fA, 999999, si, 0, 0), v: vAccept, state: TCPClose,
				detail: tcpDetailRSTAnswersIgnored},
		}},
		// 2.6-6d (also in 9.3)
		{name: "rst answering a challenge ack in syn_sent", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "server challenge ack", from: epServer, seg: tseg(fA, si, 888888, win, 0), v: vIgnore, state: TCPSynSent},
			{name: "client rst", from: epClient, seg: tseg(fR, 888888, 0, 0, 0), v: vAccept, state: TCPClose,
				detail: tcpDetailRSTAnswersChallenge},
		}},
		{name: "rst not answering the challenge ack", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "server challenge ack", from: epServer, seg: tseg(fA, si, 888888, win, 0), v: vIgnore, state: TCPSynSent},
			{name: "client rst elsewhere", from: epClient, seg: tseg(fR, 888000, 0, 0, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPSynSent},
		}},
		// 2.8-3
		{name: "rst before any reply deletes the entry", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "server rst/ack", from: epServer, seg: tseg(fR|fA, 0, ci+1, 0, 0), v: vAccept, gone: true, detail: tcpDetailRSTUnreplied},
			{name: "syn again", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
		}},
		{name: "client rst before any reply deletes the entry", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "client rst", from: epClient, seg: tseg(fR, ci+1, 0, 0, 0), v: vAccept, gone: true},
		}},
		{name: "syn retransmit", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn again", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent, detail: tcpDetailSynRetrans},
			{name: "syn new isn", from: epClient, seg: tseg(fS, ci+5000, 0, win, 0), v: vAccept, state: TCPSynSent, detail: tcpDetailSynRetrans},
			{name: "syn/ack for new isn", from: epServer, seg: tseg(fS|fA, si, ci+5001, win, 0), v: vAccept, state: TCPSynRecv},
		}},
		{name: "pickup", steps: []expectStep{
			{name: "client ack", from: epClient, seg: tseg(fA|fP, ci, si, 500, 100), v: vAccept, state: TCPEstablished},
			{name: "server ack", from: epServer, seg: tseg(fA, si, ci+100, 500, 0), v: vAccept, state: TCPEstablished, status: StatusSeenReply},
			{name: "client far out of window", from: epClient, seg: tseg(fA, ci+9000000, si, 500, 10), v: vAccept, state: TCPEstablished,
				status: StatusAssured, detail: tcpDetailSeqOverUpper},
			{name: "server acks unseen data", from: epServer, seg: tseg(fA, si, ci+9999999, 500, 0), v: vAccept, state: TCPEstablished,
				detail: tcpDetailAckOverUpper},
		}},
		{name: "pickup from the server side", steps: []expectStep{
			{name: "server data", from: epServer, seg: tseg(fA|fP, si, ci, 500, 1000), v: vAccept, state: TCPEstablished},
			{name: "client fin", from: epClient, seg: tseg(fF|fA, ci, si+1000, 500, 0), v: vAccept, state: TCPFinWait},
		}},
		// 2.7 bounds (hs leaves: client end 1001, maxend 65001; server end
		// 5000001, maxend 5064001; both maxwin 64000).
		{name: "bound I", steps: seqs(hs(), []expectStep{
			{name: "at maxend", from: epClient, seg: tseg(fA, ci+1+win, si+1, win, 0), v: vAccept, state: TCPEstablished},
			{name: "far above", from: epClient, seg: tseg(fA, ci+1+2*win+10, si+1, win, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, detail: tcpDetailSeqOverUpper, state: TCPEstablished},
			// The overshoot tolerance ends at one receiver window
			// (maxend is now ci+1+win, the server's maxwin win).
			{name: "overshoot by exactly a window", from: epClient, seg: tseg(fA, ci+1+2*win-1, si+1, win, 0), v: vIgnore,
				detail: tcpDetailOvershoot, state: TCPEstablished},
			{name: "overshoot by a window and one", from: epClient, seg: tseg(fA, ci+1+2*win, si+1, win, 0), v: vInvalid,
				detail: tcpDetailSeqOverUpper, state: TCPEstablished},
		})},
		{name: "overshoot", steps: seqs(hs(), []expectStep{
			{name: "past window by 100", from: epClient, seg: tseg(fA, ci+1+win+1, si+1, win, 100), v: vIgnore,
				detail: tcpDetailOvershoot, state: TCPEstablished},
			{name: "server acks it", from: epServer, seg: tseg(fA, si+1, ci+1+win+100, win, 0), v: vAccept, state: TCPEstablished},
		})},
		{name: "bound III", steps: seqs(hs(), []expectStep{
			{name: "ack one above", from: epServer, seg: tseg(fA, si+1, ci+2, win, 0), v: vInvalid,
				reason: ReasonTCPAckAboveSent, detail: tcpDetailAckOverUpper, state: TCPEstablished},
			{name: "ack exact", from: epServer, seg: tseg(fA, si+1, ci+1, win, 0), v: vAccept, state: TCPEstablished},
		})},
		{name: "bound II", steps: seqs(hs(), []expectStep{
			{name: "data 1", from: epClient, seg: tseg(fA, ci+1, si+1, win, 60000), v: vAccept, state: TCPEstablished},
			{name: "ack 1", from: epServer, seg: tseg(fA, si+1, ci+60001, win, 0), v: vAccept, state: TCPEstablished},
			{name: "data 2", from: epClient, seg: tseg(fA, ci+60001, si+1, win, 60000), v: vAccept, state: TCPEstablished},
			{name: "old, end at lower bound", from: epClient, seg: tseg(fA, ci+120001-win-1000, si+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "old, end one below", from: epClient, seg: tseg(fA, ci+120001-win-1001, si+1, win, 1000), v: vIgnore,
				detail: tcpDetailSeqUnderLower, state: TCPEstablished},
		})},
		{name: "bound IV", steps: seqs(hs(), []expectStep{
			{name: "server data 1", from: epServer, seg: tseg(fA, si+1, ci+1, win, 60000), v: vAccept, state: TCPEstablished},
			{name: "client ack 1", from: epClient, seg: tseg(fA, ci+1, si+60001, win, 0), v: vAccept, state: TCPEstablished},
			{name: "server data 2", from: epServer, seg: tseg(fA, si+60001, ci+1, win, 60000), v: vAccept, state: TCPEstablished},
			{name: "ack at lower bound", from: epClient, seg: tseg(fA, ci+1, si+120001-66000, win, 0), v: vAccept, state: TCPEstablished},
			{name: "ack one below", from: epClient, seg: tseg(fA, ci+1, si+120001-66001, win, 0), v: vIgnore,
				detail: tcpDetailAckUnderLower, state: TCPEstablished},
		})},
		{name: "be_liberal", liberal: true, steps: seqs(hs(), []expectStep{
			{name: "far above", from: epClient, seg: tseg(fA, ci+10*win, si+1, win, 0), v: vAccept, state: TCPEstablished,
				detail: tcpDetailSeqOverUpper},
			{name: "ack above", from: epServer, seg: tseg(fA, si+1, ci+10*win, win, 0), v: vAccept, state: TCPEstablished,
				detail: tcpDetailAckOverUpper},
			{name: "fin far away", from: epServer, seg: tseg(fF|fA, si+77777777, ci+1, win, 0), v: vAccept, state: TCPFinWait},
		})},
		{name: "window scale both sides", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, 100, 0).wscale(7), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 100, 0).wscale(8), v: vAccept, state: TCPSynRecv},
			{name: "ack win 100", from: epClient, seg: tseg(fA, ci+1, si+1, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "server at scaled edge", from: epServer, seg: tseg(fA, si+1+100<<7, ci+1, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "client at scaled edge", from: epClient, seg: tseg(fA, ci+1+100<<8, si+1, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "client past scaled edge", from: epClient, seg: tseg(fA, ci+1+100<<8+100<<8+10, si+1, 100, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPEstablished},
		}},
		{name: "window scale one side only", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, 100, 0).wscale(7), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 100, 0), v: vAccept, state: TCPSynRecv},
			{name: "ack win 100", from: epClient, seg: tseg(fA, ci+1, si+1, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "server at unscaled edge", from: epServer, seg: tseg(fA, si+1+100, ci+1, 100, 0), v: vAccept, state: TCPEstablished},
			{name: "server past unscaled edge", from: epServer, seg: tseg(fA, si+1+100+100+10, ci+1, 100, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPEstablished},
		}},
		{name: "window scale capped at 14", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, 100, 0).wscale(15), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 100, 0).wscale(20), v: vAccept, state: TCPSynRecv},
			{name: "ack win 2", from: epClient, seg: tseg(fA, ci+1, si+1, 2, 0), v: vAccept, state: TCPEstablished},
			{name: "server at 2<<14", from: epServer, seg: tseg(fA, si+1+2<<14, ci+1, 2, 0), v: vAccept, state: TCPEstablished},
			{name: "server past 4<<14", from: epServer, seg: tseg(fA, si+1+4<<14+10, ci+1, 2, 0), v: vInvalid,
				reason: ReasonTCPSeqAboveWindow, state: TCPEstablished},
		}},
		{name: "sack raises the ack", steps: []expectStep{
			{name: "syn sackOK", from: epClient, seg: tseg(fS, ci, 0, win, 0).sackPerm(), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 3000, 0), v: vAccept, state: TCPSynRecv},
			{name: "ack", from: epClient, seg: tseg(fA, ci+1, si+1, win, 0), v: vAccept, state: TCPEstablished},
			{name: "data 1", from: epClient, seg: tseg(fA, ci+1, si+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "data 2", from: epClient, seg: tseg(fA, ci+1001, si+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "sack beyond sent data", from: epServer, seg: tseg(fA, si+1, ci+1, 3000, 0).sackBlock(ci+1001, ci+2002), v: vInvalid,
				reason: ReasonTCPAckAboveSent, state: TCPEstablished},
			{name: "sack of data 2", from: epServer, seg: tseg(fA, si+1, ci+1, 3000, 0).sackBlock(ci+1001, ci+2001), v: vAccept, state: TCPEstablished},
			{name: "client at sack+win", from: epClient, seg: tseg(fA, ci+2001+3000, si+1, win, 0), v: vAccept, state: TCPEstablished},
		}},
		{name: "sack ignored without sack-permitted", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 3000, 0).sackPerm(), v: vAccept, state: TCPSynRecv},
			{name: "ack", from: epClient, seg: tseg(fA, ci+1, si+1, win, 0), v: vAccept, state: TCPEstablished},
			{name: "sack beyond sent data", from: epServer, seg: tseg(fA, si+1, ci+1, 3000, 0).sackBlock(ci+1001, ci+2002), v: vAccept,
				state: TCPEstablished},
		}},
		{name: "zero window probe", steps: []expectStep{
			{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
			{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, 1000, 0), v: vAccept, state: TCPSynRecv},
			{name: "ack", from: epClient, seg: tseg(fA, ci+1, si+1, win, 0), v: vAccept, state: TCPEstablished},
			{name: "fill window", from: epClient, seg: tseg(fA, ci+1, si+1, win, 1000), v: vAccept, state: TCPEstablished},
			{name: "zero window", from: epServer, seg: tseg(fA, si+1, ci+1001, 0, 0), v: vAccept, state: TCPEstablished},
			{name: "probe 1 byte", from: epClient, seg: tseg(fA, ci+1001, si+1, win, 1), v: vAccept, state: TCPEstablished},
			{name: "probe 1 byte at maxend", from: epClient, seg: tseg(fA, ci+1002, si+1, win, 1), v: vAccept, state: TCPEstablished},
			{name: "3 past maxend", from: epClient, seg: tseg(fA, ci+1005, si+1, win, 1), v: vIgnore, detail: tcpDetailOvershoot,
				state: TCPEstablished},
		}},
		{name: "retransmissions", steps: seqs(hs(), []expectStep{
			{name: "data", from: epClient, seg: tseg(fA, ci+1, si+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "rtx 1", from: epClient, seg: tseg(fA, ci+1, si+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "rtx 2", from: epClient, seg: tseg(fA, ci+1, si+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "rtx 3", from: epClient, seg: tseg(fA, ci+1, si+1, win, 100), v: vAccept, state: TCPEstablished},
			{name: "ack", from: epServer, seg: tseg(fA, si+1, ci+101, win, 0), v: vAccept, state: TCPEstablished},
		})},
		// 2.9
		{name: "out-of-window fin answered by out-of-window rst", steps: seqs(hs(), []expectStep{
			{name: "server fin far", from: epServer, seg: tseg(fF|fA, si+9000000, ci+1, win, 0), v: vInvalid, state: TCPEstablished},
			{name: "client rst far", from: epClient, seg: tseg(fR, ci+9000000, 0, 0, 0), v: vInvalid, state: TCPEstablished,
				detail: tcpDetailTimeoutLowered},
		})},
		{name: "out-of-window rst, same side again", steps: seqs(hs(), []expectStep{
			{name: "server fin far", from: epServer, seg: tseg(fF|fA, si+9000000, ci+1, win, 0), v: vInvalid, state: TCPEstablished},
			{name: "server rst far", from: epServer, seg: tseg(fR, si+9000000, 0, 0, 0), v: vInvalid, state: TCPEstablished,
				detail: tcpDetailSeqOverUpper},
		})},
	}
}

func TestTCPSpecialSequences(t *testing.T) {
	for _, sc := range specialSequences() {
		t.Run(sc.name, func(t *testing.T) {
			sim := newTCPSim()
			sim.cfg.BeLiberal = sc.liberal
			sim.cfg.IgnoreInvalidRST = sc.ignoreRST
			runSteps(t, sim, sc.steps)
		})
	}
}

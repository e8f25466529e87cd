package conntrack

// The TCP tracker: Linux nf_conntrack's TCP state machine and window
// tracking (reference sections 1, 2 and 11), as plain value state with no
// allocation, no clock and no map.
//
// How the table drives it, per TCP packet (after packet.Decode and, for
// packets that arrive from outside, the checksum check):
//
//	seg := segOf(p)
//	if r := tcpCheckFlags(seg.flags); r != ReasonNone { INVALID r }  // 2.3
//	new entry (tuple unknown):
//	    if r := e.tcp.init(&seg, &cfg.TCP); r != ReasonNone { INVALID r, no entry }  // 2.4
//	    then call packet like for an existing entry (dir Original, status 0)
//	out := e.tcp.packet(&seg, tcpIn{dir, e.status, &cfg.TCP, remaining, peerSeqAdj})
//	switch out.action {
//	case tcpAccept:       if out.refresh { e.expires = now + out.timeout }; if out.assured { set ASSURED }
//	case tcpIgnore:       packet passes with its ctinfo, entry untouched (timeout not refreshed)
//	case tcpInvalid:      packet INVALID (out.reason); if out.refresh { e.expires = now + out.timeout } (2.9)
//	case tcpRecreate:     delete e, then handle the packet again as the first packet of a new entry
//	case tcpAcceptDelete: packet passes, delete e now
//	}
//
// SEEN_REPLY must still be clear in tcpIn.status while the first
// reply-direction packet is processed (reference 1.1 rule 6): the table sets
// it only after packet accepted (or ignored) that packet.
//
// Where the behavioural reference (section 2 of conntrack.md) and the kernel differ, this follows
// the kernel (Linux 6.18, checked packet by packet against the running
// kernel by TestTCPKernelDifferential): a RST answering an ignored SYN
// (2.6-6c) skips the window check only if it comes from the other side than
// that SYN.
//
// Differences from the kernel that cannot matter to a router:
//   - SACK blocks come from packet.TCPOptions, which gathers up to four
//     blocks from every SACK option of the header; the kernel looks at the
//     first well-formed SACK option only. Real stacks send one SACK option.
//   - The SYN proxy exception of 2.6-3 is not implemented (no SYN proxy).

import (
	"time"

	"github.com/tunrouter/router/packet"
)

// tcpIndex is the packet class of 2.2 (the kernel's tcp_bit_set), the row
// of the transition tables.
type tcpIndex uint8

const (
	tcpSynSet tcpIndex = iota
	tcpSynAckSet
	tcpFinSet
	tcpAckSet
	tcpRstSet
	tcpNoneSet
	numTCPIndex
)

var tcpIndexNames = [numTCPIndex]string{"SYN", "SYN/ACK", "FIN", "ACK", "RST", "NONE"}

func (i tcpIndex) String() string {
	if i < numTCPIndex {
		return tcpIndexNames[i]
	}
	return "tcpIndex(?)"
}

// tcpIndexOf classifies a segment by its flags (2.2): RST wins over
// everything, then SYN (SYN/ACK with ACK), then FIN, then ACK.
func tcpIndexOf(f packet.TCPFlags) tcpIndex {
	switch {
	case f&packet.RST != 0:
		return tcpRstSet
	case f&packet.SYN != 0:
		if f&packet.ACK != 0 {
			return tcpSynAckSet
		}
		return tcpSynSet
	case f&packet.FIN != 0:
		return tcpFinSet
	case f&packet.ACK != 0:
		return tcpAckSet
	}
	return tcpNoneSet
}

// Table outcomes beyond the real states: sIV (packet invalid) and sIG
// (accept, change nothing), numbered as in the kernel.
const (
	tcpSIV = numTCPStates     // TCP_CONNTRACK_MAX
	tcpSIG = numTCPStates + 1 // TCP_CONNTRACK_IGNORE
)

// tcpTransitions is the state table of 2.5: [dir][index][old state].
var tcpTransitions = [2][numTCPIndex][numTCPStates]TCPState{
	Original: {
		//             NONE            SYN_SENT     SYN_RECV        ESTABLISHED     FIN_WAIT      CLOSE_WAIT    LAST_ACK      TIME_WAIT     CLOSE       SYN_SENT2
		tcpSynSet:    {TCPSynSent, TCPSynSent, tcpSIG, tcpSIG, tcpSIG, tcpSIG, tcpSIG, TCPSynSent, TCPSynSent, TCPSynSent2},
		tcpSynAckSet: {tcpSIV, tcpSIV, TCPSynRecv, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, TCPSynRecv},
		tcpFinSet:    {tcpSIV, tcpSIV, TCPFinWait, TCPFinWait, TCPLastAck, TCPLastAck, TCPLastAck, TCPTimeWait, TCPClose, tcpSIV},
		tcpAckSet:    {TCPEstablished, tcpSIV, TCPEstablished, TCPEstablished, TCPCloseWait, TCPCloseWait, TCPTimeWait, TCPTimeWait, TCPClose, tcpSIV},
		tcpRstSet:    {tcpSIV, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose},
		tcpNoneSet:   {tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV},
	},
	Reply: {
		tcpSynSet:    {tcpSIV, TCPSynSent2, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, TCPSynSent, tcpSIV, TCPSynSent2},
		tcpSynAckSet: {tcpSIV, TCPSynRecv, tcpSIG, tcpSIG, tcpSIG, tcpSIG, tcpSIG, tcpSIG, tcpSIG, TCPSynRecv},
		tcpFinSet:    {tcpSIV, tcpSIV, TCPFinWait, TCPFinWait, TCPLastAck, TCPLastAck, TCPLastAck, TCPTimeWait, TCPClose, tcpSIV},
		tcpAckSet:    {tcpSIV, tcpSIG, TCPSynRecv, TCPEstablished, TCPCloseWait, TCPCloseWait, TCPTimeWait, TCPTimeWait, TCPClose, tcpSIG},
		tcpRstSet:    {tcpSIV, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose, TCPClose},
		tcpNoneSet:   {tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV, tcpSIV},
	},
}

// tcpSeg is what the tracker needs of one TCP segment, extracted once from
// packet.Parsed by segOf.
type tcpSeg struct {
	seq, ack uint32
	win      uint16 // raw window field
	flags    packet.TCPFlags
	// hasOpts is true when the header carries options (data offset > 5).
	// The kernel re-reads a sender's options only then: a header without
	// options leaves the recorded scale and flags alone.
	hasOpts bool
	dataLen uint32 // payload length
	opts    packet.TCPOptions
}

// segOf extracts the tracker's view of a decoded TCP packet. p must be a
// TCP packet that decoded without error.
func segOf(p *packet.Parsed) tcpSeg {
	return tcpSeg{
		seq:     p.Seq,
		ack:     p.Ack,
		win:     p.Window,
		flags:   p.TCPFlags,
		hasOpts: p.PayloadOff-p.L4Off > 20,
		dataLen: uint32(p.PayloadLen()),
		opts:    p.TCPOpts,
	}
}

// end returns the sequence number after the segment: seq + payload, plus
// one for SYN and one for FIN (they occupy a sequence number each).
func (s *tcpSeg) end() uint32 {
	e := s.seq + s.dataLen
	if s.flags&packet.SYN != 0 {
		e++
	}
	if s.flags&packet.FIN != 0 {
		e++
	}
	return e
}

// Sequence-space comparisons, modulo 2^32 (RFC 1982 style, as the kernel's
// before/after).
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }
func seqAfter(a, b uint32) bool  { return int32(b-a) < 0 }

// tcpDirFlags are the per-direction flags of the kernel's ip_ct_tcp_state
// (same bit values as nf_conntrack_tcp.h, so listings can print them like
// conntrack -o extended does).
type tcpDirFlags uint8

const (
	tcpFlagWindowScale  tcpDirFlags = 0x01 // sender sent the window-scale option
	tcpFlagSACKPerm     tcpDirFlags = 0x02 // sender sent SACK-permitted
	tcpFlagCloseInit    tcpDirFlags = 0x04 // this direction sent the first FIN
	tcpFlagBeLiberal    tcpDirFlags = 0x08 // window failures are not fatal (pickups)
	tcpFlagDataUnack    tcpDirFlags = 0x10 // sent data not yet acknowledged
	tcpFlagMaxAckSet    tcpDirFlags = 0x20 // maxack holds a value
	tcpFlagExpChallenge tcpDirFlags = 0x40 // lastFlags only: challenge ACK expected (2.6-2b)
	tcpFlagSimOpen      tcpDirFlags = 0x80 // lastFlags only: simultaneous open (2.6-5)
)

var tcpDirFlagNames = [8]string{
	"window-scale", "sack-perm", "close-init", "be-liberal",
	"data-unack", "maxack-set", "challenge-ack", "simultaneous-open",
}

// String lists the set flags, comma-separated.
func (f tcpDirFlags) String() string {
	var b []byte
	for i, n := range tcpDirFlagNames {
		if f&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, n...)
		}
	}
	return string(b)
}

// tcpDirState is the window data the tracker keeps per direction (the
// kernel's ip_ct_tcp_state); "sender" is the direction it describes.
type tcpDirState struct {
	end    uint32 // highest seq+len sent
	maxend uint32 // highest seq the sender may send (peer's ack + window)
	maxwin uint32 // largest window seen from the sender, scaled
	maxack uint32 // highest ack sent (valid with tcpFlagMaxAckSet)
	scale  uint8  // window scale shift (0 unless both sides sent the option)
	flags  tcpDirFlags
}

// tcpConn is the TCP part of a connection entry (the kernel's ip_ct_tcp).
// One lives in every tracked TCP connection, so it is kept small: 60 bytes,
// all plain values (no pointer for the GC to scan).
type tcpConn struct {
	dir [2]tcpDirState

	// The last recorded packet: set by ignored packets (2.6-2b), by the
	// retransmission check of accepted ACKs (2.7-12) and partly by every
	// committed packet (2.8-1) and by 2.9. lastAck doubles as the saved
	// ack of a challenge ACK in SYN_SENT (2.6-2b, used by 2.6-6d).
	lastSeq, lastAck, lastEnd uint32
	lastWin                   uint16 // raw window

	state      TCPState
	lastIndex  tcpIndex
	lastDir    Dir
	lastWscale uint8       // window scale of an ignored original SYN
	lastFlags  tcpDirFlags // options of an ignored original SYN, plus ExpChallenge and SimOpen
	retrans    uint8       // number of identical ACKs in a row (wraps like the kernel's u8)
}

// State returns the connection's TCP state.
func (c *tcpConn) State() TCPState { return c.state }

// TCPDirInfo is the window data of one direction of a TCP connection, for
// listings and debugging (conntrack -L -o extended style).
type TCPDirInfo struct {
	End, MaxEnd, MaxWin, MaxAck uint32
	Scale                       uint8
	Flags                       uint8  // kernel IP_CT_TCP_FLAG_* bit values
	FlagNames                   string // Flags as text: "window-scale,sack-perm"
}

// dirInfo returns the window data of direction d, for listings (allocates
// the flag text; not for the packet path).
func (c *tcpConn) dirInfo(d Dir) TCPDirInfo {
	s := &c.dir[d&1]
	return TCPDirInfo{
		End: s.end, MaxEnd: s.maxend, MaxWin: s.maxwin, MaxAck: s.maxack,
		Scale: s.scale, Flags: uint8(s.flags), FlagNames: s.flags.String(),
	}
}

// tcpCanEarlyDrop reports whether a TCP entry in state s may be evicted
// under table pressure even when ASSURED (the kernel's tcp_can_early_drop,
// used by the GC path of 8.3): the closing states. Early drop on allocation
// (8.2) evicts any entry that is not ASSURED, whatever its state.
func tcpCanEarlyDrop(s TCPState) bool {
	switch s {
	case TCPFinWait, TCPCloseWait, TCPLastAck, TCPTimeWait, TCPClose:
		return true
	}
	return false
}

// tcpValidFlags marks the allowed combinations of FIN, SYN, RST, ACK and URG
// (2.3); PSH, ECE and CWR are masked out before the lookup.
var tcpValidFlags = func() (v [64]bool) {
	const F, S, R, A, U = packet.FIN, packet.SYN, packet.RST, packet.ACK, packet.URG
	for _, f := range []packet.TCPFlags{S, S | U, S | A, R, R | A, F | A, F | A | U, A, A | U} {
		v[f] = true
	}
	return v
}()

// tcpCheckFlags runs the flag pre-check of 2.3 ("invalid tcp flag
// combination"). The other pre-checks are done elsewhere: truncated headers
// by packet.Decode, checksums by the table. It returns ReasonTCPFlags for a
// disallowed combination, else ReasonNone.
func tcpCheckFlags(f packet.TCPFlags) Reason {
	f &^= packet.PSH | packet.ECE | packet.CWR
	if !tcpValidFlags[f&0x3f] {
		return ReasonTCPFlags
	}
	return ReasonNone
}

// init initialises c from the first packet of an unknown tuple (2.4,
// tcp_new) and reports whether an entry may be created: ReasonNone on
// success; ReasonTCPInvalidNew for SYN/ACK, FIN, RST or NONE first packets;
// ReasonTCPNoSYN for an ACK when cfg.Loose is off. On success the table
// calls packet for the same segment right away, as the kernel does.
// Precondition: tcpCheckFlags(seg.flags) == ReasonNone.
func (c *tcpConn) init(seg *tcpSeg, cfg *TCPConfig) Reason {
	idx := tcpIndexOf(seg.flags)
	switch tcpTransitions[Original][idx][TCPNone] {
	case TCPSynSent:
		*c = tcpConn{}
		s := &c.dir[Original]
		s.end = seg.end()
		s.maxwin = max(uint32(seg.win), 1)
		s.maxend = s.end
		if seg.hasOpts {
			s.readOptions(&seg.opts)
		}
	case TCPEstablished:
		if !cfg.Loose {
			return ReasonTCPNoSYN
		}
		*c = tcpConn{}
		s := &c.dir[Original]
		s.end = seg.end()
		s.maxwin = max(uint32(seg.win), 1)
		s.maxend = s.end + s.maxwin
		// Mid-stream pickup: the handshake (and its window-scale options)
		// was missed, so window checks cannot be trusted in either
		// direction.
		c.dir[Original].flags = tcpFlagSACKPerm | tcpFlagBeLiberal
		c.dir[Reply].flags = tcpFlagSACKPerm | tcpFlagBeLiberal
	default:
		return ReasonTCPInvalidNew
	}
	c.lastIndex = tcpNoneSet
	return ReasonNone
}

// readOptions records the window-scale and SACK-permitted options of a SYN
// or SYN/ACK (the kernel's tcp_options): scale and all flags except
// BE_LIBERAL are reset first. Callers call it only when the header has
// options.
func (s *tcpDirState) readOptions(o *packet.TCPOptions) {
	s.scale = 0
	s.flags &= tcpFlagBeLiberal
	if o.SACKPerm {
		s.flags |= tcpFlagSACKPerm
	}
	if o.HasWScale {
		s.scale = min(o.WScale, tcpMaxWScale)
		s.flags |= tcpFlagWindowScale
	}
}

// tcpMaxWScale is the largest window scale shift (RFC 7323).
const tcpMaxWScale = 14

// tcpMaxAckWinConst is the lower limit of the ack window used by bound IV.
const tcpMaxAckWinConst = 66000

func (s *tcpDirState) maxAckWindow() uint32 { return max(s.maxwin, tcpMaxAckWinConst) }

// tcpSeqOffset is the hook for NAT sequence adjustment (reference 7.3): the
// correction record of one direction (nf_conn_seqadj's per-direction data).
// The zero value means no adjustment. The window check works in the
// un-adjusted sequence space: it subtracts the other direction's offset
// from the ack and SACK of a packet before checking them.
type tcpSeqOffset struct {
	pos           uint32 // correction_pos: seq of the mangled segment
	before, after int32  // offset_before, offset_after
}

// at returns the offset that applies to sequence number seq (the kernel's
// nf_ct_seq_offset).
func (o *tcpSeqOffset) at(seq uint32) int32 {
	if seqAfter(seq, o.pos) {
		return o.after
	}
	return o.before
}

// tcpIn is the entry context of one packet.
type tcpIn struct {
	dir Dir
	// status is the entry status before this packet. SEEN_REPLY is still
	// clear while the first reply is processed (1.1 rule 6).
	status Status
	cfg    *TCPConfig
	// remaining is the entry's remaining lifetime before this packet (for
	// the timeout shortening of 2.9).
	remaining time.Duration
	// peerSeqAdj is the sequence adjustment of the other direction (NAT
	// helpers, 7.3); zero until NAT exists.
	peerSeqAdj tcpSeqOffset
}

// tcpAction is what the table does with the packet and the entry.
type tcpAction uint8

const (
	// tcpAccept: the packet is accepted and was committed (the state may
	// have changed); apply refresh/timeout and assured.
	tcpAccept tcpAction = iota
	// tcpIgnore: the packet is accepted (not INVALID, it keeps its ctinfo)
	// but nothing changed and the timeout is not refreshed.
	tcpIgnore
	// tcpInvalid: the packet is INVALID (reason). refresh may still be set
	// (2.9: the timeout is lowered).
	tcpInvalid
	// tcpRecreate: delete the entry and process the packet again as the
	// first packet of a new connection (2.6-1).
	tcpRecreate
	// tcpAcceptDelete: the packet is accepted and the entry must be
	// deleted now (a RST before any reply was seen, 2.8-3).
	tcpAcceptDelete
)

var tcpActionNames = [...]string{"accept", "ignore", "invalid", "recreate", "accept-delete"}

func (a tcpAction) String() string {
	if int(a) < len(tcpActionNames) {
		return tcpActionNames[a]
	}
	return "tcpAction(?)"
}

// tcpDetail says which rule decided a packet's fate, for traces and logs
// (the kernel's log messages) and for tests.
type tcpDetail uint8

const (
	tcpDetailNone                tcpDetail = iota
	tcpDetailTableIgnore                   // table cell IG (2.5), or a SYN on TIME_WAIT/CLOSE that does not reopen (2.6-1)
	tcpDetailTableInvalid                  // table cell IV (2.5)
	tcpDetailReopen                        // SYN reopens a closed connection (2.6-1)
	tcpDetailResync                        // SYN/ACK answering an ignored SYN resynchronises (2.6-2a)
	tcpDetailChallengeACK                  // challenge ACK in LAST_ACK (2.6-4)
	tcpDetailRSTClosing                    // RST in a closing state, not checked (2.6-6a)
	tcpDetailRSTBelowAck                   // RST seq below the peer's highest ack (2.6-6b)
	tcpDetailRSTInexact                    // in-window RST at an unexpected seq: state kept (2.6-6b)
	tcpDetailRSTAnswersIgnored             // RST answering an ignored SYN or a half-open ACK (2.6-6c)
	tcpDetailRSTAnswersChallenge           // RST answering a challenge ACK in SYN_SENT (2.6-6d)
	tcpDetailSeqOverUpper                  // bound I failed
	tcpDetailAckOverUpper                  // bound III failed
	tcpDetailSeqUnderLower                 // bound II failed
	tcpDetailAckUnderLower                 // bound IV failed
	tcpDetailOvershoot                     // bound I failed by less than a window: td_end advanced, ignored
	tcpDetailTimeoutLowered                // out-of-window FIN/RST answering one: timeout lowered (2.9)
	tcpDetailSynRetrans                    // SYN retransmitted in SYN_SENT: timeout not refreshed (2.8-3)
	tcpDetailRSTUnreplied                  // RST before any reply: entry deleted (2.8-3)
	numTCPDetails
)

var tcpDetailNames = [numTCPDetails]string{
	tcpDetailNone:                "",
	tcpDetailTableIgnore:         "ignored in state",
	tcpDetailTableInvalid:        "invalid in state",
	tcpDetailReopen:              "syn reopens closed connection",
	tcpDetailResync:              "syn/ack answers ignored syn: resync",
	tcpDetailChallengeACK:        "challenge-ack ignored",
	tcpDetailRSTClosing:          "rst while closing",
	tcpDetailRSTBelowAck:         "invalid rst",
	tcpDetailRSTInexact:          "rst seq inexact: state kept",
	tcpDetailRSTAnswersIgnored:   "rst answers ignored packet",
	tcpDetailRSTAnswersChallenge: "rst answers challenge ack",
	tcpDetailSeqOverUpper:        "SEQ is over upper bound (over the window of the receiver)",
	tcpDetailAckOverUpper:        "ACK is over upper bound (ACKed data not seen yet)",
	tcpDetailSeqUnderLower:       "SEQ is under lower bound (already ACKed data retransmitted)",
	tcpDetailAckUnderLower:       "ignored ACK under lower bound (possible overly delayed)",
	tcpDetailOvershoot:           "bytes more than expected",
	tcpDetailTimeoutLowered:      "response to fin/rst: lower timeout",
	tcpDetailSynRetrans:          "syn retransmit: timeout not renewed",
	tcpDetailRSTUnreplied:        "rst before reply: entry deleted",
}

func (d tcpDetail) String() string {
	if d < numTCPDetails {
		return tcpDetailNames[d]
	}
	return "tcpDetail(?)"
}

// tcpOut is the tracker's decision on one packet.
type tcpOut struct {
	action tcpAction
	// reason is set with tcpInvalid: ReasonTCPState (table cell IV),
	// ReasonTCPInvalidRST, ReasonTCPSeqAboveWindow (bound I) or
	// ReasonTCPAckAboveSent (bound III).
	reason Reason
	// old and new are the state before and after the packet (equal unless
	// the state changed), for events and traces.
	old, new TCPState
	detail   tcpDetail
	// liberal is set when a window bound failed (detail) but liberal mode
	// (cfg.BeLiberal or a picked-up connection) accepted the packet.
	liberal bool
	// refresh: set the entry's timeout to now+timeout. False for ignored
	// packets, SYN retransmits in SYN_SENT before any reply, and entries
	// with FIXED_TIMEOUT.
	refresh bool
	// assured: set the ASSURED status bit.
	assured bool
	timeout time.Duration
}

// tcpWinResult is the outcome of the window check.
type tcpWinResult uint8

const (
	tcpWinAccept tcpWinResult = iota
	tcpWinIgnore
	tcpWinInvalid
)

// packet runs the tracker for one packet of an existing entry (or of the
// entry init just created). It implements 2.5 to 2.9 in the kernel's order.
// Preconditions: tcpCheckFlags(seg.flags) == ReasonNone, in.cfg != nil.
func (c *tcpConn) packet(seg *tcpSeg, in tcpIn) tcpOut {
	dir := in.dir
	oldState := c.state
	out := tcpOut{old: oldState, new: oldState}
	if dir > Reply || oldState >= numTCPStates {
		// Cannot happen with a well-formed entry; refuse rather than index
		// out of range.
		out.action, out.reason, out.detail = tcpInvalid, ReasonTCPState, tcpDetailTableInvalid
		return out
	}
	idx := tcpIndexOf(seg.flags)
	newState := tcpTransitions[dir][idx][oldState]
	// tableOld is the old state as the rest of the rules see it: the
	// resynchronisation of 2.6-2a pretends the entry was in SYN_SENT.
	tableOld := oldState
	skipWindow := false

	switch newState {
	case TCPSynSent:
		if oldState < TCPTimeWait {
			break
		}
		// 2.6-1: SYN on TIME_WAIT or CLOSE. Reopen if the old connection
		// was closed by a FIN, or aborted by a RST from this side.
		if (c.dir[0].flags|c.dir[1].flags)&tcpFlagCloseInit != 0 ||
			(c.lastDir == dir && c.lastIndex == tcpRstSet) {
			out.action, out.detail = tcpRecreate, tcpDetailReopen
			return out
		}
		// Otherwise the SYN is ignored (the peer answers with a SYN/ACK we
		// resynchronise on, or with a RST).
		newState = tcpSIG
		fallthrough
	case tcpSIG:
		if idx == tcpSynAckSet && c.lastIndex == tcpSynSet && c.lastDir != dir &&
			seg.ack == c.lastEnd {
			// 2.6-2a: this SYN/ACK answers the SYN we ignored: both ends
			// are in sync and we are not. Adopt the ignored SYN's data.
			tableOld, newState = TCPSynSent, TCPSynRecv
			s := &c.dir[c.lastDir]
			s.end = c.lastEnd
			s.maxend = c.lastEnd
			s.maxwin = max(uint32(c.lastWin), 1)
			s.scale = c.lastWscale
			c.lastFlags &^= tcpFlagExpChallenge
			s.flags = c.lastFlags
			r := &c.dir[dir]
			*r = tcpDirState{flags: r.flags & tcpFlagBeLiberal}
			out.detail = tcpDetailResync
			break
		}
		// 2.6-2b: record the ignored packet.
		c.lastIndex = idx
		c.lastDir = dir
		c.lastSeq = seg.seq
		c.lastEnd = seg.end()
		c.lastWin = seg.win
		if idx == tcpSynSet && dir == Original {
			// Keep the SYN's options for a resynchronisation.
			c.lastFlags = 0
			c.lastWscale = 0
			if seg.opts.HasWScale {
				c.lastFlags |= tcpFlagWindowScale
				c.lastWscale = min(seg.opts.WScale, tcpMaxWScale)
			}
			if seg.opts.SACKPerm {
				c.lastFlags |= tcpFlagSACKPerm
			}
			if oldState == TCPLastAck {
				// An RFC 5961 challenge ACK may answer this SYN: it must
				// not be taken for the last ACK.
				c.lastFlags |= tcpFlagExpChallenge
			}
		}
		if oldState == TCPSynSent && idx == tcpAckSet && dir == Reply {
			// Possibly a challenge ACK answering the SYN (2.6-6d).
			c.lastAck = seg.ack
		}
		out.action, out.detail = tcpIgnore, tcpDetailTableIgnore
		return out
	case tcpSIV:
		out.action, out.reason, out.detail = tcpInvalid, ReasonTCPState, tcpDetailTableInvalid
		return out
	case TCPTimeWait:
		// 2.6-4: in LAST_ACK, an ACK answering the SYN we ignored is a
		// challenge ACK, not the last ACK.
		if oldState == TCPLastAck && idx == tcpAckSet && c.lastDir != dir &&
			c.lastIndex == tcpSynSet && c.lastFlags&tcpFlagExpChallenge != 0 {
			c.lastFlags &^= tcpFlagExpChallenge
			out.action, out.detail = tcpIgnore, tcpDetailChallengeACK
			return out
		}
	case TCPSynSent2:
		// 2.6-5: simultaneous open.
		c.lastFlags |= tcpFlagSimOpen
	case TCPSynRecv:
		if dir == Reply && idx == tcpAckSet && c.lastFlags&tcpFlagSimOpen != 0 {
			newState = TCPEstablished
		}
	case TCPClose:
		if idx != tcpRstSet {
			break
		}
		newState, skipWindow, out = c.checkRST(seg, &in, oldState, out)
		if out.action == tcpInvalid {
			return out
		}
	}

	if !skipWindow {
		res, detail, liberal := c.inWindow(seg, &in, idx)
		if detail != tcpDetailNone {
			out.detail = detail
		}
		out.liberal = liberal
		switch res {
		case tcpWinIgnore:
			out.action = tcpIgnore
			return out
		case tcpWinInvalid:
			out.action = tcpInvalid
			if detail == tcpDetailAckOverUpper {
				out.reason = ReasonTCPAckAboveSent
			} else {
				out.reason = ReasonTCPSeqAboveWindow
			}
			c.handleInvalid(idx, &in, &out)
			return out
		}
	}
	return c.commit(seg, &in, idx, tableOld, newState, out)
}

// checkRST applies the RST rules of 2.6-6 to a RST that the table moves to
// CLOSE. It returns the state to commit, whether the window check is
// skipped, and out (with tcpInvalid for an invalid RST).
func (c *tcpConn) checkRST(seg *tcpSeg, in *tcpIn, oldState TCPState, out tcpOut) (TCPState, bool, tcpOut) {
	newState := TCPClose
	// 6a: the tuple may already be reused: no check at all.
	if tcpCanEarlyDrop(c.state) {
		out.detail = tcpDetailRSTClosing
		return newState, true, out
	}
	established := c.state == TCPEstablished && in.status&StatusAssured != 0
	other := &c.dir[in.dir^1]
	// 6b: the peer's highest ack says where the RST must be (unless a SYN
	// we let through may have made it stale).
	if other.flags&tcpFlagMaxAckSet != 0 && c.lastIndex != tcpSynSet {
		seq := seg.seq
		if seq == 0 && !established {
			// Most likely answers a SYN we let through.
			return newState, false, out
		}
		if seqBefore(seq, other.maxack) && !in.cfg.IgnoreInvalidRST {
			out.action, out.reason, out.detail = tcpInvalid, ReasonTCPInvalidRST, tcpDetailRSTBelowAck
			return newState, false, out
		}
		if !established || seq == other.maxack {
			return newState, false, out
		}
		if c.lastIndex == tcpAckSet && c.lastDir == in.dir && seq == c.lastEnd {
			// Right after the last data segment of the same side.
			return newState, false, out
		}
		// In window but not exactly where expected: keep the state so that
		// the peer can send a challenge ACK (the timeout still drops to
		// the CLOSE timeout at commit).
		newState = oldState
		out.detail = tcpDetailRSTInexact
	}
	// 6c: RST answering a SYN we ignored (sent by the other side: recent
	// kernels check the direction), or an ACK of a half-open connection:
	// its ack may acknowledge data we never saw, so skip the window check.
	if ((in.status&StatusSeenReply != 0 && c.lastIndex == tcpSynSet && c.lastDir != in.dir) ||
		(in.status&StatusAssured == 0 && c.lastIndex == tcpAckSet)) &&
		seg.ack == c.lastEnd {
		out.detail = tcpDetailRSTAnswersIgnored
		return newState, true, out
	}
	// 6d: RST answering the challenge ACK we let through in SYN_SENT.
	if oldState == TCPSynSent && c.lastIndex == tcpAckSet && c.lastDir == Reply &&
		seg.seq == c.lastAck {
		out.detail = tcpDetailRSTAnswersChallenge
		return newState, true, out
	}
	return newState, false, out
}

// inWindow is the window check of 2.7 (tcp_in_window). It updates the
// window data of both directions on success (and, for the overshoot case,
// the sender's end). It returns the result, the bound that failed (or
// tcpDetailNone), and whether liberal mode turned a failure into an accept.
func (c *tcpConn) inWindow(seg *tcpSeg, in *tcpIn, idx tcpIndex) (tcpWinResult, tcpDetail, bool) {
	dir := in.dir
	sender := &c.dir[dir]
	receiver := &c.dir[dir^1]
	syn := seg.flags&packet.SYN != 0
	hasAck := seg.flags&packet.ACK != 0

	seq := seg.seq
	ack := seg.ack
	win := uint32(seg.win)
	end := seg.end()
	sack := ack
	if receiver.flags&tcpFlagSACKPerm != 0 {
		for i := 0; i < int(seg.opts.NumSACK) && i < len(seg.opts.SACK); i++ {
			if r := seg.opts.SACK[i][1]; seqAfter(r, sack) {
				sack = r
			}
		}
	}
	// NAT sequence adjustment of the other direction (7.3).
	off := uint32(in.peerSeqAdj.at(ack - 1))
	ack -= off
	sack -= off

	if sender.maxwin == 0 {
		// First packet seen from this side.
		if syn {
			// SYN/ACK answering the SYN, or a reply SYN (simultaneous open).
			c.initSender(seg, dir, end)
			if !hasAck {
				return tcpWinAccept, tcpDetailNone, false
			}
		} else {
			// Mid-stream: take what the packet says.
			sender.end = end
			swin := win << sender.scale
			sender.maxwin = max(swin, 1)
			sender.maxend = end + sender.maxwin
			if receiver.maxwin == 0 {
				// Nothing seen from the other side either: make III and IV
				// pass until it speaks.
				receiver.end = sack
				receiver.maxend = sack
			} else if sack == receiver.end+1 {
				// Probably answers a keepalive probe (seq one below).
				receiver.end++
			}
		}
	} else if syn && seqAfter(end, sender.end) &&
		(c.state == TCPSynSent || c.state == TCPSynRecv) {
		// A new SYN (or SYN/ACK) with a higher ISN during the handshake:
		// the endpoint restarted; start over for this direction.
		c.initSender(seg, dir, end)
		if dir == Reply && !hasAck {
			return tcpWinAccept, tcpDetailNone, false
		}
	}

	if !hasAck {
		ack = receiver.end
		sack = ack
	} else if seg.flags&(packet.ACK|packet.RST) == packet.ACK|packet.RST && ack == 0 {
		// Broken stacks send RST+ACK with a zero ack.
		ack = receiver.end
		sack = ack
	}
	if seg.flags&packet.RST != 0 && seq == 0 && c.state == TCPSynSent {
		// RST answering the SYN.
		seq = sender.end
		end = seq
	}

	// Bound I (with the overshoot exception).
	if !seqBefore(seq, sender.maxend+1) {
		overshot := end - sender.maxend + 1
		ackOK := seqAfter(sack, receiver.end-sender.maxAckWindow()-1)
		inRecvWin := receiver.maxwin != 0 && seqAfter(end, sender.end-receiver.maxwin-1)
		if inRecvWin && ackOK && overshot <= receiver.maxwin && seqBefore(sack, receiver.end+1) {
			// The sender went past the advertised window by less than a
			// window: let the peer's ACK for it be valid later.
			sender.end = end
			sender.flags |= tcpFlagDataUnack
			return c.windowFailure(in, tcpWinIgnore, tcpDetailOvershoot)
		}
		return c.windowFailure(in, tcpWinInvalid, tcpDetailSeqOverUpper)
	}
	// Bound III.
	if !seqBefore(sack, receiver.end+1) {
		return c.windowFailure(in, tcpWinInvalid, tcpDetailAckOverUpper)
	}
	// Bound II.
	if receiver.maxwin != 0 && !seqAfter(end, sender.end-receiver.maxwin-1) {
		return c.windowFailure(in, tcpWinIgnore, tcpDetailSeqUnderLower)
	}
	// Bound IV.
	if !seqAfter(sack, receiver.end-sender.maxAckWindow()-1) {
		return c.windowFailure(in, tcpWinIgnore, tcpDetailAckUnderLower)
	}

	// In window: update the sender.
	if !syn {
		win <<= sender.scale
	}
	c.accepted(dir, seq, ack, sack, end, win, seg.win, hasAck, idx == tcpAckSet)
	return tcpWinAccept, tcpDetailNone, false
}

// accepted applies the updates of an in-window packet (2.7, 5-12) to both
// directions' window data and the retransmission record: win is already
// scaled; rawWin is the header's field. The general tracker and the fast
// path of established connections share it.
func (c *tcpConn) accepted(dir Dir, seq, ack, sack, end, win uint32, rawWin uint16, hasAck, isAck bool) {
	sender := &c.dir[dir]
	receiver := &c.dir[dir^1]
	if swin := win + (sack - ack); sender.maxwin < swin {
		sender.maxwin = swin
	}
	if seqAfter(end, sender.end) {
		sender.end = end
		sender.flags |= tcpFlagDataUnack
	}
	if hasAck {
		if sender.flags&tcpFlagMaxAckSet == 0 {
			sender.maxack = ack
			sender.flags |= tcpFlagMaxAckSet
		} else if seqAfter(ack, sender.maxack) {
			sender.maxack = ack
		}
	}
	// Update the receiver.
	if receiver.maxwin != 0 && seqAfter(end, sender.maxend) {
		receiver.maxwin += end - sender.maxend
	}
	if seqAfter(sack+win, receiver.maxend-1) {
		receiver.maxend = sack + win
		if win == 0 {
			// Keep a zero-window probe valid.
			receiver.maxend++
		}
	}
	if ack == receiver.end {
		receiver.flags &^= tcpFlagDataUnack
	}
	// Count retransmissions of identical ACK segments.
	if isAck {
		if c.lastDir == dir && c.lastSeq == seq && c.lastAck == ack &&
			c.lastEnd == end && c.lastWin == rawWin {
			c.retrans++
		} else {
			c.lastDir = dir
			c.lastSeq = seq
			c.lastAck = ack
			c.lastEnd = end
			c.lastWin = rawWin
			c.retrans = 0
		}
	}
}

// windowFailure turns a failed bound into the result: accept in liberal
// mode (sysctl, or the sender's BE_LIBERAL flag), else res.
func (c *tcpConn) windowFailure(in *tcpIn, res tcpWinResult, d tcpDetail) (tcpWinResult, tcpDetail, bool) {
	if in.cfg.BeLiberal || c.dir[in.dir].flags&tcpFlagBeLiberal != 0 {
		return tcpWinAccept, d, true
	}
	return res, d, false
}

// initSender (re)initialises the sender's window data from a SYN or
// SYN/ACK (tcp_init_sender). Window scaling is enabled only if both sides
// sent the option: the check is made when the reply direction's options
// arrive.
func (c *tcpConn) initSender(seg *tcpSeg, dir Dir, end uint32) {
	sender := &c.dir[dir]
	receiver := &c.dir[dir^1]
	sender.end = end
	sender.maxend = end
	sender.maxwin = max(uint32(seg.win), 1)
	if seg.hasOpts {
		sender.readOptions(&seg.opts)
	}
	if dir == Reply && (sender.flags&tcpFlagWindowScale == 0 || receiver.flags&tcpFlagWindowScale == 0) {
		sender.scale = 0
		receiver.scale = 0
	}
}

// handleInvalid is 2.9 (nf_tcp_handle_invalid), for packets the window
// check found INVALID: an out-of-window FIN or RST answering the other
// side's FIN or RST lowers the timeout of an ASSURED entry to the
// unacknowledged-data timeout; otherwise the packet is recorded as the last
// one.
func (c *tcpConn) handleInvalid(idx tcpIndex, in *tcpIn, out *tcpOut) {
	if in.status&StatusAssured == 0 || in.status&StatusFixedTimeout != 0 {
		return
	}
	if idx != tcpRstSet && idx != tcpFinSet {
		return
	}
	if c.lastDir != in.dir && (c.lastIndex == tcpFinSet || c.lastIndex == tcpRstSet) {
		unack := in.cfg.TimeoutUnack
		if in.remaining < 120*time.Second {
			return
		}
		if in.remaining > unack {
			out.refresh = true
			out.timeout = unack
			out.detail = tcpDetailTimeoutLowered
		}
		return
	}
	c.lastIndex = idx
	c.lastDir = in.dir
}

// commit is 2.8: record the packet, move to the new state, choose the
// timeout and decide ASSURED, refresh or deletion.
func (c *tcpConn) commit(seg *tcpSeg, in *tcpIn, idx tcpIndex, tableOld, newState TCPState, out tcpOut) tcpOut {
	cfg := in.cfg
	c.lastIndex = idx
	c.lastDir = in.dir
	c.state = newState
	out.new = newState
	if tableOld != newState && newState == TCPFinWait {
		c.dir[in.dir].flags |= tcpFlagCloseInit
	}

	t := &cfg.Timeouts
	var timeout time.Duration
	switch {
	case int(c.retrans) >= cfg.MaxRetrans && t[newState] > cfg.TimeoutRetrans:
		timeout = cfg.TimeoutRetrans
	case idx == tcpRstSet:
		timeout = t[TCPClose]
	case (c.dir[0].flags|c.dir[1].flags)&tcpFlagDataUnack != 0 && t[newState] > cfg.TimeoutUnack:
		timeout = cfg.TimeoutUnack
	case c.lastWin == 0 && t[newState] > cfg.TimeoutRetrans:
		timeout = cfg.TimeoutRetrans
	default:
		timeout = t[newState]
	}

	out.action = tcpAccept
	if in.status&StatusSeenReply == 0 {
		if seg.flags&packet.RST != 0 {
			// Only a RST came back: there is no connection; forget it.
			out.action, out.detail = tcpAcceptDelete, tcpDetailRSTUnreplied
			return out
		}
		if idx == tcpSynSet && tableOld == TCPSynSent {
			// A retransmitted SYN must not keep an unanswered entry (and
			// its NAT binding) alive forever.
			out.detail = tcpDetailSynRetrans
			return out
		}
		if newState == TCPEstablished && timeout > cfg.TimeoutUnack {
			// Picked up mid-stream and nothing came back yet.
			timeout = cfg.TimeoutUnack
		}
	} else if in.status&StatusAssured == 0 &&
		(tableOld == TCPSynRecv || tableOld == TCPEstablished) && newState == TCPEstablished {
		out.assured = true
	}
	if in.status&StatusFixedTimeout == 0 {
		out.refresh = true
		out.timeout = timeout
	}
	return out
}

package ftp

import (
	"sync/atomic"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// Name is the helper's name, as rules attach it ("ct helper set ftp") and
// listings show it.
const Name = "ftp"

// Defaults of the kernel's FTP expectation policy.
const (
	DefaultExpectTimeout = 300 * time.Second
	DefaultMaxExpected   = 1
)

// Config configures a Helper. The zero value is the kernel's default.
type Config struct {
	// Loose creates the expectation towards the announced address even
	// when it is not the sender's own (the kernel's loose=1). Off, such a
	// command is let through but announces nothing (FTP bounce protection).
	Loose bool
	// ExpectTimeout is the lifetime of an expectation; it is never
	// refreshed. 0 means DefaultExpectTimeout (300 s).
	ExpectTimeout time.Duration
	// MaxExpected is the number of pending expectations a control
	// connection may have; announcing one more evicts its oldest. 0 (or
	// less) means DefaultMaxExpected (1).
	MaxExpected int
	// Log, if not nil, is called for the rare events that the counters
	// count by reason: dropped partial commands, refused expectations
	// (bounce, failed add). It runs synchronously on the pipeline worker's
	// goroutine, possibly on several workers at once, and must not block.
	Log func(Event)
}

// Event describes one rare event for Config.Log.
type Event struct {
	Reason string // one of the Why* constants
	Conn   conntrack.ConnID
	Dir    conntrack.Dir
	Cmd    Command // the parsed command (Kind only, for a partial one)
	Err    error   // the expectation table's error, for WhyAddFailed
}

// Reasons: stable texts for logs, traces and HelperResult.Why.
const (
	WhyPartialPORT = "ftp: partial PORT"
	WhyPartialEPRT = "ftp: partial EPRT"
	WhyPartial227  = "ftp: partial 227"
	WhyPartial229  = "ftp: partial 229"
	WhyAddFailed   = "ftp: cannot add expectation"
	WhyBounce      = "ftp: announced address is not the sender's"
)

var partialWhy = [numKinds]string{KindPORT: WhyPartialPORT, KindPASV: WhyPartial227,
	KindEPRT: WhyPartialEPRT, KindEPSV: WhyPartial229}

// NumKinds is the number of Kind values (for indexing Stats arrays).
const NumKinds = int(numKinds)

// Stats are a Helper's counters since it was created.
type Stats struct {
	// Seen counts commands and replies parsed completely, by Kind.
	Seen [NumKinds]uint64
	// Partial counts packets dropped because a command or reply was
	// truncated or malformed, by Kind of the pattern that matched.
	Partial [NumKinds]uint64
	// Expected counts expectations added.
	Expected uint64
	// Bounce counts commands that named another address than the
	// sender's; without Loose they announce nothing (packet accepted).
	Bounce uint64
	// AddFailed counts packets dropped because the expectation table
	// refused the expectation (clash, table full, ...).
	AddFailed uint64
	// GateSkipped counts segments with payload that were not parsed
	// because they do not start right after a newline seen in their
	// direction (first segment per direction, continuation of a split
	// line, out-of-order segment).
	GateSkipped uint64
}

// Helper is the FTP ALG. One Helper serves every worker: its
// configuration is immutable and its counters are atomic; per-connection
// state lives in HelperContext.State.
type Helper struct {
	cfg     Config
	timeout int64

	seen, partial                     [numKinds]atomic.Uint64
	expected, bounce, addFailed, gate atomic.Uint64
}

var _ conntrack.Helper = (*Helper)(nil)

// New returns an FTP helper.
func New(cfg Config) *Helper {
	if cfg.ExpectTimeout <= 0 {
		cfg.ExpectTimeout = DefaultExpectTimeout
	}
	if cfg.MaxExpected <= 0 {
		cfg.MaxExpected = DefaultMaxExpected
	}
	return &Helper{cfg: cfg, timeout: int64(cfg.ExpectTimeout)}
}

// Name returns "ftp".
func (h *Helper) Name() string { return Name }

// Config returns the configuration in effect (defaults filled in).
func (h *Helper) Config() Config { return h.cfg }

// Stats returns the helper's counters.
func (h *Helper) Stats() Stats {
	var s Stats
	for k := range s.Seen {
		s.Seen[k] = h.seen[k].Load()
		s.Partial[k] = h.partial[k].Load()
	}
	s.Expected = h.expected.Load()
	s.Bounce = h.bounce.Load()
	s.AddFailed = h.addFailed.Load()
	s.GateSkipped = h.gate.Load()
	return s
}

// seqAfterNewline is how many "sequence number after a newline" positions
// are remembered per direction (the kernel's NUM_SEQ_TO_REMEMBER).
const seqAfterNewline = 2

// connState is the per-control-connection state: per direction, the
// sequence numbers that follow the last newlines seen.
type connState struct {
	seq [2][seqAfterNewline]uint32
	n   [2]uint8
}

// atLineStart reports whether seq follows a remembered newline in dir.
func (s *connState) atLineStart(dir conntrack.Dir, seq uint32) bool {
	for i := range s.n[dir] {
		if s.seq[dir][i] == seq {
			return true
		}
	}
	return false
}

// remember records seq as following a newline in dir. When both slots are
// used, the older one is replaced, but only by a newer seq (so an old
// retransmission does not push out a current position).
func (s *connState) remember(dir conntrack.Dir, seq uint32) {
	if s.atLineStart(dir, seq) {
		return
	}
	if n := s.n[dir]; n < seqAfterNewline {
		s.seq[dir][n] = seq
		s.n[dir]++
		return
	}
	old := 1
	if seqBefore(s.seq[dir][0], s.seq[dir][1]) {
		old = 0
	}
	if seqBefore(s.seq[dir][old], seq) {
		s.seq[dir][old] = seq
	}
}

// seqBefore compares sequence numbers modulo 2^32.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

var accept = conntrack.HelperResult{}

// Help examines one packet of an FTP control connection, the way the
// kernel's FTP helper does:
//
//  1. Only packets with ctinfo ESTABLISHED or ESTABLISHED_REPLY (so never
//     before the first reply, never RELATED) and with TCP payload are
//     examined; unfragmented packets only (the pipeline reassembles).
//  2. The segment is parsed only if its sequence number is one that
//     follows a newline seen earlier in the same direction (so the first
//     data segment per direction is never parsed). After parsing (or
//     not), if the segment ends with '\n', seq+len is remembered; a
//     partial command's segment is dropped and not remembered.
//  3. Only the start of the segment is matched: PORT then EPRT from the
//     client (original direction), 227 then 229 from the server (reply).
//  4. A partial command drops the packet (Why: "ftp: partial PORT", ...).
//  5. A parsed command announces an expectation unless the announced
//     address differs from the sender's (bounce: counted, accepted, no
//     expectation; with Loose the expectation goes to the announced
//     address). PORT/EPRT: from the server (any source port) to the
//     client's address as the server sees it : port. 227/229: from the
//     client (any source port) to the server's address as the client
//     addresses it : port. If the table refuses it, the packet is dropped.
func (h *Helper) Help(c *conntrack.HelperContext) conntrack.HelperResult {
	if c.Info != conntrack.Established && c.Info != conntrack.EstablishedReply {
		return accept
	}
	p := c.Packet
	if p == nil || p.Err != packet.ErrNone || p.Proto != packet.TCP || p.Fragment {
		return accept
	}
	data := p.Payload()
	if len(data) == 0 {
		return accept
	}
	st := stateOf(c)
	if st == nil {
		return accept
	}
	dir := c.Info.Dir()
	endsNL := data[len(data)-1] == '\n'
	// Uses the sequence number as received (before any future seq
	// adjustment by NAT), as the kernel does.
	after := p.Seq + uint32(len(data))

	if !st.atLineStart(dir, p.Seq) {
		h.gate.Add(1)
		if endsNL {
			st.remember(dir, after)
		}
		return accept
	}

	cmd, r := parse(data, dir, c.Tuple[conntrack.Original].Family)
	switch r {
	case NoMatch:
		if endsNL {
			st.remember(dir, after)
		}
		return accept
	case Partial:
		h.partial[cmd.Kind].Add(1)
		why := partialWhy[cmd.Kind]
		if h.cfg.Log != nil {
			h.cfg.Log(Event{Reason: why, Conn: c.ConnID, Dir: dir, Cmd: Command{Kind: cmd.Kind}})
		}
		return conntrack.HelperResult{Drop: true, Why: why}
	}
	h.seen[cmd.Kind].Add(1)
	res := h.announce(c, dir, &cmd)
	if endsNL {
		st.remember(dir, after)
	}
	return res
}

// parse tries the direction's patterns in the kernel's order; the first
// that is not NoMatch decides. For Partial, cmd.Kind names the pattern.
func parse(data []byte, dir conntrack.Dir, family uint8) (Command, Result) {
	if dir == conntrack.Original {
		if cmd, r := ParsePORT(data); r != NoMatch {
			cmd.Kind = KindPORT
			return cmd, r
		}
		cmd, r := ParseEPRT(data, family)
		cmd.Kind = KindEPRT
		return cmd, r
	}
	if cmd, r := Parse227(data); r != NoMatch {
		cmd.Kind = KindPASV
		return cmd, r
	}
	cmd, r := Parse229(data)
	cmd.Kind = KindEPSV
	return cmd, r
}

// announce checks the announced address and adds the expectation.
func (h *Helper) announce(c *conntrack.HelperContext, dir conntrack.Dir, cmd *Command) conntrack.HelperResult {
	this, other := &c.Tuple[dir], &c.Tuple[1-dir]
	// The announced address starts as the sender's own, as this
	// direction's tuple has it (229 names none). PORT, 227 and EPRT |1|
	// replace its first 4 bytes, as the kernel does even on an IPv6
	// connection, where this almost always makes the check below fail.
	announced := this.Src
	switch {
	case cmd.Addr.Is4():
		a := cmd.Addr.As4()
		copy(announced[:4], a[:])
	case cmd.Addr.Is6():
		announced = cmd.Addr.As16()
	}
	daddr := other.Dst
	if announced != this.Src {
		h.bounce.Add(1)
		if h.cfg.Log != nil {
			h.cfg.Log(Event{Reason: WhyBounce, Conn: c.ConnID, Dir: dir, Cmd: *cmd})
		}
		if !h.cfg.Loose {
			return accept
		}
		daddr = announced
	}
	// NAT (not implemented yet) hooks in here: with SNAT/DNAT on the
	// control connection it would announce other.Dst instead, rewrite the
	// text at cmd.Off/cmd.Len, retry other ports on ErrExpectClash, and
	// record a sequence adjustment when the length changes.
	x := conntrack.Expectation{
		Tuple: packet.FlowKey{
			Src: other.Src, Dst: daddr, DstPort: cmd.Port,
			Proto: packet.TCP, Family: other.Family,
		},
		SrcPortWild: true,
		Master:      c.ConnID,
		MasterTuple: c.Tuple[conntrack.Original],
		Helper:      Name,
		Expires:     c.Now + h.timeout,
	}
	var err error = errNoTable
	if c.Expect != nil {
		err = c.Expect.Add(x, h.cfg.MaxExpected, c.Now)
	}
	if err != nil {
		h.addFailed.Add(1)
		if h.cfg.Log != nil {
			h.cfg.Log(Event{Reason: WhyAddFailed, Conn: c.ConnID, Dir: dir, Cmd: *cmd, Err: err})
		}
		return conntrack.HelperResult{Drop: true, Why: WhyAddFailed}
	}
	h.expected.Add(1)
	return accept
}

type noTableError struct{}

func (noTableError) Error() string { return "ftp: no expectation table" }

var errNoTable error = noTableError{}

// stateOf returns the connection's helper state, allocating it on the
// connection's first examined packet. It returns nil if the table gave no
// State slot (nothing can be remembered, so nothing is ever parsed).
func stateOf(c *conntrack.HelperContext) *connState {
	if c.State == nil {
		return nil
	}
	if st, ok := (*c.State).(*connState); ok {
		return st
	}
	st := new(connState)
	*c.State = st
	return st
}

package conntrack

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
)

// This file holds the test helpers of the TCP tracker: segment builders and
// tcpSim, a one-connection stand-in for the table that applies tcpOut the
// way the kernel's nf_conntrack_in does (entry creation, SEEN_REPLY after
// the tracker, ASSURED, timeouts, deletion and re-creation).

// Flag shorthands for test tables.
const (
	fF = packet.FIN
	fS = packet.SYN
	fR = packet.RST
	fP = packet.PSH
	fA = packet.ACK
	fU = packet.URG
)

// tseg builds a segment without options.
func tseg(flags packet.TCPFlags, seq, ack uint32, win uint16, n uint32) tcpSeg {
	return tcpSeg{seq: seq, ack: ack, win: win, flags: flags, dataLen: n}
}

// wscale adds a window-scale option.
func (s tcpSeg) wscale(w uint8) tcpSeg {
	s.hasOpts = true
	s.opts.HasWScale = true
	s.opts.WScale = w
	return s
}

// sackPerm adds a SACK-permitted option.
func (s tcpSeg) sackPerm() tcpSeg {
	s.hasOpts = true
	s.opts.SACKPerm = true
	return s
}

// sackBlock adds a SACK block [l, r).
func (s tcpSeg) sackBlock(l, r uint32) tcpSeg {
	s.hasOpts = true
	s.opts.SACK[s.opts.NumSACK] = [2]uint32{l, r}
	s.opts.NumSACK++
	return s
}

// mss adds an MSS option only (options present, nothing conntrack uses).
func (s tcpSeg) mss() tcpSeg {
	s.hasOpts = true
	s.opts.HasMSS = true
	s.opts.MSS = 1460
	return s
}

func (s tcpSeg) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v seq=%d ack=%d win=%d len=%d", s.flags, s.seq, s.ack, s.win, s.dataLen)
	if s.opts.HasWScale {
		fmt.Fprintf(&b, " wscale=%d", s.opts.WScale)
	}
	if s.opts.SACKPerm {
		b.WriteString(" sackOK")
	}
	for i := 0; i < int(s.opts.NumSACK); i++ {
		fmt.Fprintf(&b, " sack=%d-%d", s.opts.SACK[i][0], s.opts.SACK[i][1])
	}
	return b.String()
}

// testTCPConfig returns the Linux defaults.
func testTCPConfig() TCPConfig { return DefaultConfig().TCP }

// Endpoints of the simulated connection.
type tcpEnd uint8

const (
	epClient tcpEnd = 0
	epServer tcpEnd = 1
)

func (e tcpEnd) String() string {
	if e == epServer {
		return "server"
	}
	return "client"
}

// verdict is what happened to a packet as a filter would see it.
type verdict uint8

const (
	vAccept  verdict = iota // accepted (state may have changed)
	vIgnore                 // accepted, tracker ignored it (not INVALID)
	vInvalid                // INVALID
)

func (v verdict) String() string { return [...]string{"accept", "ignore", "invalid"}[v] }

// tcpStep is the outcome of one simulated packet.
type tcpStep struct {
	v        verdict
	out      tcpOut // the last tracker call's output (after a re-creation: the new entry's)
	reason   Reason
	info     CtInfo
	created  bool // a new entry was created for this packet
	recreate bool // an old entry was deleted and a new one created
	deleted  bool // the entry was deleted (RST before reply)
	state    TCPState
	exists   bool
}

// tcpSim is a one-connection table: endpoints client and server, at most
// one entry, whose original direction is the endpoint that sent its first
// packet.
type tcpSim struct {
	cfg     TCPConfig
	exists  bool
	origin  tcpEnd
	conn    tcpConn
	status  Status
	now     time.Duration
	expires time.Duration
	// peerAdj is passed as tcpIn.peerSeqAdj (indexed by the packet's
	// direction: the adjustment of the other direction).
	peerAdj [2]tcpSeqOffset
	steps   int
	invalid int
}

func newTCPSim() *tcpSim { return &tcpSim{cfg: testTCPConfig()} }

func (s *tcpSim) advance(d time.Duration) { s.now += d }

// remaining returns the entry's remaining lifetime.
func (s *tcpSim) remaining() time.Duration {
	if !s.exists || s.expires <= s.now {
		return 0
	}
	return s.expires - s.now
}

func (s *tcpSim) dirOf(from tcpEnd) Dir {
	if from == s.origin {
		return Original
	}
	return Reply
}

// send processes one packet from endpoint from.
func (s *tcpSim) send(from tcpEnd, seg tcpSeg) tcpStep {
	s.steps++
	st := s.process(from, seg, false)
	st.exists = s.exists
	if s.exists {
		st.state = s.conn.state
	}
	if st.v == vInvalid {
		s.invalid++
	}
	return st
}

func (s *tcpSim) process(from tcpEnd, seg tcpSeg, again bool) tcpStep {
	var st tcpStep
	if r := tcpCheckFlags(seg.flags); r != ReasonNone {
		st.v, st.reason, st.info = vInvalid, r, Invalid
		return st
	}
	if s.exists && s.now >= s.expires {
		s.exists = false // expired
	}
	if !s.exists {
		var c tcpConn
		if r := c.init(&seg, &s.cfg); r != ReasonNone {
			st.v, st.reason, st.info = vInvalid, r, Invalid
			return st
		}
		out := c.packet(&seg, tcpIn{dir: Original, cfg: &s.cfg})
		st.out = out
		switch out.action {
		case tcpAccept, tcpIgnore:
			s.exists, s.conn, s.origin, s.status = true, c, from, 0
			if out.refresh {
				s.expires = s.now + out.timeout
			} else {
				// Cannot happen for a first packet; keep the entry
				// visible with the state's timeout.
				s.expires = s.now + s.cfg.Timeouts[c.state]
			}
			if out.assured {
				s.status |= StatusAssured
			}
			st.v, st.info, st.created, st.recreate = vAccept, New, true, again
			if out.action == tcpIgnore {
				st.v = vIgnore
			}
		case tcpAcceptDelete:
			st.v, st.info, st.deleted = vAccept, New, true
		default:
			st.v, st.reason, st.info = vInvalid, out.reason, Invalid
			if st.reason == ReasonNone {
				st.reason = ReasonTCPState
			}
		}
		return st
	}

	dir := s.dirOf(from)
	switch {
	case dir == Reply:
		st.info = EstablishedReply
	case s.status&StatusSeenReply != 0:
		st.info = Established
	default:
		st.info = New
	}
	out := s.conn.packet(&seg, tcpIn{
		dir: dir, status: s.status, cfg: &s.cfg, remaining: s.remaining(),
		peerSeqAdj: s.peerAdj[dir],
	})
	st.out = out
	switch out.action {
	case tcpAccept:
		if out.refresh {
			s.expires = s.now + out.timeout
		}
		if out.assured {
			s.status |= StatusAssured
		}
		if dir == Reply {
			s.status |= StatusSeenReply
		}
		st.v = vAccept
	case tcpIgnore:
		if dir == Reply {
			s.status |= StatusSeenReply
		}
		st.v = vIgnore
	case tcpInvalid:
		if out.refresh {
			s.expires = s.now + out.timeout
		}
		st.v, st.reason, st.info = vInvalid, out.reason, Invalid
	case tcpRecreate:
		s.exists = false
		if again {
			st.v, st.reason, st.info = vInvalid, ReasonTCPState, Invalid
			return st
		}
		return s.process(from, seg, true)
	case tcpAcceptDelete:
		s.exists = false
		st.v, st.deleted = vAccept, true
	}
	return st
}

// ---- Raw packet builders (segOf tests and the kernel comparison). ----

// rawTCP describes a TCP/IP packet to build.
type rawTCP struct {
	src, dst   netip.AddrPort
	seq, ack   uint32
	flags      packet.TCPFlags
	win        uint16
	opts       []byte // raw TCP options (padded to 4 bytes by the builder)
	payloadLen int
}

// tcpOptBytes encodes the options of a test segment (MSS, window scale,
// SACK-permitted, SACK blocks) in the usual layout.
func tcpOptBytes(s *tcpSeg) []byte {
	var o []byte
	if s.opts.HasMSS {
		o = append(o, 2, 4, byte(s.opts.MSS>>8), byte(s.opts.MSS))
	}
	if s.opts.SACKPerm {
		o = append(o, 4, 2)
	}
	if s.opts.HasWScale {
		o = append(o, 1, 3, 3, s.opts.WScale)
	}
	if s.opts.NumSACK > 0 {
		o = append(o, 1, 1, 5, byte(2+8*int(s.opts.NumSACK)))
		for i := 0; i < int(s.opts.NumSACK); i++ {
			o = binary.BigEndian.AppendUint32(o, s.opts.SACK[i][0])
			o = binary.BigEndian.AppendUint32(o, s.opts.SACK[i][1])
		}
	}
	if s.hasOpts && len(o) == 0 {
		o = append(o, 1, 1, 1, 1)
	}
	return o
}

// build returns the packet bytes with valid IP and TCP checksums.
func (r rawTCP) build() []byte {
	opts := append([]byte(nil), r.opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	tcpLen := 20 + len(opts) + r.payloadLen
	seg := make([]byte, tcpLen)
	binary.BigEndian.PutUint16(seg[0:], r.src.Port())
	binary.BigEndian.PutUint16(seg[2:], r.dst.Port())
	binary.BigEndian.PutUint32(seg[4:], r.seq)
	binary.BigEndian.PutUint32(seg[8:], r.ack)
	seg[12] = byte((20+len(opts))/4) << 4
	seg[13] = byte(r.flags)
	binary.BigEndian.PutUint16(seg[14:], r.win)
	copy(seg[20:], opts)
	for i := 20 + len(opts); i < tcpLen; i++ {
		seg[i] = byte('a' + i%26)
	}
	var src, dst [16]byte
	var b []byte
	if r.src.Addr().Is4() {
		s4, d4 := r.src.Addr().As4(), r.dst.Addr().As4()
		copy(src[:], s4[:])
		copy(dst[:], d4[:])
		b = make([]byte, 20, 20+tcpLen)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(20+tcpLen))
		b[6] = 0x40 // DF
		b[8] = 64
		b[9] = byte(packet.TCP)
		copy(b[12:16], s4[:])
		copy(b[16:20], d4[:])
		packet.SetIPv4Checksum(b)
		ph := packet.PseudoHeaderSum(4, &src, &dst, packet.TCP, tcpLen)
		cs := ^packet.Checksum(seg, ph)
		binary.BigEndian.PutUint16(seg[16:], cs)
	} else {
		src, dst = r.src.Addr().As16(), r.dst.Addr().As16()
		b = make([]byte, 40, 40+tcpLen)
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(tcpLen))
		b[6] = byte(packet.TCP)
		b[7] = 64
		copy(b[8:24], src[:])
		copy(b[24:40], dst[:])
		ph := packet.PseudoHeaderSum(6, &src, &dst, packet.TCP, tcpLen)
		cs := ^packet.Checksum(seg, ph)
		binary.BigEndian.PutUint16(seg[16:], cs)
	}
	return append(b, seg...)
}

// expectStep is one line of a scenario: a packet and what must happen.
type expectStep struct {
	name  string
	from  tcpEnd
	seg   tcpSeg
	v     verdict
	state TCPState // state after the packet (checked when the entry exists)
	// Optional checks.
	reason   Reason
	detail   tcpDetail // checked when not tcpDetailNone
	gone     bool      // entry must not exist afterwards
	recreate bool      // an old entry must have been replaced
	status   Status
	advance  time.Duration // advance the clock before sending
}

// runSteps replays steps on sim and checks each outcome.
func runSteps(t *testing.T, sim *tcpSim, steps []expectStep) {
	t.Helper()
	for i, x := range steps {
		sim.advance(x.advance)
		got := sim.send(x.from, x.seg)
		where := fmt.Sprintf("step %d (%s: %s %v)", i+1, x.name, x.from, x.seg)
		if got.v != x.v {
			t.Fatalf("%s: verdict %v (%v, detail %q, reason %q), want %v", where, got.v, got.out.action, got.out.detail, got.reason, x.v)
		}
		if x.reason != ReasonNone && got.reason != x.reason {
			t.Fatalf("%s: reason %q, want %q", where, got.reason, x.reason)
		}
		if x.detail != tcpDetailNone && got.out.detail != x.detail {
			t.Fatalf("%s: detail %q, want %q", where, got.out.detail, x.detail)
		}
		if x.gone {
			if got.exists {
				t.Fatalf("%s: entry still exists (state %v)", where, got.state)
			}
			continue
		}
		if !got.exists && x.v != vInvalid {
			t.Fatalf("%s: no entry", where)
		}
		if got.exists && got.state != x.state {
			t.Fatalf("%s: state %v, want %v (detail %q)", where, got.state, x.state, got.out.detail)
		}
		if x.recreate && !got.recreate {
			t.Fatalf("%s: entry not re-created", where)
		}
		if x.status != 0 && sim.status&x.status != x.status {
			t.Fatalf("%s: status %v, want %v set", where, sim.status, x.status)
		}
	}
}

// ---- Plausible random segments (fuzzing and the kernel comparison). ----

// byteSource yields pseudo-random bytes: from fuzz input, or from a PRNG.
type byteSource interface{ byte() byte }

// fuzzBytes reads a fuzz input; past its end it yields zeros.
type fuzzBytes struct {
	b []byte
	i int
}

func (f *fuzzBytes) byte() byte {
	if f.i >= len(f.b) {
		f.i++
		return 0
	}
	f.i++
	return f.b[f.i-1]
}

func (f *fuzzBytes) done() bool { return f.i >= len(f.b) }

func u16(s byteSource) uint16 { return uint16(s.byte())<<8 | uint16(s.byte()) }
func u32(s byteSource) uint32 { return uint32(u16(s))<<16 | uint32(u16(s)) }

// genFlags are the flag combinations the generator picks from: mostly
// valid ones, a few that the pre-check rejects.
var genFlags = []packet.TCPFlags{
	fS, fS | fA, fA, fA | fP, fA, fA | fP, fF | fA, fR, fR | fA, fS, fA, fF | fA | fP,
	fS | fU, fA | fU, fS | packet.ECE | packet.CWR, 0, fF, fS | fF, fR | fF,
}

// near returns a sequence number close to base (or anywhere), so that
// generated segments hit window edges often.
func near(s byteSource, base uint32) uint32 {
	switch s.byte() % 8 {
	case 0:
		return base
	case 1:
		return base - 1
	case 2:
		return base + 1
	case 3:
		return base + uint32(s.byte())*8
	case 4:
		return base - uint32(s.byte())*8
	case 5:
		return base + uint32(u16(s))
	case 6:
		return base - uint32(u16(s))*2
	}
	return u32(s)
}

// genSeg returns a plausible next segment from endpoint from, given the
// simulated entry (its window data steers the numbers towards the edges).
func genSeg(s byteSource, sim *tcpSim, from tcpEnd) tcpSeg {
	var seg tcpSeg
	seg.flags = genFlags[int(s.byte())%len(genFlags)]
	var sendEnd, recvEnd, recvMaxEnd uint32
	if sim.exists {
		d := sim.dirOf(from)
		sendEnd = sim.conn.dir[d].end
		recvEnd = sim.conn.dir[d^1].end
		recvMaxEnd = sim.conn.dir[d].maxend
		if sim.conn.lastEnd != 0 && s.byte()%4 == 0 {
			recvEnd = sim.conn.lastEnd // answer the last ignored packet
		}
	} else {
		sendEnd, recvEnd, recvMaxEnd = u32(s), u32(s), 0
	}
	if s.byte()%8 == 0 && recvMaxEnd != 0 {
		seg.seq = near(s, recvMaxEnd) // the upper edge of the window
	} else {
		seg.seq = near(s, sendEnd)
	}
	if seg.flags&packet.ACK != 0 || s.byte()%4 == 0 {
		seg.ack = near(s, recvEnd)
	}
	switch s.byte() % 6 {
	case 0:
		seg.win = 0
	case 1:
		seg.win = 1
	case 2:
		seg.win = 257
	case 3:
		seg.win = 65535
	default:
		seg.win = u16(s)
	}
	switch s.byte() % 8 {
	case 0:
		seg.dataLen = 1
	case 1:
		seg.dataLen = 100
	case 2:
		seg.dataLen = 1460
	case 3:
		seg.dataLen = uint32(u16(s)) % 2000
	default:
		seg.dataLen = 0
	}
	o := s.byte()
	if o&1 != 0 {
		seg = seg.wscale(s.byte() % 16)
	}
	if o&2 != 0 {
		seg = seg.sackPerm()
	}
	if o&4 != 0 {
		l := near(s, recvEnd)
		seg = seg.sackBlock(l, l+uint32(s.byte())*16)
	}
	if o&8 != 0 {
		seg = seg.mss()
	}
	return seg
}

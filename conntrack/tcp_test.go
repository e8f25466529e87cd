package conntrack

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tunrouter/router/packet"
)

func TestTCPIndexOf(t *testing.T) {
	tests := []struct {
		flags packet.TCPFlags
		want  tcpIndex
	}{
		{fS, tcpSynSet},
		{fS | fU, tcpSynSet},
		{fS | fA, tcpSynAckSet},
		{fS | fA | fP, tcpSynAckSet},
		{fF | fA, tcpFinSet},
		{fF, tcpFinSet},
		{fA, tcpAckSet},
		{fA | fP | fU, tcpAckSet},
		{fR, tcpRstSet},
		{fR | fA, tcpRstSet},
		{fR | fS | fF | fA, tcpRstSet}, // RST wins over everything
		{fS | fF, tcpSynSet},           // SYN wins over FIN
		{fS | fF | fA, tcpSynAckSet},
		{0, tcpNoneSet},
		{fP, tcpNoneSet},
		{fU, tcpNoneSet},
	}
	for _, tt := range tests {
		t.Run(tt.flags.String(), func(t *testing.T) {
			if got := tcpIndexOf(tt.flags); got != tt.want {
				t.Errorf("tcpIndexOf(%v) = %v, want %v", tt.flags, got, tt.want)
			}
		})
	}
}

func TestTCPCheckFlags(t *testing.T) {
	// The allowed core combinations of 2.3, written out; PSH, ECE and CWR
	// may be added to any of them.
	allowed := map[packet.TCPFlags]bool{
		fS: true, fS | fU: true, fS | fA: true, fR: true, fR | fA: true,
		fF | fA: true, fF | fA | fU: true, fA: true, fA | fU: true,
	}
	const free = packet.PSH | packet.ECE | packet.CWR
	nAllowed := 0
	for f := 0; f < 256; f++ {
		flags := packet.TCPFlags(f)
		want := ReasonTCPFlags
		if allowed[flags&^free] {
			want = ReasonNone
			nAllowed++
		}
		if got := tcpCheckFlags(flags); got != want {
			t.Errorf("tcpCheckFlags(%v) = %q, want %q", flags, got, want)
		}
	}
	if nAllowed != 9*8 {
		t.Errorf("%d allowed combinations, want 72", nAllowed)
	}
	// Named cases from the reference.
	for _, tt := range []struct {
		name  string
		flags packet.TCPFlags
		ok    bool
	}{
		{"null scan", 0, false},
		{"lone PSH", fP, false},
		{"FIN without ACK", fF, false},
		{"SYN+FIN", fS | fF, false},
		{"SYN+RST", fS | fR, false},
		{"RST+FIN", fR | fF, false},
		{"RST+FIN+ACK", fR | fF | fA, false},
		{"SYN+ACK+URG", fS | fA | fU, false},
		{"xmas", fF | fS | fR | fP | fA | fU, false},
		{"FIN+PSH+URG (nmap xmas)", fF | fP | fU, false},
		{"SYN+ECE+CWR (ECN setup)", fS | packet.ECE | packet.CWR, true},
		{"SYN+ACK+ECE", fS | fA | packet.ECE, true},
		{"PSH+ACK", fP | fA, true},
		{"FIN+PSH+ACK", fF | fP | fA, true},
		{"RST+ACK+PSH", fR | fA | fP, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tcpCheckFlags(tt.flags) == ReasonNone
			if got != tt.ok {
				t.Errorf("tcpCheckFlags(%v) ok=%v, want %v", tt.flags, got, tt.ok)
			}
		})
	}
}

func TestTCPInit(t *testing.T) {
	cfg := testTCPConfig()
	noLoose := cfg
	noLoose.Loose = false
	tests := []struct {
		name string
		seg  tcpSeg
		cfg  *TCPConfig
		want Reason
		// expected original-direction data on success
		state                TCPState
		end, maxend, maxwin  uint32
		scale                uint8
		origFlags, replFlags tcpDirFlags
	}{
		{name: "syn", seg: tseg(fS, 1000, 0, 29200, 0), cfg: &cfg,
			end: 1001, maxend: 1001, maxwin: 29200},
		{name: "syn with options", seg: tseg(fS, 1000, 0, 29200, 0).wscale(7).sackPerm(), cfg: &cfg,
			end: 1001, maxend: 1001, maxwin: 29200, scale: 7, origFlags: tcpFlagWindowScale | tcpFlagSACKPerm},
		{name: "syn wscale capped at 14", seg: tseg(fS, 1000, 0, 100, 0).wscale(15), cfg: &cfg,
			end: 1001, maxend: 1001, maxwin: 100, scale: 14, origFlags: tcpFlagWindowScale},
		{name: "syn zero window", seg: tseg(fS, 1000, 0, 0, 0), cfg: &cfg,
			end: 1001, maxend: 1001, maxwin: 1},
		{name: "syn with data", seg: tseg(fS, 1000, 0, 500, 10), cfg: &cfg,
			end: 1011, maxend: 1011, maxwin: 500},
		{name: "syn+urg", seg: tseg(fS|fU, 0xffffffff, 0, 500, 0), cfg: &cfg,
			end: 0, maxend: 0, maxwin: 500},
		{name: "syn window never scaled", seg: tseg(fS, 1, 0, 65535, 0).wscale(14), cfg: &cfg,
			end: 2, maxend: 2, maxwin: 65535, scale: 14, origFlags: tcpFlagWindowScale},
		{name: "ack pickup", seg: tseg(fA, 5000, 9000, 1000, 100), cfg: &cfg,
			end: 5100, maxend: 6100, maxwin: 1000,
			origFlags: tcpFlagSACKPerm | tcpFlagBeLiberal, replFlags: tcpFlagSACKPerm | tcpFlagBeLiberal},
		{name: "ack pickup ignores wscale option", seg: tseg(fA|fP, 5000, 9000, 0, 0).wscale(7), cfg: &cfg,
			end: 5000, maxend: 5001, maxwin: 1,
			origFlags: tcpFlagSACKPerm | tcpFlagBeLiberal, replFlags: tcpFlagSACKPerm | tcpFlagBeLiberal},
		{name: "ack without loose", seg: tseg(fA, 5000, 9000, 1000, 0), cfg: &noLoose, want: ReasonTCPNoSYN},
		{name: "syn without loose", seg: tseg(fS, 1000, 0, 1000, 0), cfg: &noLoose,
			end: 1001, maxend: 1001, maxwin: 1000},
		{name: "syn/ack", seg: tseg(fS|fA, 1000, 1, 1000, 0), cfg: &cfg, want: ReasonTCPInvalidNew},
		{name: "fin", seg: tseg(fF|fA, 1000, 1, 1000, 0), cfg: &cfg, want: ReasonTCPInvalidNew},
		{name: "rst", seg: tseg(fR, 1000, 0, 0, 0), cfg: &cfg, want: ReasonTCPInvalidNew},
		{name: "rst+ack", seg: tseg(fR|fA, 1000, 1, 0, 0), cfg: &cfg, want: ReasonTCPInvalidNew},
		{name: "none", seg: tseg(0, 1000, 1, 0, 0), cfg: &cfg, want: ReasonTCPInvalidNew},
		{name: "fin without loose is invalid new", seg: tseg(fF|fA, 1000, 1, 1000, 0), cfg: &noLoose, want: ReasonTCPInvalidNew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tcpConn{state: TCPClose, retrans: 9, lastSeq: 77} // garbage that init must clear
			got := c.init(&tt.seg, tt.cfg)
			if got != tt.want {
				t.Fatalf("init = %q, want %q", got, tt.want)
			}
			if got != ReasonNone {
				return
			}
			o, r := c.dir[Original], c.dir[Reply]
			if o.end != tt.end || o.maxend != tt.maxend || o.maxwin != tt.maxwin || o.scale != tt.scale || o.flags != tt.origFlags {
				t.Errorf("original = %+v, want end=%d maxend=%d maxwin=%d scale=%d flags=%v",
					o, tt.end, tt.maxend, tt.maxwin, tt.scale, tt.origFlags)
			}
			if r != (tcpDirState{flags: tt.replFlags}) {
				t.Errorf("reply = %+v, want only flags %v", r, tt.replFlags)
			}
			if c.state != TCPNone || c.retrans != 0 || c.lastSeq != 0 || c.lastIndex != tcpNoneSet {
				t.Errorf("state %v retrans %d lastSeq %d lastIndex %v: not reset", c.state, c.retrans, c.lastSeq, c.lastIndex)
			}
		})
	}
}

// The transition tables of 2.5, transcribed from the reference (columns:
// NONE SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT
// CLOSE SYN_SENT2).
const tcpTableOriginal = `
SYN     SS SS IG IG IG IG IG SS SS S2
SYNACK  IV IV SR IV IV IV IV IV IV SR
FIN     IV IV FW FW LA LA LA TW CL IV
ACK     ES IV ES ES CW CW TW TW CL IV
RST     IV CL CL CL CL CL CL CL CL CL
NONE    IV IV IV IV IV IV IV IV IV IV
`

const tcpTableReply = `
SYN     IV S2 IV IV IV IV IV SS IV S2
SYNACK  IV SR IG IG IG IG IG IG IG SR
FIN     IV IV FW FW LA LA LA TW CL IV
ACK     IV IG SR ES CW CW TW TW CL IG
RST     IV CL CL CL CL CL CL CL CL CL
NONE    IV IV IV IV IV IV IV IV IV IV
`

var tcpCellNames = map[string]TCPState{
	"NO": TCPNone, "SS": TCPSynSent, "SR": TCPSynRecv, "ES": TCPEstablished,
	"FW": TCPFinWait, "CW": TCPCloseWait, "LA": TCPLastAck, "TW": TCPTimeWait,
	"CL": TCPClose, "S2": TCPSynSent2, "IV": tcpSIV, "IG": tcpSIG,
}

var tcpRowFlags = map[string]packet.TCPFlags{
	"SYN": fS, "SYNACK": fS | fA, "FIN": fF | fA, "ACK": fA, "RST": fR | fA, "NONE": 0,
}

// cellConn returns an entry in state st whose window data makes the probe
// packets of TestTCPTransitionTable in window in both directions: both
// sides sent everything the other acknowledged, windows are wide, and no
// special-case bookkeeping (last packet, simultaneous open) is pending.
// CLOSE_INIT is set so that a SYN on TIME_WAIT/CLOSE reopens (2.6-1).
func cellConn(st TCPState) tcpConn {
	c := tcpConn{state: st, lastIndex: tcpNoneSet}
	base := [2]uint32{1000, 2000000}
	for d := range c.dir {
		c.dir[d] = tcpDirState{
			end: base[d], maxend: base[d] + 1<<20, maxwin: 1 << 20, maxack: base[1-d],
			flags: tcpFlagMaxAckSet | tcpFlagCloseInit,
		}
	}
	return c
}

func TestTCPTransitionTable(t *testing.T) {
	cfg := testTCPConfig()
	cells := 0
	for _, tab := range []struct {
		dir  Dir
		text string
	}{{Original, tcpTableOriginal}, {Reply, tcpTableReply}} {
		for _, line := range strings.Split(strings.TrimSpace(tab.text), "\n") {
			f := strings.Fields(line)
			if len(f) != 1+int(numTCPStates) {
				t.Fatalf("bad table line %q", line)
			}
			flags := tcpRowFlags[f[0]]
			for col, cell := range f[1:] {
				old := TCPState(col)
				want, ok := tcpCellNames[cell]
				if !ok {
					t.Fatalf("bad cell %q", cell)
				}
				cells++
				t.Run(fmt.Sprintf("%v/%s/%v", tab.dir, f[0], old), func(t *testing.T) {
					c := cellConn(old)
					base := [2]uint32{c.dir[0].end, c.dir[1].end}
					seg := tseg(flags, base[tab.dir], base[tab.dir^1], 1000, 0)
					out := c.packet(&seg, tcpIn{dir: tab.dir, status: StatusSeenReply | StatusAssured, cfg: &cfg})
					switch {
					case want == tcpSIV:
						if out.action != tcpInvalid || out.reason != ReasonTCPState {
							t.Fatalf("got %v %q, want invalid %q", out.action, out.reason, ReasonTCPState)
						}
						if c.state != old {
							t.Fatalf("state changed to %v on an invalid packet", c.state)
						}
					case want == tcpSIG:
						if out.action != tcpIgnore || out.refresh {
							t.Fatalf("got %v refresh=%v (detail %q), want ignore without refresh", out.action, out.refresh, out.detail)
						}
						if c.state != old {
							t.Fatalf("state changed to %v on an ignored packet", c.state)
						}
					case want == TCPSynSent && old >= TCPTimeWait:
						// 2.6-1: the old entry goes, the SYN starts a new one.
						if out.action != tcpRecreate {
							t.Fatalf("got %v (detail %q), want recreate", out.action, out.detail)
						}
					default:
						if out.action != tcpAccept {
							t.Fatalf("got %v (detail %q, reason %q), want accept", out.action, out.detail, out.reason)
						}
						if c.state != want || out.new != want || out.old != old {
							t.Fatalf("state %v (out %v->%v), want %v->%v", c.state, out.old, out.new, old, want)
						}
					}
				})
			}
		}
	}
	if cells != 120 {
		t.Errorf("%d cells tested, want 120", cells)
	}
}

func TestTCPSegOf(t *testing.T) {
	c4 := netip.MustParseAddrPort("10.0.0.2:40000")
	s4 := netip.MustParseAddrPort("10.0.1.2:80")
	c6 := netip.MustParseAddrPort("[2001:db8::2]:40000")
	s6 := netip.MustParseAddrPort("[2001:db8:1::2]:80")
	withOpts := tseg(fS, 0, 0, 0, 0).wscale(7).sackPerm().mss()
	sacks := tseg(fA, 0, 0, 0, 0).sackBlock(100, 200).sackBlock(300, 400)
	tests := []struct {
		name     string
		raw      rawTCP
		hasOpts  bool
		dataLen  uint32
		wscale   int // -1: none
		sackPerm bool
		nsack    int
	}{
		{"v4 syn options", rawTCP{src: c4, dst: s4, seq: 1, flags: fS, win: 29200, opts: tcpOptBytes(&withOpts)}, true, 0, 7, true, 0},
		{"v4 data no options", rawTCP{src: c4, dst: s4, seq: 0xfffffff0, ack: 7, flags: fA | fP, win: 500, payloadLen: 1000}, false, 1000, -1, false, 0},
		{"v6 sack blocks and data", rawTCP{src: s6, dst: c6, seq: 5, ack: 6, flags: fA, win: 1, opts: tcpOptBytes(&sacks), payloadLen: 3}, true, 3, -1, false, 2},
		{"v6 nop-only options", rawTCP{src: c6, dst: s6, seq: 5, ack: 6, flags: fA, win: 1, opts: []byte{1, 1, 1, 1}}, true, 0, -1, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet.Parsed
			p.Decode(tt.raw.build())
			if p.Err != packet.ErrNone {
				t.Fatalf("decode: %v", p.Err)
			}
			if !p.L4ChecksumValid() {
				t.Fatalf("builder produced a bad checksum")
			}
			s := segOf(&p)
			if s.seq != tt.raw.seq || s.ack != tt.raw.ack || s.win != tt.raw.win || s.flags != tt.raw.flags {
				t.Errorf("seg = %v, want seq=%d ack=%d win=%d flags=%v", s, tt.raw.seq, tt.raw.ack, tt.raw.win, tt.raw.flags)
			}
			if s.hasOpts != tt.hasOpts || s.dataLen != tt.dataLen {
				t.Errorf("hasOpts=%v dataLen=%d, want %v %d", s.hasOpts, s.dataLen, tt.hasOpts, tt.dataLen)
			}
			if (tt.wscale >= 0) != s.opts.HasWScale || (tt.wscale >= 0 && int(s.opts.WScale) != tt.wscale) {
				t.Errorf("wscale %v/%d, want %d", s.opts.HasWScale, s.opts.WScale, tt.wscale)
			}
			if s.opts.SACKPerm != tt.sackPerm || int(s.opts.NumSACK) != tt.nsack {
				t.Errorf("sackPerm=%v nsack=%d, want %v %d", s.opts.SACKPerm, s.opts.NumSACK, tt.sackPerm, tt.nsack)
			}
		})
	}
}

func TestTCPSeqCompare(t *testing.T) {
	tests := []struct {
		a, b          uint32
		before, after bool
	}{
		{1, 2, true, false},
		{2, 1, false, true},
		{5, 5, false, false},
		{0xffffffff, 0, true, false}, // wraps
		{0, 0xffffffff, false, true},
		{0x7fffffff, 0, false, true},
		{0x80000001, 0, true, false},
	}
	for _, tt := range tests {
		if got := seqBefore(tt.a, tt.b); got != tt.before {
			t.Errorf("seqBefore(%#x, %#x) = %v", tt.a, tt.b, got)
		}
		if got := seqAfter(tt.a, tt.b); got != tt.after {
			t.Errorf("seqAfter(%#x, %#x) = %v", tt.a, tt.b, got)
		}
	}
}

func TestTCPConnSize(t *testing.T) {
	if n := unsafe.Sizeof(tcpConn{}); n > 64 {
		t.Errorf("tcpConn is %d bytes, want <= 64", n)
	}
}

func TestTCPCanEarlyDrop(t *testing.T) {
	want := map[TCPState]bool{TCPFinWait: true, TCPCloseWait: true, TCPLastAck: true, TCPTimeWait: true, TCPClose: true}
	for s := TCPNone; s < numTCPStates; s++ {
		if got := tcpCanEarlyDrop(s); got != want[s] {
			t.Errorf("tcpCanEarlyDrop(%v) = %v, want %v", s, got, want[s])
		}
	}
}

func TestTCPDirInfo(t *testing.T) {
	sim := newTCPSim()
	runSteps(t, sim, []expectStep{
		{name: "syn", from: epClient, seg: tseg(fS, 100, 0, 1000, 0).wscale(2).sackPerm(), v: vAccept, state: TCPSynSent},
		{name: "syn/ack", from: epServer, seg: tseg(fS|fA, 900, 101, 2000, 0).wscale(3), v: vAccept, state: TCPSynRecv},
	})
	o := sim.conn.dirInfo(Original)
	want := TCPDirInfo{End: 101, MaxEnd: 101 + 2000, MaxWin: 1000, MaxAck: 0, Scale: 2,
		Flags: 0x03, FlagNames: "window-scale,sack-perm"}
	if o != want {
		t.Errorf("original = %+v, want %+v", o, want)
	}
	r := sim.conn.dirInfo(Reply)
	want = TCPDirInfo{End: 901, MaxEnd: 901, MaxWin: 2000, MaxAck: 101, Scale: 3,
		Flags: 0x21, FlagNames: "window-scale,maxack-set"}
	if r != want {
		t.Errorf("reply = %+v, want %+v", r, want)
	}
	if s := tcpDirFlags(0xff).String(); s != "window-scale,sack-perm,close-init,be-liberal,data-unack,maxack-set,challenge-ack,simultaneous-open" {
		t.Errorf("all flags = %q", s)
	}
}

func TestTCPStringers(t *testing.T) {
	for a := tcpAction(0); a <= tcpAcceptDelete+1; a++ {
		if a.String() == "" {
			t.Errorf("action %d has no name", a)
		}
	}
	seen := map[string]tcpDetail{}
	for d := tcpDetail(1); d < numTCPDetails; d++ {
		s := d.String()
		if s == "" {
			t.Errorf("detail %d has no text", d)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("details %d and %d share the text %q", o, d, s)
		}
		seen[s] = d
	}
	if numTCPDetails.String() != "tcpDetail(?)" || numTCPIndex.String() != "tcpIndex(?)" {
		t.Errorf("out-of-range stringers")
	}
}

// TestTCPPacketBadEntry: a corrupted entry (state or direction out of
// range) must give INVALID, not an index panic.
func TestTCPPacketBadEntry(t *testing.T) {
	cfg := testTCPConfig()
	seg := tseg(fA, 1, 1, 1, 0)
	c := tcpConn{state: numTCPStates + 3}
	if out := c.packet(&seg, tcpIn{dir: Original, cfg: &cfg}); out.action != tcpInvalid {
		t.Errorf("bad state: %v", out.action)
	}
	c = cellConn(TCPEstablished)
	if out := c.packet(&seg, tcpIn{dir: 7, cfg: &cfg}); out.action != tcpInvalid {
		t.Errorf("bad dir: %v", out.action)
	}
}

// handshake returns a sim after SYN, SYN/ACK and ACK with the given ISNs
// and windows, no options.
func handshake(t *testing.T, ci, si uint32, win uint16) *tcpSim {
	t.Helper()
	sim := newTCPSim()
	runSteps(t, sim, []expectStep{
		{name: "syn", from: epClient, seg: tseg(fS, ci, 0, win, 0), v: vAccept, state: TCPSynSent},
		{name: "syn/ack", from: epServer, seg: tseg(fS|fA, si, ci+1, win, 0), v: vAccept, state: TCPSynRecv},
		{name: "ack", from: epClient, seg: tseg(fA, ci+1, si+1, win, 0), v: vAccept, state: TCPEstablished, status: StatusAssured | StatusSeenReply},
	})
	return sim
}

func TestTCPHandshakeStatus(t *testing.T) {
	sim := newTCPSim()
	st := sim.send(epClient, tseg(fS, 1000, 0, 64000, 0))
	if !st.created || st.info != New || st.out.timeout != 120*time.Second || !st.out.refresh {
		t.Fatalf("syn: %+v", st)
	}
	st = sim.send(epServer, tseg(fS|fA, 5000, 1001, 64000, 0))
	if st.info != EstablishedReply || st.out.assured || sim.status&StatusSeenReply == 0 {
		t.Fatalf("syn/ack: info %v assured %v status %v", st.info, st.out.assured, sim.status)
	}
	if st.out.timeout != 60*time.Second {
		t.Errorf("syn/ack timeout %v, want SYN_RECV's 60s", st.out.timeout)
	}
	st = sim.send(epClient, tseg(fA, 1001, 5001, 64000, 0))
	if st.info != Established || !st.out.assured || st.state != TCPEstablished {
		t.Fatalf("ack: info %v assured %v state %v", st.info, st.out.assured, st.state)
	}
	if st.out.timeout != 432000*time.Second {
		t.Errorf("established timeout %v", st.out.timeout)
	}
	// The hand-computed window data after the handshake (2.7).
	want := [2]tcpDirState{
		{end: 1001, maxend: 65001, maxwin: 64000, maxack: 5001, flags: tcpFlagMaxAckSet},
		{end: 5001, maxend: 69001, maxwin: 64000, maxack: 1001, flags: tcpFlagMaxAckSet},
	}
	if sim.conn.dir != want {
		t.Errorf("window data\n got %+v\nwant %+v", sim.conn.dir, want)
	}
}

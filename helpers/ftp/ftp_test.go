package ftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

const sec = int64(time.Second)

// tcpPacket builds an IPv4 or IPv6 TCP packet with correct lengths and
// checksums.
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags packet.TCPFlags, payload []byte) []byte {
	var b []byte
	tcpLen := 20 + len(payload)
	if src.Addr().Is4() {
		b = make([]byte, 20+tcpLen)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[8] = 64
		b[9] = byte(packet.TCP)
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		packet.SetIPv4Checksum(b)
	} else {
		b = make([]byte, 40+tcpLen)
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(tcpLen))
		b[6] = byte(packet.TCP)
		b[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
	}
	t := b[len(b)-tcpLen:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = byte(flags)
	binary.BigEndian.PutUint16(t[14:], 65535)
	copy(t[20:], payload)
	var p packet.Parsed
	p.Decode(b)
	p.SetL4Checksum()
	return b
}

func decode(t testing.TB, b []byte) *packet.Parsed {
	t.Helper()
	p := new(packet.Parsed)
	p.Decode(b)
	if p.Err != packet.ErrNone || !p.L4ChecksumValid() {
		t.Fatalf("test packet does not decode: %v", p.Err)
	}
	return p
}

// session is one FTP control connection driven through the helper the way
// the connection table would: same HelperContext fields, same State slot.
type session struct {
	t      testing.TB
	h      *Helper
	e      *conntrack.Expectations
	id     conntrack.ConnID
	tuple  [2]packet.FlowKey
	ep     [2]netip.AddrPort // sender of each direction
	seq    [2]uint32
	state  any
	now    int64
	events []Event
}

func newSession(t testing.TB, cfg Config, client, server string) *session {
	s := &session{t: t, e: conntrack.NewExpectations(0), id: 42, now: 1000 * sec}
	cfg.Log = func(ev Event) { s.events = append(s.events, ev) }
	s.h = New(cfg)
	s.ep[conntrack.Original] = netip.MustParseAddrPort(client)
	s.ep[conntrack.Reply] = netip.MustParseAddrPort(server)
	s.tuple[conntrack.Original] = packet.KeyFromAddrs(packet.TCP, s.ep[0], s.ep[1])
	s.tuple[conntrack.Reply] = s.tuple[conntrack.Original].Reverse()
	s.seq = [2]uint32{1000, 50000}
	return s
}

// handshake feeds SYN, SYN/ACK and ACK: the helper must ignore them.
func (s *session) handshake() {
	s.t.Helper()
	for _, st := range []struct {
		dir   conntrack.Dir
		info  conntrack.CtInfo
		flags packet.TCPFlags
	}{
		{conntrack.Original, conntrack.New, packet.SYN},
		{conntrack.Reply, conntrack.EstablishedReply, packet.SYN | packet.ACK},
		{conntrack.Original, conntrack.Established, packet.ACK},
	} {
		r := s.help(st.dir, st.info, s.seq[st.dir]-1, st.flags, nil)
		if r.Drop {
			s.t.Fatalf("handshake packet dropped: %s", r.Why)
		}
	}
}

func (s *session) help(dir conntrack.Dir, info conntrack.CtInfo, seq uint32, flags packet.TCPFlags, payload []byte) conntrack.HelperResult {
	s.t.Helper()
	b := tcpPacket(s.ep[dir], s.ep[1-dir], seq, s.seq[1-dir], flags, payload)
	c := conntrack.HelperContext{
		Packet: decode(s.t, b), Info: info, Now: s.now, ConnID: s.id,
		Tuple: s.tuple, State: &s.state, Expect: s.e,
	}
	return s.h.Help(&c)
}

// send sends a data segment in order in dir and advances that direction's
// sequence number unless the helper dropped it.
func (s *session) send(dir conntrack.Dir, line string) conntrack.HelperResult {
	s.t.Helper()
	r := s.sendAt(dir, s.seq[dir], line)
	if !r.Drop {
		s.seq[dir] += uint32(len(line))
	}
	return r
}

// sendAt sends a segment with an explicit sequence number
// (retransmissions, out-of-order segments).
func (s *session) sendAt(dir conntrack.Dir, seq uint32, line string) conntrack.HelperResult {
	s.t.Helper()
	info := conntrack.Established
	if dir == conntrack.Reply {
		info = conntrack.EstablishedReply
	}
	return s.help(dir, info, seq, packet.ACK|packet.PSH, []byte(line))
}

func (s *session) mustAccept(dir conntrack.Dir, line string) {
	s.t.Helper()
	if r := s.send(dir, line); r.Drop {
		s.t.Fatalf("%q dropped: %s", line, r.Why)
	}
}

// login runs the usual start of a session: banner and USER (each the first
// segment of its direction, never parsed), then PASS and its reply.
func (s *session) login() {
	s.t.Helper()
	s.handshake()
	s.mustAccept(conntrack.Reply, "220 FTP server ready\r\n")
	s.mustAccept(conntrack.Original, "USER anonymous\r\n")
	s.mustAccept(conntrack.Reply, "331 Guest login ok\r\n")
	s.mustAccept(conntrack.Original, "PASS guest@\r\n")
	s.mustAccept(conntrack.Reply, "230 Logged in\r\n")
}

func (s *session) expectations() []conntrack.Expectation {
	var xs []conntrack.Expectation
	s.e.List(func(x conntrack.Expectation) bool { xs = append(xs, x); return true })
	return xs
}

// only returns the single pending expectation.
func (s *session) only() conntrack.Expectation {
	s.t.Helper()
	xs := s.expectations()
	if len(xs) != 1 {
		s.t.Fatalf("%d expectations, want 1: %+v", len(xs), xs)
	}
	return xs[0]
}

// dataSYN returns the key of the first packet of a data connection.
func dataSYN(t testing.TB, src, dst string) packet.FlowKey {
	b := tcpPacket(netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), 7, 0, packet.SYN, nil)
	return decode(t, b).Key
}

const (
	o = conntrack.Original
	r = conntrack.Reply
)

func TestActivePORT(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	if n := s.e.Len(); n != 0 {
		t.Fatalf("%d expectations after login", n)
	}
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	x := s.only()
	want := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("198.51.100.7:0"), netip.MustParseAddrPort("10.0.0.5:1025"))
	if x.Tuple != want || !x.SrcPortWild || x.SrcAddrWild || x.Master != s.id || x.Helper != "ftp" ||
		x.MasterTuple != s.tuple[o] || x.Created != s.now || x.Expires != s.now+300*sec {
		t.Fatalf("expectation %+v, want tuple %v", x, want)
	}
	// The server's data connection (from port 20) is expected exactly once.
	k := dataSYN(t, "198.51.100.7:20", "10.0.0.5:1025")
	if _, ok := s.e.Take(k, s.now+sec); !ok {
		t.Fatal("data connection not expected")
	}
	if _, ok := s.e.Take(k, s.now+sec); ok {
		t.Fatal("expectation served twice")
	}
	st := s.h.Stats()
	if st.Seen[KindPORT] != 1 || st.Expected != 1 || st.GateSkipped != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPassive227(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	s.mustAccept(o, "PASV\r\n")
	if s.e.Len() != 0 {
		t.Fatal("PASV itself announced something")
	}
	s.mustAccept(r, "227 Entering Passive Mode (198,51,100,7,19,137).\r\n")
	x := s.only()
	want := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("10.0.0.5:0"), netip.MustParseAddrPort("198.51.100.7:5001"))
	if x.Tuple != want || !x.SrcPortWild {
		t.Fatalf("expectation %v, want %v", x.Tuple, want)
	}
	if _, ok := s.e.Take(dataSYN(t, "10.0.0.5:40001", "198.51.100.7:5001"), s.now); !ok {
		t.Fatal("passive data connection not expected")
	}
	if s.h.Stats().Seen[KindPASV] != 1 {
		t.Fatalf("stats %+v", s.h.Stats())
	}
}

func TestIPv6EPRTAndEPSV(t *testing.T) {
	s := newSession(t, Config{}, "[2001:db8::5]:40000", "[2001:db8:1::7]:21")
	s.login()
	s.mustAccept(o, "EPRT |2|2001:db8::5|2000|\r\n")
	x := s.only()
	want := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("[2001:db8:1::7]:0"), netip.MustParseAddrPort("[2001:db8::5]:2000"))
	if x.Tuple != want {
		t.Fatalf("EPRT expectation %v, want %v", x.Tuple, want)
	}
	s.mustAccept(r, "200 EPRT ok\r\n")
	s.mustAccept(o, "EPSV\r\n")
	s.mustAccept(r, "229 Entering Extended Passive Mode (|||6446|)\r\n")
	// One per master: the 229 replaced the EPRT expectation.
	x = s.only()
	want = packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("[2001:db8::5]:0"), netip.MustParseAddrPort("[2001:db8:1::7]:6446"))
	if x.Tuple != want {
		t.Fatalf("EPSV expectation %v, want %v", x.Tuple, want)
	}
	if _, ok := s.e.Take(dataSYN(t, "[2001:db8::5]:40002", "[2001:db8:1::7]:6446"), s.now); !ok {
		t.Fatal("EPSV data connection not expected")
	}
	st := s.h.Stats()
	if st.Seen[KindEPRT] != 1 || st.Seen[KindEPSV] != 1 || st.Expected != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestEPRTv4OverIPv4(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	s.mustAccept(o, "EPRT |1|10.0.0.5|6275|\r\n")
	if x := s.only(); x.Tuple.DstPort != 6275 || x.Tuple.DstAddr() != netip.MustParseAddr("10.0.0.5") {
		t.Fatalf("expectation %v", x.Tuple)
	}
}

func TestDrops(t *testing.T) {
	tests := []struct {
		name           string
		client, server string
		dir            conntrack.Dir
		line           string
		why            string
		kind           Kind
	}{
		{"EPRT v4 on v6", "[2001:db8::5]:40000", "[2001:db8:1::7]:21", o, "EPRT |1|10.0.0.5|2000|\r\n", WhyPartialEPRT, KindEPRT},
		{"EPRT v6 on v4", "10.0.0.5:40000", "198.51.100.7:21", o, "EPRT |2|::1|2000|\r\n", WhyPartialEPRT, KindEPRT},
		{"EPRT port 0", "10.0.0.5:40000", "198.51.100.7:21", o, "EPRT |1|10.0.0.5|0|\r\n", WhyPartialEPRT, KindEPRT},
		{"PORT five numbers", "10.0.0.5:40000", "198.51.100.7:21", o, "PORT 10,0,0,5,4\r\n", WhyPartialPORT, KindPORT},
		{"PORT without CR", "10.0.0.5:40000", "198.51.100.7:21", o, "PORT 10,0,0,5,4,1\n", WhyPartialPORT, KindPORT},
		{"PORT prefix only", "10.0.0.5:40000", "198.51.100.7:21", o, "PO", WhyPartialPORT, KindPORT},
		{"229 without paren", "10.0.0.5:40000", "198.51.100.7:21", r, "229 Entering Extended Passive Mode |||6446|\r\n", WhyPartial229, KindEPSV},
		{"229 without delimiter", "10.0.0.5:40000", "198.51.100.7:21", r, "229 (|||6446)\r\n", WhyPartial229, KindEPSV},
		{"229 port 65536", "10.0.0.5:40000", "198.51.100.7:21", r, "229 (|||65536|)\r\n", WhyPartial229, KindEPSV},
		{"227 early digit", "10.0.0.5:40000", "198.51.100.7:21", r, "227 Mode 2 (198,51,100,7,4,1)\r\n", WhyPartial227, KindPASV},
		{"227 prefix", "10.0.0.5:40000", "198.51.100.7:21", r, "22", WhyPartial227, KindPASV},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSession(t, Config{}, tt.client, tt.server)
			s.login()
			res := s.send(tt.dir, tt.line)
			if !res.Drop || res.Why != tt.why {
				t.Fatalf("result %+v, want drop %q", res, tt.why)
			}
			if s.e.Len() != 0 {
				t.Fatal("expectation from a dropped command")
			}
			if st := s.h.Stats(); st.Partial[tt.kind] != 1 {
				t.Fatalf("stats %+v", st)
			}
			if len(s.events) != 1 || s.events[0].Reason != tt.why || s.events[0].Conn != s.id || s.events[0].Dir != tt.dir {
				t.Fatalf("events %+v", s.events)
			}
		})
	}
}

func TestBounce(t *testing.T) {
	t.Run("strict", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		s.mustAccept(o, "PORT 192,0,2,99,4,1\r\n") // a third host
		if s.e.Len() != 0 {
			t.Fatalf("bounce created %+v", s.expectations())
		}
		st := s.h.Stats()
		if st.Bounce != 1 || st.Expected != 0 || st.Seen[KindPORT] != 1 {
			t.Fatalf("stats %+v", st)
		}
		if len(s.events) != 1 || s.events[0].Reason != WhyBounce || s.events[0].Cmd.Addr != netip.MustParseAddr("192.0.2.99") {
			t.Fatalf("events %+v", s.events)
		}
		// 227 naming another host than the server is refused alike.
		s.mustAccept(r, "227 Entering Passive Mode (192,0,2,99,4,1)\r\n")
		if s.e.Len() != 0 || s.h.Stats().Bounce != 2 {
			t.Fatal("227 bounce not refused")
		}
	})
	t.Run("loose", func(t *testing.T) {
		s := newSession(t, Config{Loose: true}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		s.mustAccept(o, "PORT 192,0,2,99,4,1\r\n")
		want := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("198.51.100.7:0"), netip.MustParseAddrPort("192.0.2.99:1025"))
		if x := s.only(); x.Tuple != want {
			t.Fatalf("loose expectation %v, want %v", x.Tuple, want)
		}
		if st := s.h.Stats(); st.Bounce != 1 || st.Expected != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestPORTOverIPv6 follows the kernel: PORT and 227 overwrite only the
// first 4 bytes of the IPv6 address, so the address check fails unless
// those 4 bytes happen to be the sender's.
func TestPORTOverIPv6(t *testing.T) {
	s := newSession(t, Config{}, "[2001:db8::5]:40000", "[2001:db8:1::7]:21")
	s.login()
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	s.mustAccept(r, "227 Entering Passive Mode (10,0,0,7,4,1)\r\n")
	if s.e.Len() != 0 || s.h.Stats().Bounce != 2 {
		t.Fatalf("PORT/227 over IPv6 announced %+v", s.expectations())
	}
	// 32.1.13.184 is 2001:0db8, the first 4 bytes of the client's address.
	s.mustAccept(o, "PORT 32,1,13,184,4,1\r\n")
	want := packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("[2001:db8:1::7]:0"), netip.MustParseAddrPort("[2001:db8::5]:1025"))
	if x := s.only(); x.Tuple != want {
		t.Fatalf("expectation %v, want %v", x.Tuple, want)
	}
}

func TestSecondPORTReplacesFirst(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	s.mustAccept(r, "200 PORT command successful\r\n")
	s.mustAccept(o, "PORT 10,0,0,5,4,2\r\n")
	if x := s.only(); x.Tuple.DstPort != 1026 {
		t.Fatalf("expectation for port %d, want 1026", x.Tuple.DstPort)
	}
	if _, ok := s.e.Take(dataSYN(t, "198.51.100.7:20", "10.0.0.5:1025"), s.now); ok {
		t.Fatal("the first PORT's expectation survived")
	}
	if st := s.e.Stats(); st.Evicted != 1 {
		t.Fatalf("table stats %+v", st)
	}
}

func TestRetransmittedPORT(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	seq := s.seq[o]
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	s.now += sec
	if res := s.sendAt(o, seq, "PORT 10,0,0,5,4,1\r\n"); res.Drop {
		t.Fatalf("retransmission dropped: %s", res.Why)
	}
	x := s.only()
	if x.Created != s.now {
		t.Fatalf("retransmission did not renew the expectation: created %d, now %d", x.Created, s.now)
	}
	if st := s.e.Stats(); st.Replaced != 1 || st.Created != 2 {
		t.Fatalf("table stats %+v", st)
	}
	if s.h.Stats().Seen[KindPORT] != 2 {
		t.Fatal("retransmission not parsed")
	}
}

func TestSplitCommand(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	seq := s.seq[o]
	if res := s.sendAt(o, seq, "PORT 10,0,0,5,"); !res.Drop || res.Why != WhyPartialPORT {
		t.Fatalf("first half: %+v", res)
	}
	// Had the first half passed, the second would start mid-line: not
	// parsed, so it announces nothing (and is not dropped).
	if res := s.sendAt(o, seq+14, "4,1\r\n"); res.Drop {
		t.Fatalf("second half dropped: %s", res.Why)
	}
	if s.e.Len() != 0 {
		t.Fatal("split command announced something")
	}
	// The sender retransmits the whole line at the original seq.
	if res := s.sendAt(o, seq, "PORT 10,0,0,5,4,1\r\n"); res.Drop {
		t.Fatalf("retransmitted line dropped: %s", res.Why)
	}
	if x := s.only(); x.Tuple.DstPort != 1025 {
		t.Fatalf("expectation %v", x.Tuple)
	}
	if st := s.h.Stats(); st.Partial[KindPORT] != 1 || st.GateSkipped != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTwoCommandsInOneSegment(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\nPORT 10,0,0,5,4,2\r\n")
	if x := s.only(); x.Tuple.DstPort != 1025 {
		t.Fatalf("expectation for port %d, want the first command's 1025", x.Tuple.DstPort)
	}
	// The next segment starts after both lines: it is parsed.
	s.mustAccept(o, "PORT 10,0,0,5,4,3\r\n")
	if x := s.only(); x.Tuple.DstPort != 1027 {
		t.Fatalf("expectation for port %d, want 1027", x.Tuple.DstPort)
	}
}

func TestGate(t *testing.T) {
	t.Run("first segment never parsed", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		s.handshake()
		s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
		s.mustAccept(r, "227 Entering Passive Mode (198,51,100,7,4,1)\r\n")
		if s.e.Len() != 0 {
			t.Fatal("first segment of a direction was parsed")
		}
		if s.h.Stats().GateSkipped != 2 {
			t.Fatalf("stats %+v", s.h.Stats())
		}
	})
	t.Run("out of order", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		// A segment from further ahead (the one before it is missing).
		if res := s.sendAt(o, s.seq[o]+10, "PORT 10,0,0,5,4,1\r\n"); res.Drop {
			t.Fatal("out-of-order segment dropped")
		}
		// Even malformed, it is not parsed, so not dropped.
		if res := s.sendAt(o, s.seq[o]+100, "PORT garbage\r\n"); res.Drop {
			t.Fatal("out-of-order malformed segment dropped")
		}
		if s.e.Len() != 0 {
			t.Fatal("out-of-order segment announced something")
		}
	})
	t.Run("line without newline blocks the next", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		s.mustAccept(o, "NOOP")
		s.mustAccept(o, "\r\n")
		s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
		if x := s.only(); x.Tuple.DstPort != 1025 {
			t.Fatal("line after a completed line not parsed")
		}
	})
	t.Run("direction patterns", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		// The server sending PORT and the client sending 227 mean nothing.
		s.mustAccept(r, "PORT 198,51,100,7,4,1\r\n")
		s.mustAccept(o, "227 Entering Passive Mode (10,0,0,5,4,1)\r\n")
		if s.e.Len() != 0 {
			t.Fatal("pattern matched in the wrong direction")
		}
	})
	t.Run("ctinfo", func(t *testing.T) {
		for _, info := range []conntrack.CtInfo{conntrack.New, conntrack.Related, conntrack.RelatedReply, conntrack.Untracked} {
			s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
			s.login()
			res := s.help(o, info, s.seq[o], packet.ACK, []byte("PORT 10,0,0,5,4,1\r\n"))
			if res.Drop || s.e.Len() != 0 || s.h.Stats().Seen[KindPORT] != 0 {
				t.Fatalf("%v packet parsed", info)
			}
		}
	})
	t.Run("no state slot", func(t *testing.T) {
		s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
		b := tcpPacket(s.ep[o], s.ep[r], 1, 1, packet.ACK, []byte("PO"))
		c := conntrack.HelperContext{Packet: decode(t, b), Info: conntrack.Established, ConnID: 1, Tuple: s.tuple, Expect: s.e}
		if res := s.h.Help(&c); res.Drop {
			t.Fatal("packet without helper state dropped")
		}
	})
}

func TestRememberSlots(t *testing.T) {
	var st connState
	st.remember(o, 100)
	st.remember(o, 200)
	st.remember(o, 200) // duplicate: no change
	if !st.atLineStart(o, 100) || !st.atLineStart(o, 200) || st.atLineStart(r, 100) {
		t.Fatalf("state %+v", st)
	}
	st.remember(o, 50) // older than both: ignored
	if st.atLineStart(o, 50) || !st.atLineStart(o, 100) {
		t.Fatalf("an older seq replaced a slot: %+v", st)
	}
	st.remember(o, 300) // replaces the oldest (100)
	if st.atLineStart(o, 100) || !st.atLineStart(o, 200) || !st.atLineStart(o, 300) {
		t.Fatalf("state %+v", st)
	}
	// Across the 2^32 wrap, 10 is newer than 0xfffffff0.
	var w connState
	w.remember(r, 0xffffff00)
	w.remember(r, 0xfffffff0)
	w.remember(r, 10)
	if w.atLineStart(r, 0xffffff00) || !w.atLineStart(r, 10) || !w.atLineStart(r, 0xfffffff0) {
		t.Fatalf("wrap: %+v", w)
	}
}

func TestExpiryAndRemoveMaster(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	k := dataSYN(t, "198.51.100.7:20", "10.0.0.5:1025")
	if _, ok := s.e.Take(k, s.now+300*sec); ok {
		t.Fatal("expectation alive after 300 s")
	}
	s.mustAccept(r, "200 ok\r\n")
	s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
	if n := s.e.Reap(s.now+300*sec-1, 10); n != 0 {
		t.Fatal("reaped before the timeout")
	}
	if n := s.e.RemoveMaster(s.id); n != 1 {
		t.Fatalf("RemoveMaster = %d", n)
	}
	if _, ok := s.e.Take(k, s.now); ok {
		t.Fatal("expectation survived its master")
	}
	t.Run("custom timeout", func(t *testing.T) {
		s := newSession(t, Config{ExpectTimeout: 5 * time.Second}, "10.0.0.5:40000", "198.51.100.7:21")
		s.login()
		s.mustAccept(o, "PORT 10,0,0,5,4,1\r\n")
		if x := s.only(); x.Expires != s.now+5*sec {
			t.Fatalf("expires %d", x.Expires-s.now)
		}
	})
}

func TestAddFailureDrops(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	// Another control connection already expects the same tuple.
	other := conntrack.Expectation{
		Tuple:       packet.KeyFromAddrs(packet.TCP, netip.MustParseAddrPort("198.51.100.7:0"), netip.MustParseAddrPort("10.0.0.5:1025")),
		SrcPortWild: true, Master: 7, Expires: s.now + 300*sec,
	}
	if err := s.e.Add(other, 1, s.now); err != nil {
		t.Fatal(err)
	}
	s.login()
	res := s.send(o, "PORT 10,0,0,5,4,1\r\n")
	if !res.Drop || res.Why != WhyAddFailed {
		t.Fatalf("result %+v", res)
	}
	if st := s.h.Stats(); st.AddFailed != 1 || st.Expected != 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(s.events) != 1 || !errors.Is(s.events[0].Err, conntrack.ErrExpectClash) {
		t.Fatalf("events %+v", s.events)
	}
	// The newline was still remembered: the next command is parsed.
	s.mustAccept(o, "PORT 10,0,0,5,4,2\r\n")
	if s.h.Stats().Expected != 1 {
		t.Fatal("command after a failed add not parsed")
	}
}

func TestMaxExpected(t *testing.T) {
	s := newSession(t, Config{MaxExpected: 2}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	for _, l := range []string{"PORT 10,0,0,5,4,1\r\n", "PORT 10,0,0,5,4,2\r\n", "PORT 10,0,0,5,4,3\r\n"} {
		s.mustAccept(o, l)
	}
	xs := s.expectations()
	if len(xs) != 2 || xs[0].Tuple.DstPort != 1026 || xs[1].Tuple.DstPort != 1027 {
		t.Fatalf("expectations %+v", xs)
	}
}

func TestHelpNoAllocs(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.h.cfg.Log = nil
	s.login()
	for _, tc := range []struct {
		name, line string
	}{
		{"uninteresting", "RETR file.txt\r\n"},
		{"PORT", "PORT 10,0,0,5,4,1\r\n"},
		{"partial", "PORT 1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decode(t, tcpPacket(s.ep[o], s.ep[r], s.seq[o], s.seq[r], packet.ACK, []byte(tc.line)))
			c := conntrack.HelperContext{Packet: p, Info: conntrack.Established, Now: s.now, ConnID: s.id,
				Tuple: s.tuple, State: &s.state, Expect: s.e}
			s.h.Help(&c) // warm up (first expectation entry)
			if a := testing.AllocsPerRun(1000, func() { s.h.Help(&c) }); a != 0 {
				t.Fatalf("Help allocates %v per packet", a)
			}
		})
	}
}

// FuzzHelper feeds random control-channel bytes in random directions and
// at random (often matching) sequence numbers: the helper must not panic,
// a control connection never has more than one expectation, every
// expectation has the connection's own addresses unless Loose, and drops
// carry a reason.
func FuzzHelper(f *testing.F) {
	f.Add(uint64(1), []byte("PORT 10,0,0,5,4,1\r\n227 (10,0,0,7,4,1)\r\nEPRT |1|10.0.0.5|9|\r\n229 (|||9|)\r\n"), false, false)
	f.Add(uint64(2), []byte("EPRT |2|2001:db8::5|2000|\r\n229 (|||6446|)\r\nPORT 32,1,13,184,0,1\r\n"), true, false)
	f.Add(uint64(3), []byte("PORT 192,0,2,99,4,1\r\nPO\nRT\r\n"), false, true)
	f.Fuzz(func(t *testing.T, seed uint64, data []byte, v6, loose bool) {
		client, server := "10.0.0.5:40000", "10.0.0.7:21"
		if v6 {
			client, server = "[2001:db8::5]:40000", "[2001:db8::7]:21"
		}
		s := newSession(t, Config{Loose: loose}, client, server)
		s.h.cfg.Log = nil
		rng := rand.New(rand.NewPCG(seed, 7))
		for len(data) > 0 {
			n := 1 + rng.IntN(min(len(data), 64))
			seg := data[:n]
			data = data[n:]
			dir := conntrack.Dir(rng.IntN(2))
			seq := s.seq[dir]
			switch rng.IntN(8) {
			case 0:
				seq += uint32(rng.IntN(100))
			case 1:
				seq -= uint32(rng.IntN(100))
			}
			res := s.sendAt(dir, seq, string(seg))
			if res.Drop && res.Why == "" {
				t.Fatal("drop without a reason")
			}
			if !res.Drop && seq == s.seq[dir] {
				s.seq[dir] += uint32(n)
			}
			if s.e.Len() > 1 {
				t.Fatalf("%d expectations for one control connection", s.e.Len())
			}
			for _, x := range s.expectations() {
				if x.Master != s.id || x.Tuple.Proto != packet.TCP || !x.SrcPortWild {
					t.Fatalf("bad expectation %+v", x)
				}
				okSrc := x.Tuple.Src == s.tuple[o].Src || x.Tuple.Src == s.tuple[o].Dst
				okDst := loose || x.Tuple.Dst == s.tuple[o].Src || x.Tuple.Dst == s.tuple[o].Dst
				if !okSrc || !okDst || x.Tuple.Family != s.tuple[o].Family {
					t.Fatalf("expectation %v outside the control connection %v", x.Tuple, s.tuple[o])
				}
			}
		}
	})
}

func BenchmarkHelp(b *testing.B) {
	for _, tc := range []struct {
		name, line string
	}{
		{"uninteresting", "RETR some/file/name.txt\r\n"},
		{"not-at-line-start", "RETR some/file/name.txt\r\n"},
		{"PORT", "PORT 10,0,0,5,4,1\r\n"},
		{"227", "227 Entering Passive Mode (198,51,100,7,19,137).\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := newSession(b, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
			s.h.cfg.Log = nil
			s.login()
			dir, seq := o, s.seq[o]
			if tc.name == "227" {
				dir, seq = r, s.seq[r]
			}
			if tc.name == "not-at-line-start" {
				seq += 3
			}
			p := decode(b, tcpPacket(s.ep[dir], s.ep[1-dir], seq, 1, packet.ACK, []byte(tc.line)))
			info := conntrack.Established
			if dir == r {
				info = conntrack.EstablishedReply
			}
			c := conntrack.HelperContext{Packet: p, Info: info, Now: s.now, ConnID: s.id,
				Tuple: s.tuple, State: &s.state, Expect: s.e}
			b.ReportAllocs()
			for b.Loop() {
				if res := s.h.Help(&c); res.Drop {
					b.Fatal(res.Why)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		line []byte
		fn   func([]byte) (Command, Result)
	}{
		{"PORT", []byte("PORT 10,0,0,5,4,1\r\n"), ParsePORT},
		{"EPRT-v6", []byte("EPRT |2|2001:db8:85a3::8a2e:370:7334|2000|\r\n"), func(l []byte) (Command, Result) { return ParseEPRT(l, 6) }},
		{"227", []byte("227 Entering Passive Mode (198,51,100,7,19,137).\r\n"), Parse227},
		{"229", []byte("229 Entering Extended Passive Mode (|||6446|)\r\n"), Parse229},
		{"nomatch", []byte("RETR some/file/name.txt\r\n"), ParsePORT},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.line)))
			var sink uint16
			for b.Loop() {
				c, _ := tc.fn(tc.line)
				sink += c.Port
			}
			_ = fmt.Sprint(sink)
		})
	}
}

// TestPartialNotRemembered: a dropped line's end is not remembered (the
// kernel drops before updating), so a segment following it is not parsed.
func TestPartialNotRemembered(t *testing.T) {
	s := newSession(t, Config{}, "10.0.0.5:40000", "198.51.100.7:21")
	s.login()
	seq := s.seq[o]
	bad := "PORT 10,0,0,5,4\r\n"
	if res := s.sendAt(o, seq, bad); !res.Drop {
		t.Fatal("partial PORT accepted")
	}
	if res := s.sendAt(o, seq+uint32(len(bad)), "PORT 10,0,0,5,4,1\r\n"); res.Drop {
		t.Fatalf("segment after a dropped line dropped: %s", res.Why)
	}
	if s.e.Len() != 0 {
		t.Fatal("segment after a dropped line was parsed")
	}
	if st := s.h.Stats(); st.GateSkipped != 3 || st.Seen[KindPORT] != 0 {
		t.Fatalf("stats %+v", st)
	}
}

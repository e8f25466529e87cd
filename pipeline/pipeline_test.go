package pipeline

import (
	"github.com/tunrouter/router/defrag"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/helpers/ftp"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/pipeline/pipelinetest"
)

// memDev wraps the shared in-memory device with test assertions.
type memDev struct{ *pipelinetest.MemDev }

func newMemDev(batch int) *memDev { return &memDev{pipelinetest.NewMemDev(batch)} }

func (d *memDev) send(pkt []byte) { d.Send(pkt) }

// recv returns the next packet written to the device, or nil after a
// short wait.
func (d *memDev) recv(t *testing.T) *packet.Parsed {
	t.Helper()
	return d.Recv(2 * time.Second)
}

// none asserts that nothing is written to the device for a while.
func (d *memDev) none(t *testing.T, why string) {
	t.Helper()
	if p := d.Recv(150 * time.Millisecond); p != nil {
		t.Fatalf("%s: unexpected packet %v flags=%v", why, p.Key, p.TCPFlags)
	}
}

type testNet struct {
	p        *Pipeline
	lan, wan *memDev
	ftp      *ftp.Helper
	trace    *traceLog
}

type traceLog struct {
	mu  sync.Mutex
	rec []TraceRecord
}

func (l *traceLog) Trace(w int, r *TraceRecord) {
	l.mu.Lock()
	c := *r
	c.Packet = nil
	l.rec = append(l.rec, c)
	l.mu.Unlock()
}

func (l *traceLog) last() TraceRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.rec) == 0 {
		return TraceRecord{}
	}
	return l.rec[len(l.rec)-1]
}

// gatewayRules is the strict policy of the FTP issue: new connections from
// the LAN only (and to TCP 21 from anywhere in the FTP test), established
// and related accepted, everything else dropped; the FTP helper on 21.
func gatewayRules(t testing.TB, workers int) *filter.Ruleset {
	spec := filter.Spec{
		Interfaces: []string{"lan", "wan"},
		Helpers:    []string{"ftp"},
		Workers:    workers,
		RejectRate: -1,
		Chains: []filter.ChainSpec{
			{Chain: filter.Prerouting, Policy: "accept", Rules: []filter.RuleSpec{
				{Proto: []string{"tcp"}, DPort: []string{"21"}, Action: "helper", Helper: "ftp"},
			}},
			{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
				{CtState: []string{"established", "related"}, Action: "accept"},
				{CtState: []string{"invalid"}, Action: "drop"},
				{IIf: []string{"lan"}, CtState: []string{"new"}, Action: "accept"},
				{IIf: []string{"wan"}, Proto: []string{"tcp"}, DPort: []string{"7"}, Action: "reject"},
			}},
			{Chain: filter.Input, Policy: "drop", Rules: []filter.RuleSpec{
				{Proto: []string{"icmp"}, Action: "accept"},
			}},
		},
	}
	rs, _, err := filter.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func newTestNet(t *testing.T, workers int) *testNet {
	t.Helper()
	lan, wan := newMemDev(32), newMemDev(32)
	routes, err := NewRoutes([]Route{
		{netip.MustParsePrefix("10.1.0.0/16"), 0},
		{netip.MustParsePrefix("fd01::/64"), 0},
		{netip.MustParsePrefix("10.2.0.0/16"), 1},
		{netip.MustParsePrefix("fd02::/64"), 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := ftp.New(ftp.Config{})
	tl := &traceLog{}
	cfg := Config{
		Ports: []Port{
			{Name: "lan", Queues: []Device{lan}, MTU: 1500, Addr4: netip.MustParseAddr("10.1.0.1")},
			{Name: "wan", Queues: []Device{wan}, MTU: 1400, Addr4: netip.MustParseAddr("10.2.0.1")},
		},
		Routes:     routes,
		Workers:    workers,
		Conntrack:  conntrack.DefaultConfig(),
		Helpers:    []conntrack.Helper{h},
		Rules:      gatewayRules(t, workers),
		LocalAddrs: []netip.Addr{netip.MustParseAddr("10.1.0.1")},
		Tracer:     tl,
		ICMPRate:   1e6,
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	return &testNet{p: p, lan: lan, wan: wan, ftp: h, trace: tl}
}

const (
	client = "10.1.0.5"
	server = "10.2.0.9"
)

func TestTCPThroughGateway(t *testing.T) {
	for _, workers := range []int{1, 3} {
		n := newTestNet(t, workers)
		c, s := client+":40000", server+":80"
		n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 100, Win: 65535, TTL: 64}))
		got := n.wan.recv(t)
		if got == nil || got.TCPFlags != packet.SYN || got.TTL != 63 {
			t.Fatalf("workers=%d: SYN not forwarded with TTL decremented: %+v", workers, got)
		}
		if !got.L4ChecksumValid() {
			t.Fatal("forwarded SYN has a bad checksum")
		}
		n.wan.send(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 5000, Ack: 101, Win: 65535}))
		if got := n.lan.recv(t); got == nil || got.TCPFlags != packet.SYN|packet.ACK {
			t.Fatalf("SYN/ACK not forwarded: %+v", got)
		}
		if tr := n.trace.last(); tr.Ct != conntrack.EstablishedReply {
			t.Fatalf("SYN/ACK traced as %v, want ESTABLISHED_REPLY", tr.Ct)
		}
		n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 101, Ack: 5001, Win: 65535}))
		if got := n.wan.recv(t); got == nil {
			t.Fatal("ACK not forwarded")
		}
		// A connection the WAN opens is dropped by the policy.
		n.wan.send(pt.TCP4(server+":1234", client+":22", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 100}))
		n.lan.none(t, "unsolicited SYN from the WAN")
		if tr := n.trace.last(); tr.Ct != conntrack.New || tr.Rule != -1 || tr.Verdict != "drop" {
			t.Fatalf("unsolicited SYN trace %+v", tr)
		}
		// INVALID: SYN|FIN is dropped by rule 1 with its reason.
		n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN | packet.FIN, Seq: 1, Win: 100}))
		n.wan.none(t, "SYN|FIN")
		if tr := n.trace.last(); tr.Ct != conntrack.Invalid || tr.Reason != conntrack.ReasonTCPFlags || tr.Rule != 1 {
			t.Fatalf("SYN|FIN trace %+v", tr)
		}
		st := n.p.Stats()
		if st.Conntrack.InvalidBy[conntrack.ReasonTCPFlags] != 1 {
			t.Fatalf("invalid flags counted %d times", st.Conntrack.InvalidBy[conntrack.ReasonTCPFlags])
		}
		if st.Conntrack.Entries != 1 {
			t.Fatalf("%d entries, want 1", st.Conntrack.Entries)
		}
		n.p.Close()
	}
}

func TestRouterICMP(t *testing.T) {
	n := newTestNet(t, 2)
	// TTL 1: time exceeded from the router's LAN address.
	n.lan.send(pt.UDP(client+":5000", server+":53", pt.UDPOpts{Payload: []byte("q"), TTL: 1}))
	got := n.lan.recv(t)
	if got == nil || got.Proto != packet.ICMP || got.ICMPType != packet.ICMPTimeExceeded || got.SrcAddr() != netip.MustParseAddr("10.1.0.1") {
		t.Fatalf("time exceeded: %+v", got)
	}
	n.wan.none(t, "TTL 1")
	// No route.
	n.lan.send(pt.UDP4(client+":5000", "192.0.2.1:53", []byte("q")))
	got = n.lan.recv(t)
	if got == nil || got.ICMPType != packet.ICMPDestUnreachable || got.ICMPCode != packet.ICMPNetUnreachable {
		t.Fatalf("net unreachable: %+v", got)
	}
	// Too big with DF: fragmentation needed with the WAN MTU.
	big := make([]byte, 1450)
	n.lan.send(pt.UDP(client+":5000", server+":9", pt.UDPOpts{Payload: big, DF: true}))
	got = n.lan.recv(t)
	if got == nil || got.ICMPType != packet.ICMPDestUnreachable || got.ICMPCode != packet.ICMPFragNeeded {
		t.Fatalf("frag needed: %+v", got)
	}
	if mtu := uint16(got.Buf()[got.L4Off+6])<<8 | uint16(got.Buf()[got.L4Off+7]); mtu != 1400 {
		t.Fatalf("frag needed announces MTU %d, want 1400", mtu)
	}
	// Too big without DF: fragmented to the WAN MTU.
	n.lan.send(pt.UDP(client+":5001", server+":9", pt.UDPOpts{Payload: big}))
	f1, f2 := n.wan.recv(t), n.wan.recv(t)
	if f1 == nil || f2 == nil || !f1.Fragment || !f2.Fragment || f1.Length > 1400 {
		t.Fatalf("fragments: %+v %+v", f1, f2)
	}
	// IPv6 too big: packet too big.
	n.lan.send(pt.UDP("[fd01::5]:5000", "[fd02::9]:9", pt.UDPOpts{Payload: big}))
	got = n.lan.recv(t)
	if got == nil || got.Proto != packet.ICMPv6 || got.ICMPType != packet.ICMPv6PacketTooBig {
		t.Fatalf("packet too big: %+v", got)
	}
	// Ping the router.
	n.lan.send(pt.ICMP4Echo(client, "10.1.0.1", packet.ICMPEchoRequest, 7, 1))
	got = n.lan.recv(t)
	if got == nil || got.ICMPType != packet.ICMPEchoReply || got.ICMPID != 7 {
		t.Fatalf("echo reply: %+v", got)
	}
	// Reject: TCP to port 7 from the WAN gets a RST.
	n.wan.send(pt.TCP4(server+":999", client+":7", pt.TCPOpts{Flags: packet.SYN, Seq: 77, Win: 100}))
	got = n.wan.recv(t)
	if got == nil || got.TCPFlags&packet.RST == 0 || got.Ack != 78 {
		t.Fatalf("reset: %+v", got)
	}
}

func TestFragmentsAreTracked(t *testing.T) {
	n := newTestNet(t, 2)
	whole := pt.UDP(client+":6000", server+":6001", pt.UDPOpts{Payload: make([]byte, 1300), ID: 42})
	var frags [][]byte
	if !fragmentFor(whole, 600, &frags) {
		t.Fatal("could not fragment")
	}
	for _, f := range frags {
		n.lan.send(f)
	}
	// Reassembled, tracked as one datagram, refragmented to the largest
	// original fragment.
	var got []*packet.Parsed
	for i := 0; i < len(frags); i++ {
		p := n.wan.recv(t)
		if p == nil {
			t.Fatalf("got %d fragments, want %d", i, len(frags))
		}
		got = append(got, p)
	}
	for _, p := range got {
		if !p.Fragment || p.Length > 600 {
			t.Fatalf("output fragment %+v", p)
		}
	}
	if tr := n.trace.last(); tr.Ct != conntrack.New {
		t.Fatalf("reassembled datagram traced %v, want NEW", tr.Ct)
	}
	// The reply is ESTABLISHED_REPLY.
	n.wan.send(pt.UDP4(server+":6001", client+":6000", []byte("r")))
	if p := n.lan.recv(t); p == nil {
		t.Fatal("reply not forwarded")
	}
	if tr := n.trace.last(); tr.Ct != conntrack.EstablishedReply {
		t.Fatalf("reply traced %v", tr.Ct)
	}
}

func fragmentFor(pkt []byte, size int, out *[][]byte) bool {
	return fragmentBytes(pkt, size, out)
}

// TestFTPActiveThroughGateway runs an active-mode FTP control conversation
// through the pipeline: the PORT command creates an expectation and the
// server's data connection from the WAN is RELATED and accepted, while a
// connection to another port is dropped.
func TestFTPActiveThroughGateway(t *testing.T) {
	n := newTestNet(t, 2)
	c, s := client+":40001", server+":21"
	var cseq, sseq uint32 = 1000, 9000
	tcp := func(dev *memDev, src, dst string, flags packet.TCPFlags, seq, ack uint32, data string) {
		dev.send(pt.TCP4(src, dst, pt.TCPOpts{Flags: flags, Seq: seq, Ack: ack, Win: 65535, Payload: []byte(data)}))
	}
	tcp(n.lan, c, s, packet.SYN, cseq, 0, "")
	n.wan.recv(t)
	tcp(n.wan, s, c, packet.SYN|packet.ACK, sseq, cseq+1, "")
	n.lan.recv(t)
	cseq++
	sseq++
	tcp(n.lan, c, s, packet.ACK, cseq, sseq, "")
	n.wan.recv(t)
	send := func(fromClient bool, line string) {
		if fromClient {
			tcp(n.lan, c, s, packet.ACK|packet.PSH, cseq, sseq, line)
			cseq += uint32(len(line))
			if n.wan.recv(t) == nil {
				t.Fatalf("client line %q not forwarded", line)
			}
		} else {
			tcp(n.wan, s, c, packet.ACK|packet.PSH, sseq, cseq, line)
			sseq += uint32(len(line))
			if n.lan.recv(t) == nil {
				t.Fatalf("server line %q not forwarded", line)
			}
		}
	}
	send(false, "220 hello\r\n")
	send(true, "USER a\r\n")
	send(false, "331 pw\r\n")
	send(true, "PASS b\r\n")
	send(false, "230 ok\r\n")
	send(true, "PORT 10,1,0,5,200,10\r\n") // 51210
	if n.p.Expectations().Len() != 1 {
		t.Fatalf("%d expectations after PORT, want 1", n.p.Expectations().Len())
	}
	// A connection from the server to another client port is not expected.
	n.wan.send(pt.TCP4(server+":20", client+":51211", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 100}))
	n.lan.none(t, "unannounced data connection")
	// The announced one is RELATED and passes.
	n.wan.send(pt.TCP4(server+":20", client+":51210", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 100}))
	if n.lan.recv(t) == nil {
		t.Fatal("announced data connection dropped")
	}
	if tr := n.trace.last(); tr.Ct != conntrack.Related || tr.Status&conntrack.StatusExpected == 0 {
		t.Fatalf("data SYN trace %+v", tr)
	}
	// The expectation is used up: the same SYN again from another source
	// port is not related.
	n.wan.send(pt.TCP4(server+":21000", client+":51210", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 100}))
	n.lan.none(t, "second data connection")
}

func TestReloadKeepsConnections(t *testing.T) {
	n := newTestNet(t, 2)
	c, s := client+":41000", server+":443"
	n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 65535}))
	n.wan.recv(t)
	n.wan.send(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 1, Ack: 2, Win: 65535}))
	n.lan.recv(t)
	// New rules: no new connections at all, established still accepted.
	rs, _, err := filter.Compile(filter.Spec{
		Interfaces: []string{"lan", "wan"}, Helpers: []string{"ftp"}, Workers: 2,
		Chains: []filter.ChainSpec{{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.p.SetRules(rs)
	n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 2, Ack: 2, Win: 65535}))
	if n.wan.recv(t) == nil {
		t.Fatal("established connection lost after reload")
	}
	n.lan.send(pt.TCP4(client+":41001", s, pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 65535}))
	n.wan.none(t, "new connection after the new rules forbid it")
}

func TestCloseDrains(t *testing.T) {
	n := newTestNet(t, 2)
	for i := 0; i < 200; i++ {
		n.lan.send(pt.UDP4(client+":7000", server+":7001", []byte{byte(i)}))
	}
	// Wait until the readers took everything, then close: every packet
	// must have been written.
	deadline := time.Now().Add(2 * time.Second)
	for len(n.lan.In) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	n.p.Close()
	// Every packet was either written or counted as a queue drop.
	written := len(n.wan.Out)
	st := n.p.Stats()
	drops := st.Drops()[DropQueueFull]
	if written+int(drops) != 200 {
		t.Fatalf("%d written + %d dropped after Close, want 200", written, drops)
	}
	if written == 0 {
		t.Fatal("nothing written")
	}
}

func TestControlDo(t *testing.T) {
	n := newTestNet(t, 3)
	for i := 0; i < 30; i++ {
		n.lan.send(pt.UDP4(client+":"+itoa(8000+i), server+":53", []byte("x")))
		if n.wan.recv(t) == nil {
			t.Fatal("udp not forwarded")
		}
	}
	total := 0
	n.p.DoAll(func(w int, tb *conntrack.Table, now int64) {
		tb.List(now, func(*conntrack.EntryInfo) bool { total++; return true })
	})
	if total != 30 {
		t.Fatalf("listed %d entries, want 30", total)
	}
	flushed := 0
	n.p.DoAll(func(w int, tb *conntrack.Table, now int64) { flushed += tb.Flush() })
	if flushed != 30 || n.p.Stats().Conntrack.Entries != 0 {
		t.Fatalf("flushed %d", flushed)
	}
}

func itoa(i int) string {
	b := []byte{}
	for i > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}

func fragmentBytes(pkt []byte, size int, out *[][]byte) bool {
	return defrag.Fragment(pkt, size, func(n int) []byte {
		b := make([]byte, n)
		*out = append(*out, b)
		return b
	})
}

func TestSetMTU(t *testing.T) {
	n := newTestNet(t, 2)
	pkt := pt.UDP(client+":5000", server+":9", pt.UDPOpts{Payload: make([]byte, 1100), DF: true})
	n.lan.send(pkt)
	if got := n.wan.recv(t); got == nil {
		t.Fatal("1128-byte packet not forwarded at MTU 1400")
	}
	n.p.SetMTU(1, 1000)
	n.lan.send(pkt)
	got := n.lan.recv(t)
	if got == nil || got.ICMPType != packet.ICMPDestUnreachable || got.ICMPCode != packet.ICMPFragNeeded {
		t.Fatalf("after SetMTU: %+v", got)
	}
	if mtu := uint16(got.Buf()[got.L4Off+6])<<8 | uint16(got.Buf()[got.L4Off+7]); mtu != 1000 {
		t.Fatalf("frag needed announces MTU %d, want 1000", mtu)
	}
}

// TestRestartKeepsConnections saves the connections of one pipeline and
// restores them into a new one with other workers and another hash seed:
// the established connection's next packet is ESTABLISHED there, even
// though the new rules accept no new connection.
func TestRestartKeepsConnections(t *testing.T) {
	n := newTestNet(t, 2)
	c, s := client+":42000", server+":22"
	n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 65535}))
	n.wan.recv(t)
	n.wan.send(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 1, Ack: 2, Win: 65535}))
	n.lan.recv(t)
	n.p.Close()
	var saved []conntrack.Snapshot
	n.p.Export(func(sn *conntrack.Snapshot) bool { saved = append(saved, *sn); return true })
	if len(saved) != 1 {
		t.Fatalf("exported %d connections", len(saved))
	}

	m := newTestNet(t, 3)
	rs, _, err := filter.Compile(filter.Spec{Interfaces: []string{"lan", "wan"}, Workers: 3,
		Chains: []filter.ChainSpec{{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established"}, Action: "accept"},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	m.p.SetRules(rs)
	if k, err := m.p.Restore(saved); k != 1 || err != nil {
		t.Fatalf("restored %d: %v", k, err)
	}
	m.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 2, Ack: 2, Win: 65535}))
	if m.wan.recv(t) == nil {
		t.Fatal("the restored connection's packet was dropped")
	}
	if tr := m.trace.last(); tr.Ct != conntrack.Established {
		t.Fatalf("after restore: %v", tr.Ct)
	}
}

package pipeline

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// offDev is an in-memory OffloadDevice: packets go in and come out with
// their offload metadata.
type offDev struct {
	in   chan []offPkt // one Read's packets
	out  chan offPkt
	stop chan struct{}
	once sync.Once
	// plainIO counts calls of Read and Write, which the pipeline must not
	// use while it forwards whole packets.
	plainIO int
	mu      sync.Mutex
}

type offPkt struct {
	b   []byte
	off packet.Offload
}

func newOffDev() *offDev {
	return &offDev{in: make(chan []offPkt, 64), out: make(chan offPkt, 256), stop: make(chan struct{})}
}

func (d *offDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.mu.Lock()
	d.plainIO++
	d.mu.Unlock()
	<-d.stop
	return 0, os.ErrClosed
}

func (d *offDev) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.Lock()
	d.plainIO++
	d.mu.Unlock()
	return len(bufs), nil
}

func (d *offDev) BatchSize() int       { return 128 }
func (d *offDev) InterruptRead() error { d.once.Do(func() { close(d.stop) }); return nil }
func (d *offDev) Offloading() bool     { return true }

func (d *offDev) ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error) {
	var ps []offPkt
	select {
	case ps = <-d.in:
	case <-d.stop:
		return 0, os.ErrClosed
	}
	for i, p := range ps {
		sizes[i] = copy(bufs[i][offset:], p.b)
		offs[i] = p.off
	}
	return len(ps), nil
}

func (d *offDev) WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error) {
	for i, b := range bufs {
		d.out <- offPkt{append([]byte(nil), b[offset:]...), offs[i]}
	}
	return len(bufs), nil
}

func (d *offDev) send(b []byte, off packet.Offload) { d.in <- []offPkt{{b, off}} }

// sendBatch queues packets that one Read returns together.
func (d *offDev) sendBatch(ps ...offPkt) { d.in <- ps }

func (d *offDev) recv(t *testing.T) (offPkt, *packet.Parsed) {
	t.Helper()
	select {
	case p := <-d.out:
		return p, pt.MustDecode(p.b)
	case <-time.After(2 * time.Second):
		t.Fatal("nothing written")
		return offPkt{}, nil
	}
}

func (d *offDev) none(t *testing.T, why string) {
	t.Helper()
	select {
	case p := <-d.out:
		t.Fatalf("%s: unexpected packet %v", why, pt.MustDecode(p.b).Key)
	case <-time.After(150 * time.Millisecond):
	}
}

type offNet struct {
	p        *Pipeline
	lan, wan *offDev
	trace    *traceLog
}

// newOffNet is newTestNet's gateway over offload devices (wan MTU 1400).
func newOffNet(t *testing.T, split bool) *offNet {
	t.Helper()
	lan, wan := newOffDev(), newOffDev()
	routes, err := NewRoutes([]Route{
		{netip.MustParsePrefix("10.1.0.0/16"), 0},
		{netip.MustParsePrefix("10.2.0.0/16"), 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	tl := &traceLog{}
	p, err := New(Config{
		Ports: []Port{
			{Name: "lan", Queues: []Device{lan}, MTU: 1500, Addr4: netip.MustParseAddr("10.1.0.1")},
			{Name: "wan", Queues: []Device{wan}, MTU: 1400, Addr4: netip.MustParseAddr("10.2.0.1")},
		},
		Routes:     routes,
		Workers:    2,
		Conntrack:  conntrack.DefaultConfig(),
		Rules:      gatewayRules(t, 2),
		LocalAddrs: []netip.Addr{netip.MustParseAddr("10.1.0.1")},
		Tracer:     tl,
		ICMPRate:   1e6,
		SplitGSO:   split,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	return &offNet{p: p, lan: lan, wan: wan, trace: tl}
}

// partial replaces a TCP or UDP packet's transport checksum by the
// pseudo-header sum alone, as the kernel hands over a CHECKSUM_PARTIAL
// packet, and returns the matching metadata.
func partial(b []byte, gso packet.GSOType, gsoSize uint16) packet.Offload {
	p := pt.MustDecode(b)
	at := p.L4Off + 16
	if p.Proto == packet.UDP {
		at = p.L4Off + 6
	}
	binary.BigEndian.PutUint16(b[at:], 0)
	sum := packet.PseudoHeaderSum(p.Family, &p.Key.Src, &p.Key.Dst, p.Proto, p.Length-p.L4Off)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[at:], uint16(sum))
	o := packet.Offload{NeedsCsum: true, CsumStart: uint16(p.L4Off), CsumOffset: uint16(at - p.L4Off), GSO: gso, GSOSize: gsoSize}
	if gso != packet.GSONone {
		o.HdrLen = uint16(p.PayloadOff)
	}
	return o
}

func (n *offNet) handshake(t *testing.T, c, s string) {
	t.Helper()
	n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 100, Win: 65535, WScale: 7, MSS: 1360}), packet.Offload{})
	n.wan.recv(t)
	n.wan.send(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 5000, Ack: 101, Win: 65535, WScale: 7, MSS: 1360}), packet.Offload{})
	n.lan.recv(t)
	n.lan.send(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 101, Ack: 5001, Win: 65535}), packet.Offload{})
	n.wan.recv(t)
}

// TestOffloadGSOForwardedWhole: a TSO super-packet with a partial checksum
// crosses the router as one packet, metadata intact, tracked as the
// connection's data (not INVALID for its checksum, not cut).
func TestOffloadGSOForwardedWhole(t *testing.T) {
	n := newOffNet(t, false)
	if !n.p.Offload() {
		t.Fatal("pipeline does not forward whole packets over offload devices")
	}
	c, s := client+":40000", server+":80"
	n.handshake(t, c, s)
	const segs, mss = 20, 1360
	data := pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 101, Ack: 5001, Win: 65535, DF: true, Payload: make([]byte, segs*mss)})
	off := partial(data, packet.GSOTCPv4, mss)
	n.lan.send(data, off)
	got, p := n.wan.recv(t)
	if len(got.b) != len(data) || p.TTL != 63 || p.Err != packet.ErrNone {
		t.Fatalf("forwarded %d bytes TTL %d err %v, want the whole %d-byte super-packet with TTL 63", len(got.b), p.TTL, p.Err, len(data))
	}
	if got.off != off {
		t.Fatalf("metadata %+v, want %+v", got.off, off)
	}
	if tr := n.trace.last(); tr.Ct != conntrack.Established || tr.Verdict != "accept" {
		t.Fatalf("super-packet traced %v %q, want ESTABLISHED accepted", tr.Ct, tr.Verdict)
	}
	// The server's ACK of all of it is in window: the tracker saw the
	// whole super-packet as one segment.
	n.wan.send(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.ACK, Seq: 5001, Ack: 101 + segs*mss, Win: 65535}), packet.Offload{})
	n.lan.recv(t)
	if tr := n.trace.last(); tr.Ct != conntrack.EstablishedReply {
		t.Fatalf("ACK of the super-packet traced %v, want ESTABLISHED_REPLY", tr.Ct)
	}
	if n.lan.plainIO+n.wan.plainIO != 0 {
		t.Fatal("the pipeline used Read/Write of an offload device")
	}
}

// TestOffloadChecksums: a plain packet with a broken checksum is INVALID
// (dropped by the rules); the same bytes flagged as verified by the
// sender (DataValid), or with a partial checksum, are not.
func TestOffloadChecksums(t *testing.T) {
	n := newOffNet(t, false)
	for i, tc := range []struct {
		name    string
		off     func(b []byte) packet.Offload
		forward bool
	}{
		{"plain, bad checksum", func(b []byte) packet.Offload { b[len(b)-1] ^= 0xff; return packet.Offload{} }, false},
		{"data valid", func(b []byte) packet.Offload { b[len(b)-1] ^= 0xff; return packet.Offload{DataValid: true} }, true},
		{"partial", func(b []byte) packet.Offload { return partial(b, packet.GSONone, 0) }, true},
		{"plain, good checksum", func([]byte) packet.Offload { return packet.Offload{} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := pt.UDP4(client+":"+itoa(6000+i), server+":53", []byte("query"))
			n.lan.send(b, tc.off(b))
			if !tc.forward {
				n.wan.none(t, "bad checksum")
				if tr := n.trace.last(); tr.Ct != conntrack.Invalid || tr.Reason != conntrack.ReasonUDPChecksum {
					t.Fatalf("traced %v %v, want INVALID for its UDP checksum", tr.Ct, tr.Reason)
				}
				return
			}
			got, _ := n.wan.recv(t)
			if tr := n.trace.last(); tr.Ct != conntrack.New {
				t.Fatalf("traced %v %v, want NEW", tr.Ct, tr.Reason)
			}
			if want := tc.off(append([]byte(nil), b...)); got.off.NeedsCsum != want.NeedsCsum {
				t.Fatalf("NeedsCsum %v not kept", got.off.NeedsCsum)
			}
		})
	}
}

// TestOffloadTooBig: a super-packet whose segments exceed the output MTU
// gets fragmentation-needed with DF (as the kernel answers a GSO packet
// whose segments do not fit), and is dropped without; a partial-checksum
// packet that must be fragmented leaves with its checksum completed.
func TestOffloadTooBig(t *testing.T) {
	n := newOffNet(t, false)
	c, s := client+":40001", server+":80"
	n.handshake(t, c, s)

	big := pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 101, Ack: 5001, Win: 65535, DF: true, Payload: make([]byte, 4*1440)})
	n.lan.send(big, partial(big, packet.GSOTCPv4, 1440))
	_, icmp := n.lan.recv(t)
	if icmp.Proto != packet.ICMP || icmp.ICMPType != packet.ICMPDestUnreachable || icmp.ICMPCode != packet.ICMPFragNeeded {
		t.Fatalf("got %v type %d code %d, want fragmentation needed", icmp.Proto, icmp.ICMPType, icmp.ICMPCode)
	}
	if mtu := binary.BigEndian.Uint16(icmp.Buf()[icmp.L4Off+6:]); mtu != 1400 {
		t.Fatalf("next-hop MTU %d, want 1400", mtu)
	}
	n.wan.none(t, "segments too big")

	noDF := pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 101, Ack: 5001, Win: 65535, Payload: make([]byte, 4*1440)})
	n.lan.send(noDF, partial(noDF, packet.GSOTCPv4, 1440))
	n.wan.none(t, "GSO packet without DF whose segments do not fit")
	st := n.p.Stats()
	if d := st.Drops()[DropTooBig]; d != 2 {
		t.Fatalf("%d too-big drops, want 2", d)
	}

	// One plain UDP datagram over the wan MTU, without DF, checksum
	// partial: fragmented, and the reassembled datagram's checksum is
	// right.
	dg := pt.UDP4(client+":7000", server+":7001", make([]byte, 2000))
	n.lan.send(dg, partial(dg, packet.GSONone, 0))
	dt := defrag.New(defrag.Config{})
	var whole []byte
	for whole == nil {
		f, fp := n.wan.recv(t)
		if f.off != (packet.Offload{}) {
			t.Fatalf("fragment written with metadata %+v", f.off)
		}
		if w, _, ok := dt.Add(fp, 1); ok {
			whole = w
		}
	}
	if p := pt.MustDecode(whole); !p.L4ChecksumValid() || p.PayloadLen() != 2000 {
		t.Fatalf("reassembled datagram: checksum valid %v, payload %d", p.L4ChecksumValid(), p.PayloadLen())
	}
}

// TestOffloadSplitGSO: with SplitGSO, offload devices are used through
// Read and Write.
func TestOffloadSplitGSO(t *testing.T) {
	n := newOffNet(t, true)
	if n.p.Offload() {
		t.Fatal("SplitGSO ignored")
	}
	time.Sleep(20 * time.Millisecond) // the readers are in Read
	n.lan.mu.Lock()
	defer n.lan.mu.Unlock()
	if n.lan.plainIO == 0 {
		t.Fatal("Read not used")
	}
}

// TestOffloadRepliesToPartial: the router answers packets whose checksum
// is partial (the kernel's reject and ICMP code take CHECKSUM_PARTIAL as
// good): a rejected SYN gets its reset, a ping to the router its reply.
func TestOffloadRepliesToPartial(t *testing.T) {
	n := newOffNet(t, false)
	syn := pt.TCP4(server+":5555", client+":7", pt.TCPOpts{Flags: packet.SYN, Seq: 77, Win: 65535})
	n.wan.send(syn, partial(syn, packet.GSONone, 0))
	got, rst := n.wan.recv(t)
	if rst.Proto != packet.TCP || rst.TCPFlags != packet.RST|packet.ACK || rst.Ack != 78 || !rst.L4ChecksumValid() {
		t.Fatalf("reply to the rejected SYN: %v flags %v ack %d checksum ok %v, want a valid RST/ACK of 78",
			rst.Proto, rst.TCPFlags, rst.Ack, rst.L4ChecksumValid())
	}
	if got.off != (packet.Offload{}) {
		t.Fatalf("reset written with metadata %+v", got.off)
	}

	ping := pt.ICMP4Echo(client, "10.1.0.1", packet.ICMPEchoRequest, 9, 1)
	pp := pt.MustDecode(ping)
	binary.BigEndian.PutUint16(ping[pp.L4Off+2:], 0) // ICMP has no pseudo header: partial = 0
	n.lan.send(ping, packet.Offload{NeedsCsum: true, CsumStart: uint16(pp.L4Off), CsumOffset: 2})
	_, reply := n.lan.recv(t)
	if reply.Proto != packet.ICMP || reply.ICMPType != packet.ICMPEchoReply || !reply.L4ChecksumValid() {
		t.Fatalf("reply to the ping: %v type %d checksum ok %v", reply.Proto, reply.ICMPType, reply.L4ChecksumValid())
	}
}

// TestOffloadUDPCoalesced: datagrams of one flow with partial checksums
// read together leave as one UDP GSO super-datagram (headers of the first,
// payloads in order, lengths and checksums for the kernel to cut it
// again); a shorter datagram ends a run, a datagram with a complete
// checksum is not merged.
func TestOffloadUDPCoalesced(t *testing.T) {
	n := newOffNet(t, false)
	c, s := client+":5000", server+":5201"
	dg := func(i, size int, part bool) offPkt {
		pl := make([]byte, size)
		for k := range pl {
			pl[k] = byte(i)
		}
		b := pt.UDP4(c, s, pl)
		if !part {
			return offPkt{b, packet.Offload{}}
		}
		return offPkt{b, partial(b, packet.GSONone, 0)}
	}
	n.lan.sendBatch(
		dg(1, 64, true), dg(2, 64, true), dg(3, 64, true), dg(4, 40, true), // a run, ended by the shorter one
		dg(5, 64, true), dg(6, 64, true), // another run
		dg(7, 64, false), // a complete checksum: alone
	)
	type write struct {
		segs int
		pl   []byte
	}
	var got []write
	for len(got) < 3 {
		w, p := n.wan.recv(t)
		if w.off.GSO == packet.GSONone {
			got = append(got, write{1, p.Payload()})
			continue
		}
		if w.off.GSO != packet.GSOUDPL4 || w.off.GSOSize != 64 || w.off.HdrLen != 28 || !w.off.NeedsCsum || w.off.CsumStart != 20 || w.off.CsumOffset != 6 {
			t.Fatalf("super-datagram metadata %+v", w.off)
		}
		if p.Err != packet.ErrNone || int(p.UDPLength) != 8+len(p.Payload()) || p.TTL != 63 {
			t.Fatalf("super-datagram: err %v, UDP length %d for %d bytes, TTL %d", p.Err, p.UDPLength, len(p.Payload()), p.TTL)
		}
		sum := packet.PseudoHeaderSum(4, &p.Key.Src, &p.Key.Dst, packet.UDP, int(p.UDPLength))
		if ck := binary.BigEndian.Uint16(w.b[26:]); ck != uint16(sum) {
			t.Fatalf("UDP checksum field %#04x, want the pseudo-header sum %#04x", ck, sum)
		}
		got = append(got, write{(len(p.Payload()) + 63) / 64, p.Payload()})
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	want := []write{
		{4, cat(fill(1, 64), fill(2, 64), fill(3, 64), fill(4, 40))},
		{2, cat(fill(5, 64), fill(6, 64))},
		{1, fill(7, 64)},
	}
	for i := range want {
		if got[i].segs != want[i].segs || !bytes.Equal(got[i].pl, want[i].pl) {
			t.Fatalf("write %d: %d segment(s), payload %v..., want %d with the datagrams' payloads in order", i, got[i].segs, got[i].pl[:4], want[i].segs)
		}
	}
	n.wan.none(t, "nothing more")
}

func fill(v byte, n int) []byte { return bytes.Repeat([]byte{v}, n) }

package pipeline

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/helpers/ftp"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/pipeline/pipelinetest"
)

// FuzzPipeline feeds arbitrary packets, in batches from both ports, through
// the whole per-packet path synchronously (decode, reassembly, steering,
// prerouting with the FTP helper attached, conntrack, routing, TTL/MTU
// checks and the router's own ICMP errors, the forward and input chains,
// helpers, fragmentation, writes): no input may panic, and whatever the
// pipeline writes must be a well-formed IP packet with valid checksums
// that it was allowed to send (a forwarded packet with its TTL decremented,
// or one the router built).
func FuzzPipeline(f *testing.F) {
	c, s := "10.1.0.5:40000", "10.2.0.9:21"
	seeds := [][][]byte{
		{pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 65535})},
		{pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 9, Ack: 2, Win: 65535}),
			pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 2, Ack: 10, Win: 65535, Payload: []byte("PORT 10,1,0,5,4,1\r\n")})},
		{pt.UDP(client+":5000", server+":53", pt.UDPOpts{Payload: make([]byte, 1450)})},
		{pt.UDP(client+":5000", server+":53", pt.UDPOpts{Payload: []byte("x"), TTL: 1})},
		{pt.ICMP4Echo(client, "10.1.0.1", packet.ICMPEchoRequest, 1, 1)},
		{pt.ICMP4Error("10.2.0.1", client, packet.ICMPDestUnreachable, packet.ICMPPortUnreachable,
			pt.UDP4(client+":5000", server+":53", []byte("x")))},
		{pt.UDP("[fd01::5]:5000", "[fd02::9]:9", pt.UDPOpts{Payload: make([]byte, 1450)})},
		{pt.TCP6("[fd01::5]:1", "[fd02::9]:7", pt.TCPOpts{Flags: packet.SYN | packet.FIN, Seq: 1})},
	}
	frags := pt.Fragment4(pt.UDP(client+":6000", server+":6001", pt.UDPOpts{Payload: make([]byte, 1300), ID: 42}), 600)
	seeds = append(seeds, frags)
	for _, batch := range seeds {
		f.Add(encodeBatch(batch))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0x45})

	f.Fuzz(func(t *testing.T, data []byte) {
		lan, wan := pipelinetest.NewMemDev(32), pipelinetest.NewMemDev(32)
		routes, err := NewRoutes([]Route{
			{netip.MustParsePrefix("10.1.0.0/16"), 0}, {netip.MustParsePrefix("fd01::/64"), 0},
			{netip.MustParsePrefix("10.2.0.0/16"), 1}, {netip.MustParsePrefix("fd02::/64"), 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		rs := gatewayRules(t, 2)
		// A small table: fast to build, and full often enough to exercise
		// early drop and table-full drops.
		ct := conntrack.DefaultConfig()
		ct.Max, ct.ExpectMax = 64, 8
		p, err := New(Config{
			Ports: []Port{
				{Name: "lan", Queues: []Device{lan}, MTU: 1500, Addr4: netip.MustParseAddr("10.1.0.1")},
				{Name: "wan", Queues: []Device{wan}, MTU: 1400},
			},
			Routes: routes, Workers: 2, Conntrack: ct,
			Helpers: []conntrack.Helper{ftp.New(ftp.Config{})}, Rules: rs,
			LocalAddrs: []netip.Addr{netip.MustParseAddr("10.1.0.1")}, ICMPRate: 1e9,
			Tracer: &traceLog{},
		})
		if err != nil {
			t.Fatal(err)
		}
		// Batches alternate between the two ports' readers.
		for bi, batch := range decodeBatches(data) {
			r := p.readers[bi%len(p.readers)]
			bt := r.b
			n := 0
			for _, pkt := range batch {
				if n == len(bt.bufs) {
					break
				}
				bt.bufs[n] = bt.bufs[n][:cap(bt.bufs[n])]
				if len(pkt)+bufOffset > len(bt.bufs[n]) {
					continue
				}
				bt.sizes[n] = copy(bt.bufs[n][bufOffset:], pkt)
				n++
			}
			clear(bt.offl[:n])
			r.dispatch(bt, n)
			for _, d := range []*pipelinetest.MemDev{lan, wan} {
				for len(d.Out) > 0 {
					checkWritten(t, <-d.Out)
				}
			}
		}
	})
}

// checkWritten asserts that a packet the pipeline wrote is well formed.
func checkWritten(t *testing.T, b []byte) {
	t.Helper()
	var q packet.Parsed
	q.Decode(b)
	if q.Err.IsIPLevel() {
		t.Fatalf("wrote a packet with a broken IP header (%v): %x", q.Err, b)
	}
	if q.Family == 4 && packet.Checksum(b[:int(b[0]&0x0f)*4], 0) != 0xffff {
		t.Fatalf("wrote an IPv4 packet with a bad header checksum: %x", b)
	}
	if q.TTL == 0 {
		t.Fatalf("wrote a packet with TTL 0: %x", b)
	}
}

// encodeBatch encodes packets as a fuzz input: one batch of
// length-prefixed packets.
func encodeBatch(pkts [][]byte) []byte {
	var out []byte
	out = append(out, byte(len(pkts)))
	for _, p := range pkts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// decodeBatches splits fuzz input into batches: a count byte, then that
// many packets each with a 16-bit length (truncated input ends the last
// packet early), repeated.
func decodeBatches(data []byte) [][][]byte {
	var out [][][]byte
	for len(data) > 0 && len(out) < 16 {
		n := int(data[0]) % 33
		data = data[1:]
		var batch [][]byte
		for i := 0; i < n && len(data) >= 2; i++ {
			l := int(binary.BigEndian.Uint16(data))
			data = data[2:]
			l = min(l, len(data))
			batch = append(batch, data[:l])
			data = data[l:]
		}
		out = append(out, batch)
	}
	return out
}

package egress

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunrouter/router/packet"
)

// gsoPacket wraps a super-segment as netstack's TCP hands it to the link.
func gsoPacket(pkt []byte, mss int) *stack.PacketBuffer {
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	typ := stack.GSOTCPv4
	if pkt[0]>>4 == 6 {
		typ = stack.GSOTCPv6
	}
	pb.GSOOptions = stack.GSO{Type: typ, NeedsCsum: true, MSS: uint16(mss), L3HdrLen: 20}
	return pb
}

func plainPacket(pkt []byte) *stack.PacketBuffer {
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
}

func newTestDevice(t testing.TB, cfg Config) *Device {
	t.Helper()
	if len(cfg.Gateways) == 0 {
		cfg.Gateways = []netip.Addr{gateway}
	}
	d, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestQueueRead: a super-segment larger than one Read's batch continues in
// the next Read, plain packets are copied whole, and the order is kept.
func TestQueueRead(t *testing.T) {
	d := newTestDevice(t, Config{MTU: 1500})
	q := d.Queues()[0]
	q.push(gsoPacket(superSegment(false, 10*1448, 0x18), 1448))
	plain := superSegment(false, 100, 0x10)
	packet.SetIPv4Checksum(plain)
	q.push(plainPacket(plain))
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500+64)
	}
	sizes := make([]int, 4)
	var got [][]byte
	for len(got) < 11 {
		n, err := q.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		if n > len(bufs) {
			t.Fatalf("Read returned %d packets for %d buffers", n, len(bufs))
		}
		for i := 0; i < n; i++ {
			got = append(got, append([]byte(nil), bufs[i][16:16+sizes[i]]...))
		}
	}
	for i, g := range got[:10] {
		var p packet.Parsed
		p.Decode(g)
		if p.PayloadLen() != 1448 || !p.L4ChecksumValid() {
			t.Errorf("segment %d: payload %d, checksum ok %v", i, p.PayloadLen(), p.L4ChecksumValid())
		}
	}
	if string(got[10]) != string(plain) {
		t.Error("the plain packet after the super-segment differs")
	}
	if st := d.Stats(); st.SuperSegments != 1 {
		t.Errorf("SuperSegments = %d", st.SuperSegments)
	}
}

// TestQueueLimits: packets beyond QueuePackets are dropped and counted,
// and a packet too big for the reader's buffers is dropped, not cut.
func TestQueueLimits(t *testing.T) {
	d := newTestDevice(t, Config{MTU: 1500, QueuePackets: 2})
	q := d.Queues()[0]
	small := superSegment(false, 10, 0x10)
	for i := 0; i < 3; i++ {
		p := plainPacket(small)
		q.push(p)
		p.DecRef()
	}
	if st := d.Stats(); st.QueueFull != 1 {
		t.Fatalf("QueueFull = %d, want 1", st.QueueFull)
	}
	big := plainPacket(superSegment(false, 3000, 0x10))
	q.mu.Lock()
	q.ring[0].DecRef()
	q.ring[0] = big // replace the first small packet by one too big
	q.mu.Unlock()
	bufs := [][]byte{make([]byte, 16+1500+64), make([]byte, 16+1500+64)}
	sizes := make([]int, 2)
	n, err := q.Read(bufs, sizes, 16)
	if err != nil || n != 1 || sizes[0] != len(small) {
		t.Fatalf("Read: %d packets (%v), sizes %v", n, err, sizes)
	}
	if st := d.Stats(); st.TooBig != 1 {
		t.Errorf("TooBig = %d", st.TooBig)
	}
}

// TestQueueInterruptAndClose: InterruptRead ends a blocked Read and every
// later one; Close ends Reads with os.ErrClosed.
func TestQueueInterruptAndClose(t *testing.T) {
	d := newTestDevice(t, Config{Queues: 2})
	q0, q1 := d.Queues()[0], d.Queues()[1]
	bufs := [][]byte{make([]byte, 2000)}
	sizes := []int{0}
	errc := make(chan error, 1)
	go func() {
		_, err := q0.Read(bufs, sizes, 16)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	q0.InterruptRead()
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("interrupted Read: %v", err)
	}
	if _, err := q0.Read(bufs, sizes, 16); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after InterruptRead: %v", err)
	}
	go func() {
		_, err := q1.Read([][]byte{make([]byte, 2000)}, []int{0}, 16)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	d.Close()
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read across Close: %v", err)
	}
	if _, err := q1.Write([][]byte{make([]byte, 100)}, 16); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// TestQueueWriteChecksums: packets with a bad checksum never reach
// netstack (it trusts the checksums of what Write hands over).
func TestQueueWriteChecksums(t *testing.T) {
	d := newTestDevice(t, Config{})
	q := d.Queues()[0]
	good := superSegment(false, 100, 0x02) // a SYN to 10.0.2.100:40000
	var p packet.Parsed
	p.Decode(good)
	p.SetL4Checksum()
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	badIP := append([]byte(nil), good...)
	badIP[10] ^= 0xff
	q.Write([][]byte{append(make([]byte, 16), bad...), append(make([]byte, 16), badIP...)}, 16)
	if st := d.Stats(); st.BadChecksum != 2 {
		t.Fatalf("BadChecksum = %d, want 2", st.BadChecksum)
	}
	if n := d.stack.Stats().IP.PacketsReceived.Value(); n != 0 {
		t.Fatalf("netstack received %d packets with bad checksums", n)
	}
	q.Write([][]byte{append(make([]byte, 16), good...)}, 16)
	if n := d.stack.Stats().IP.PacketsReceived.Value(); n != 1 {
		t.Fatalf("netstack received %d packets, want the good one", n)
	}
}

// TestQueueReadNoAllocs: reading plain packets and cutting super-segments
// allocates nothing.
func TestQueueReadNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	d := newTestDevice(t, Config{MTU: 1500})
	q := d.Queues()[0]
	const runs = 50
	var pkts []*stack.PacketBuffer
	for i := 0; i < runs+1; i++ {
		pkts = append(pkts, gsoPacket(superSegment(false, 64*1024-100, 0x18), 1448), plainPacket(superSegment(false, 1000, 0x10)))
	}
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500+64)
	}
	sizes := make([]int, len(bufs))
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		q.push(pkts[i])
		q.push(pkts[i+1])
		i += 2
		for q.n > 0 || q.cutting {
			q.Read(bufs, sizes, 16)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Read of a super-segment and a packet", allocs)
	}
	for _, p := range pkts {
		p.DecRef()
	}
}

// BenchmarkQueueRead measures cutting 64 KiB super-segments into the
// pipeline's buffers.
func BenchmarkQueueRead(b *testing.B) {
	d := newTestDevice(b, Config{MTU: 1500, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
	q := d.Queues()[0]
	seg := superSegment(false, 64*1024-100, 0x18)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500+64)
	}
	sizes := make([]int, len(bufs))
	b.ReportAllocs()
	b.SetBytes(int64(len(seg)))
	for b.Loop() {
		p := gsoPacket(seg, 1448)
		q.push(p)
		p.DecRef()
		for q.n > 0 || q.cutting {
			q.Read(bufs, sizes, 16)
		}
	}
}

// BenchmarkQueueWrite measures handing batches of MSS-sized segments of one
// flow to netstack (checksum checks, GRO, TCP input of an unknown flow:
// netstack answers each coalesced segment with a reset that is read and
// discarded).
func BenchmarkQueueWrite(b *testing.B) {
	d := newTestDevice(b, Config{MTU: 1500, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
	q := d.Queues()[0]
	const batch = 64
	bufs := make([][]byte, batch)
	var seq uint32
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500)
	}
	fill := func() {
		for i := range bufs {
			s := superSegment(false, 1448, 0x10)
			s[12], s[13], s[14], s[15], s[16], s[17], s[18], s[19] = 10, 0, 2, 100, 10, 0, 2, 2
			h := header.TCP(s[20:])
			h.SetSequenceNumber(seq)
			seq += 1448
			var p packet.Parsed
			p.Decode(s)
			packet.SetIPv4Checksum(s)
			p.SetL4Checksum()
			copy(bufs[i][16:], s)
			bufs[i] = bufs[i][:16+len(s)]
		}
	}
	fill()
	drain := make([][]byte, 64)
	for i := range drain {
		drain[i] = make([]byte, 2000)
	}
	sizes := make([]int, 64)
	b.ReportAllocs()
	b.SetBytes(batch * 1448)
	for b.Loop() {
		q.Write(bufs, 16)
		for q.n > 0 {
			q.Read(drain, sizes, 16)
		}
	}
}

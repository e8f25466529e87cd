package tundev

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// offloadIO is what the pipeline uses of a queue with offloads.
type offloadIO interface {
	Offloading() bool
	ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error)
	WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error)
}

func TestVNetHdrRoundTrip(t *testing.T) {
	for _, o := range []packet.Offload{
		{},
		{DataValid: true},
		{NeedsCsum: true, CsumStart: 20, CsumOffset: 6},
		{GSO: packet.GSOTCPv4, GSOSize: 1448, HdrLen: 52, NeedsCsum: true, CsumStart: 20, CsumOffset: 16},
		{GSO: packet.GSOTCPv4, ECN: true, GSOSize: 1448, HdrLen: 52, NeedsCsum: true, CsumStart: 20, CsumOffset: 16},
		{GSO: packet.GSOTCPv6, GSOSize: 1428, HdrLen: 72, NeedsCsum: true, CsumStart: 40, CsumOffset: 16},
		{GSO: packet.GSOUDPL4, GSOSize: 1000, HdrLen: 28, NeedsCsum: true, CsumStart: 20, CsumOffset: 6},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			// A packet the header fits: a TCP header of 32 bytes at
			// CsumStart (data offset 8).
			b := make([]byte, virtioNetHdrLen+200)
			b[virtioNetHdrLen+int(o.CsumStart)+12] = 8 << 4
			if o.GSO == packet.GSOTCPv4 || o.GSO == packet.GSOTCPv6 {
				o.HdrLen = o.CsumStart + 32
			}
			encodeVNetHdr(b, &o)
			var got packet.Offload
			if !decodeVNetHdr(b, &got) {
				t.Fatal("decode refused its own encoding")
			}
			if got != o {
				t.Fatalf("decoded %+v, want %+v", got, o)
			}
		})
	}
}

func TestVNetHdrRefused(t *testing.T) {
	hdr := func(flags, gso uint8, size, start, off uint16, n int) []byte {
		b := make([]byte, virtioNetHdrLen+n)
		b[0], b[1] = flags, gso
		binary.NativeEndian.PutUint16(b[4:], size)
		binary.NativeEndian.PutUint16(b[6:], start)
		binary.NativeEndian.PutUint16(b[8:], off)
		return b
	}
	for name, b := range map[string][]byte{
		"short":                   make([]byte, 4),
		"legacy UFO":              hdr(1, unix.VIRTIO_NET_HDR_GSO_UDP, 1000, 20, 6, 2000),
		"checksum past the end":   hdr(1, 0, 0, 20, 16, 30),
		"GSO without checksum":    hdr(0, unix.VIRTIO_NET_HDR_GSO_TCPV4, 1000, 20, 16, 2000),
		"GSO size zero":           hdr(1, unix.VIRTIO_NET_HDR_GSO_UDP_L4, 0, 20, 6, 2000),
		"TCP header past the end": hdr(1, unix.VIRTIO_NET_HDR_GSO_TCPV4, 1000, 20, 16, 40),
	} {
		t.Run(name, func(t *testing.T) {
			var o packet.Offload
			if name == "TCP header past the end" {
				b[virtioNetHdrLen+20+12] = 15 << 4 // a 60-byte TCP header in a 40-byte packet
			}
			if decodeVNetHdr(b, &o) {
				t.Fatalf("accepted: %+v", o)
			}
		})
	}
}

// TestOffloadIO sends a UDP GSO super-datagram from the namespace: one
// ReadOffload returns it whole with its metadata. Then WriteOffload sends
// a super-datagram the other way, with a partial checksum, and the
// socket receives every segment intact.
func TestOffloadIO(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	if !kernelAtLeast(t, 6, 2) {
		tundevtest.SkipOrFail(t, "UDP segmentation offload on TUN needs Linux 6.2+, have %s", kernelRelease(t))
	}
	d, nsPath := openRouted(t, false, 1)
	q, ok := d.Queues()[0].(offloadIO)
	if !ok || !q.Offloading() {
		t.Fatal("queue with offloads does not offer offload I/O")
	}
	const segSize, segs, offset = 1000, 8, 16
	c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9997))
	sc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	sc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, segSize) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	data := make([]byte, segSize*segs)
	for i := range data {
		data[i] = byte(i % 253)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}

	bufs := [][]byte{make([]byte, offset+65535), make([]byte, offset+65535)}
	sizes := make([]int, 2)
	offs := make([]packet.Offload, 2)
	deadline := time.Now().Add(5 * time.Second)
	var p *packet.Parsed
	for {
		if time.Now().After(deadline) {
			t.Fatal("no super-datagram read")
		}
		n, err := q.ReadOffload(bufs, sizes, offs, offset)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for i := 0; i < n; i++ {
			var x packet.Parsed
			x.Decode(bufs[i][offset : offset+sizes[i]])
			if x.Proto == packet.UDP && x.Key.DstPort == 9997 {
				p, found = &x, true
				offs[0] = offs[i]
				break
			}
		}
		if found {
			break
		}
	}
	want := packet.Offload{GSO: packet.GSOUDPL4, GSOSize: segSize, HdrLen: 28, NeedsCsum: true, CsumStart: 20, CsumOffset: 6}
	if offs[0] != want || p.Length != 28+segSize*segs || !bytes.Equal(p.Payload(), data) {
		t.Fatalf("read %d bytes with %+v, want %d with %+v", p.Length, offs[0], 28+segSize*segs, want)
	}

	// The other way: a super-datagram from the remote address to the
	// socket, checksum left partial.
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	back := pt.UDP4(netip.AddrPortFrom(remote4, 9997).String(), local.String(), data)
	bp := pt.MustDecode(back)
	sum := packet.PseudoHeaderSum(4, &bp.Key.Src, &bp.Key.Dst, packet.UDP, len(back)-20)
	binary.BigEndian.PutUint16(back[26:], uint16(sum))
	out := make([]byte, offset+len(back))
	copy(out[offset:], back)
	if n, err := q.WriteOffload([][]byte{out}, []packet.Offload{want}, offset); n != 1 || err != nil {
		t.Fatalf("WriteOffload: %d, %v", n, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 65535)
	for i := 0; i < segs; i++ {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if n != segSize {
			t.Fatalf("segment %d: %d bytes, want %d", i, n, segSize)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("segments differ from the data written")
	}
}

// TestOffloadIONoAllocs: ReadOffload and WriteOffload allocate nothing.
func TestOffloadIONoAllocs(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	d, nsPath := openRouted(t, false, 1)
	q := d.Queues()[0].(offloadIO)
	c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9996))
	const offset = 16
	bufs := [][]byte{make([]byte, offset+65535), make([]byte, offset+65535)}
	sizes := make([]int, 2)
	offs := make([]packet.Offload, 2)
	msg := []byte("ping")
	reply := make([]byte, offset+64)
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	r := pt.UDP4(netip.AddrPortFrom(remote4, 9996).String(), local.String(), msg)
	copy(reply[offset:], r)
	reply = reply[:offset+len(r)]
	rb, ro := [][]byte{reply}, []packet.Offload{{}}
	in := make([]byte, 64)
	round := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := q.ReadOffload(bufs, sizes, offs, offset); err != nil {
			t.Fatal(err)
		}
		if _, err := q.WriteOffload(rb, ro, offset); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(in); err != nil {
			t.Fatal(err)
		}
	}
	round() // settle: neighbour entries, the raw connection
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Fatalf("%.1f allocations per read+write", n)
	}
}

// TestOffloadIOBatches: packets already queued in the kernel come in one
// ReadOffload; after reads that found nothing more, a queue that builds up
// is still taken in batches within a few calls.
func TestOffloadIOBatches(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	d, nsPath := openRouted(t, false, 1)
	q := d.Queues()[0].(offloadIO)
	c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9995))
	const offset, batch = 16, 32
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, batch)
	offs := make([]packet.Offload, batch)
	ours := func(n int) int {
		k := 0
		for i := 0; i < n; i++ {
			var p packet.Parsed
			p.Decode(bufs[i][offset : offset+sizes[i]])
			if p.Proto == packet.UDP && p.Key.DstPort == 9995 {
				k++
			}
		}
		return k
	}
	burst := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Light load: one packet per call, so the reader stops looking for
	// more at every call.
	for i := 0; i < 3*probeEvery; i++ {
		burst(1)
		n, err := q.ReadOffload(bufs, sizes, offs, offset)
		if err != nil {
			t.Fatal(err)
		}
		if ours(n) != 1 {
			t.Fatalf("light load: read %d of our packets, want 1", ours(n))
		}
	}
	// A queue builds up: within probeEvery calls a call takes several.
	burst(2 * batch * probeEvery)
	most, total := 0, 0
	for i := 0; i <= probeEvery; i++ {
		n, err := q.ReadOffload(bufs, sizes, offs, offset)
		if err != nil {
			t.Fatal(err)
		}
		k := ours(n)
		most, total = max(most, k), total+k
	}
	if most < 2 {
		t.Fatalf("queued packets read one per call (%d in %d calls)", total, probeEvery+1)
	}
}

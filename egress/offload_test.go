package egress

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
)

// kernelSegments does to a packet with offload metadata what the kernel
// does with a virtio-net header: a TCP super-packet is cut into segments
// whose checksums are finished from the partial one the way tcp_gso_segment
// does (the partial sum covers the whole super-packet's length; each
// segment's is adjusted by the length difference, then the bytes from
// CsumStart are summed into it); a partial checksum of a single packet is
// finished from CsumStart. A wrong partial sum shows as a bad checksum the
// client stack drops.
func kernelSegments(t testing.TB, p []byte, o packet.Offload) [][]byte {
	p = append([]byte(nil), p...)
	finish := func(seg []byte, partial uint16, fullLen, segLen int) {
		c := seg[o.CsumStart+o.CsumOffset:]
		// partial + (segLen - fullLen) in ones' complement arithmetic.
		sum := uint32(partial) + uint32(^uint16(fullLen)) + uint32(segLen)
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(c, uint16(sum))
		binary.BigEndian.PutUint16(c, ^packet.Checksum(seg[o.CsumStart:], 0))
	}
	if !o.NeedsCsum {
		return [][]byte{p}
	}
	partial := binary.BigEndian.Uint16(p[o.CsumStart+o.CsumOffset:])
	l4 := len(p) - int(o.CsumStart)
	if o.GSO == packet.GSONone {
		finish(p, partial, l4, l4)
		return [][]byte{p}
	}
	if o.GSO != packet.GSOTCPv4 && o.GSO != packet.GSOTCPv6 {
		t.Errorf("unexpected GSO type %v", o.GSO)
		return nil
	}
	hdr := int(o.HdrLen)
	var out [][]byte
	seq := binary.BigEndian.Uint32(p[o.CsumStart+4:])
	flags := p[o.CsumStart+13]
	for off, i := hdr, 0; off < len(p); off, i = off+int(o.GSOSize), i+1 {
		end := min(off+int(o.GSOSize), len(p))
		seg := append(append([]byte(nil), p[:hdr]...), p[off:end]...)
		tcp := seg[o.CsumStart:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(off-hdr))
		f := flags
		if end != len(p) {
			f &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			f &^= tcpCWR
		}
		tcp[13] = f
		if o.GSO == packet.GSOTCPv4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
			packet.SetIPv4Checksum(seg)
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-40))
		}
		finish(seg, partial, l4, len(tcp))
		out = append(out, seg)
	}
	return out
}

// TestOffloadRelay: with the queues used through their offload methods,
// bulk TCP both ways arrives intact: netstack's super-segments leave with
// metadata that the kernel's segmentation turns into valid segments.
func TestOffloadRelay(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			r := newRigMode(t, baseConfig(), 1500, true)
			ln := hostListen(t, network)
			down := make([]byte, 4<<20)
			rand.Read(down)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write(down)
				c.Close()
			}()
			c, err := r.dial(viaGateway(ln.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, down) {
				t.Fatalf("download: %d of %d bytes, %v", len(got), len(down), err)
			}
			if st := r.dev.Stats(); st.SuperSegments == 0 || st.Malformed != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestReadOffloadMetadata: ReadOffload returns a super-segment whole,
// with the metadata of a TSO packet, and a small segment with just its
// partial checksum.
func TestReadOffloadMetadata(t *testing.T) {
	d := newTestDevice(t, Config{MTU: 1500})
	q := d.Queues()[0]
	big := superSegment(false, 5000, 0x18|tcpCWR)
	small := superSegment(true, 100, 0x18)
	q.push(gsoPacket(big, 1448))
	q.push(gsoPacket(small, 1428))
	bufs := [][]byte{make([]byte, 16+65536), make([]byte, 16+65536)}
	sizes := make([]int, 2)
	offs := make([]packet.Offload, 2)
	n, err := q.ReadOffload(bufs, sizes, offs, 16)
	if err != nil || n != 2 {
		t.Fatalf("ReadOffload: %d, %v", n, err)
	}
	if !bytes.Equal(bufs[0][16:16+sizes[0]], big) {
		t.Error("the super-segment was changed")
	}
	want := packet.Offload{GSO: packet.GSOTCPv4, ECN: true, GSOSize: 1448, HdrLen: 52, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
	if offs[0] != want {
		t.Errorf("metadata\n got %+v\nwant %+v", offs[0], want)
	}
	want = packet.Offload{NeedsCsum: true, CsumStart: 40, CsumOffset: 16}
	if offs[1] != want {
		t.Errorf("small segment metadata\n got %+v\nwant %+v", offs[1], want)
	}
}

// udpSuper builds a UDP super-datagram (USO) from the client to dst with
// the given datagram payload sizes (all but the last equal to size).
func udpSuper(dst netip.AddrPort, size, n, last int) ([]byte, packet.Offload) {
	payload := size*(n-1) + last
	b := make([]byte, 28+payload)
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := clientAddr.As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	packet.SetIPv4Checksum(b)
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	for i := range payload {
		b[28+i] = byte(i / size)
	}
	return b, packet.Offload{GSO: packet.GSOUDPL4, GSOSize: uint16(size), HdrLen: 28, NeedsCsum: true, CsumStart: 20, CsumOffset: 6}
}

// TestWriteOffloadUSO: a UDP super-datagram from inside reaches the host
// as its datagrams, in order.
func TestWriteOffloadUSO(t *testing.T) {
	r := newRigMode(t, baseConfig(), 1500, true)
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dst := netip.AddrPortFrom(gateway, uint16(srv.LocalAddr().(*net.UDPAddr).Port))
	p, o := udpSuper(dst, 1000, 4, 321)
	q := r.dev.Queues()[1]
	if _, err := q.WriteOffload([][]byte{append(make([]byte, 16), p...)}, []packet.Offload{o}, 16); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	for i, want := range []int{1000, 1000, 1000, 321} {
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := srv.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if n != want || buf[0] != byte(i) || buf[n-1] != byte(i) {
			t.Fatalf("datagram %d: %d bytes starting %d, want %d bytes of %d", i, n, buf[0], want, i)
		}
	}
}

// TestWriteOffloadTrust: a packet whose metadata vouches for its checksum
// (partial, or verified by the sender) is not verified again; one without
// is.
func TestWriteOffloadTrust(t *testing.T) {
	d := newTestDevice(t, Config{})
	q := d.Queues()[0]
	seg := superSegment(false, 100, 0x02) // checksum field holds garbage
	for _, tc := range []struct {
		o       packet.Offload
		dropped bool
	}{
		{packet.Offload{}, true},
		{packet.Offload{DataValid: true}, false},
		{packet.Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, false},
	} {
		before := d.Stats().BadChecksum
		q.WriteOffload([][]byte{append(make([]byte, 16), seg...)}, []packet.Offload{tc.o}, 16)
		if dropped := d.Stats().BadChecksum > before; dropped != tc.dropped {
			t.Errorf("%+v: dropped %v, want %v", tc.o, dropped, tc.dropped)
		}
	}
}

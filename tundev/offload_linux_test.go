package tundev

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/tunrouter/router/tundev/tundevtest"
	"golang.org/x/sys/unix"
)

// offloadCases are the two modes every offload test runs in.
var offloadCases = []struct {
	name      string
	noOffload bool
}{
	{"offload", false},
	{"no-offload", true},
}

func openRouted(t *testing.T, noOffload bool, queues int) (*Device, string) {
	t.Helper()
	_, nsPath := tundevtest.NewNetns(t, "tundev")
	d := openTest(t, Config{
		Name:      "rt0",
		Netns:     nsPath,
		MTU:       1400,
		Addresses: []netip.Prefix{nsAddr4},
		Routes:    []netip.Prefix{route4},
		Queues:    queues,
		NoOffload: noOffload,
		Up:        true,
	})
	return d, nsPath
}

func TestOffloadsReported(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := openRouted(t, tc.noOffload, 1)
			o, err := d.Offloads()
			if err != nil {
				t.Fatalf("Offloads: %v", err)
			}
			on := !tc.noOffload
			if o.VNetHdr != on || o.Checksum != on || o.TSO4 != on || o.TSO6 != on {
				t.Errorf("Offloads() = %v, want all TCP offloads %v", o, on)
			}
			// wireguard enables USO when the kernel supports it (6.2+).
			if want := on && kernelAtLeast(t, 6, 2); o.USO != want {
				t.Errorf("USO = %v, want %v (kernel %s)", o.USO, want, kernelRelease(t))
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Offloads(); err == nil {
				t.Errorf("Offloads after Close: no error")
			}
		})
	}
}

// TestUSORead sends one UDP GSO super-datagram (UDP_SEGMENT) from the
// namespace. With offloads the TUN receives it whole and one Read splits it
// into all segments; without, the kernel segments it first and every Read
// yields one packet. Either way the segments carry the data in order with
// valid checksums.
func TestUSORead(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	if !kernelAtLeast(t, 6, 2) {
		tundevtest.SkipOrFail(t, "UDP segmentation offload on TUN needs Linux 6.2+, have %s", kernelRelease(t))
	}
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			d, nsPath := openRouted(t, tc.noOffload, 1)
			pkts := startReaders(t, d)
			const segSize, segs = 1000, 8
			c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9998))
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
				data[i] = byte(i % 251)
			}
			if _, err := c.Write(data); err != nil {
				t.Fatalf("GSO send: %v", err)
			}
			var got []byte
			for i := 0; i < segs; i++ {
				r := waitFor(t, pkts, "UDP segment", func(r received, p pkt4) bool {
					_, dport := p.ports()
					return p.proto == protoUDP && dport == 9998
				})
				p, _ := parse4(r.data)
				if len(p.l4) != 8+segSize || !ipHeaderOK(r.data) || !p.l4ChecksumOK() {
					t.Fatalf("segment %d: udp length %d (want %d), ip csum %v, udp csum %v",
						i, len(p.l4), 8+segSize, ipHeaderOK(r.data), p.l4ChecksumOK())
				}
				if tc.noOffload && r.batch != 1 {
					t.Errorf("segment %d came in a Read of %d packets without offloads", i, r.batch)
				}
				if !tc.noOffload && r.batch != segs {
					t.Errorf("segment %d came in a Read of %d packets, want the whole super-datagram (%d) at once", i, r.batch, segs)
				}
				got = append(got, p.l4[8:]...)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("reassembled payload differs from what was sent")
			}
		})
	}
}

// TestTCPOffload runs a TCP connection from a socket in the namespace to a
// peer that the test plays by hand through the TUN. With offloads the
// kernel hands the TUN TSO super-segments, so some Read yields several
// segments; without, every Read yields one. In the other direction a batch
// of data segments written in one Write call (coalesced by GRO when
// offloads are on) must reach the socket intact.
func TestTCPOffload(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			d, nsPath := openRouted(t, tc.noOffload, 1)
			q := d.Queues()[0]
			pkts := startReaders(t, d)
			peer := netip.AddrPortFrom(remote4, 80)

			type dialed struct {
				c   net.Conn
				err error
			}
			dc := make(chan dialed, 1)
			go func() {
				var c net.Conn
				err := tundevtest.InNetns(nsPath, func() error {
					var err error
					c, err = net.DialTimeout("tcp4", peer.String(), 5*time.Second)
					return err
				})
				dc <- dialed{c, err}
			}()

			syn := waitFor(t, pkts, "SYN", func(r received, p pkt4) bool {
				_, dport := p.ports()
				_, _, fl, _, ok := p.tcpFields()
				return ok && dport == 80 && fl&tcpSYN != 0
			})
			sp, _ := parse4(syn.data)
			sport, _ := sp.ports()
			cliSeq, _, _, _, _ := sp.tcpFields()
			local := netip.AddrPortFrom(sp.src, sport)
			const mss = 1360
			srvSeq := uint32(1000)
			writePacket(t, q, func(b []byte) int {
				return tcp4(b, peer, local, srvSeq, cliSeq+1, tcpSYN|tcpACK, 65535, mss, nil)
			})
			dr := <-dc
			if dr.err != nil {
				t.Fatalf("dial through TUN: %v", dr.err)
			}
			conn := dr.c
			t.Cleanup(func() { conn.Close() })
			srvSeq++
			cliSeq++

			// Namespace -> TUN: a 64 KiB write goes out as TSO super-segments.
			out := make([]byte, 64<<10)
			for i := range out {
				out[i] = byte(i % 253)
			}
			go conn.Write(out) // blocks once the window is full; ends on Close
			var segs []pkt4
			maxBatch := 0
			deadline := time.After(5 * time.Second)
		collect:
			for len(segs) < 10 {
				select {
				case r := <-pkts:
					p, ok := parse4(r.data)
					if !ok || p.proto != protoTCP {
						continue
					}
					if _, _, _, payload, ok := p.tcpFields(); !ok || len(payload) == 0 {
						continue
					}
					if !ipHeaderOK(r.data) || !p.l4ChecksumOK() {
						t.Fatalf("data segment with bad checksum")
					}
					if p.totalLen > 1400 {
						t.Fatalf("segment of %d bytes exceeds the MTU", p.totalLen)
					}
					maxBatch = max(maxBatch, r.batch)
					segs = append(segs, p)
				case <-deadline:
					break collect
				}
			}
			if len(segs) == 0 {
				t.Fatal("no TCP data reached the TUN")
			}
			t.Logf("%d data segments, at most %d per Read", len(segs), maxBatch)
			if tc.noOffload && maxBatch != 1 {
				t.Errorf("a Read returned %d packets without offloads", maxBatch)
			}
			if !tc.noOffload && maxBatch < 2 {
				t.Errorf("no Read returned more than one segment: TSO super-segments were not split (max batch %d)", maxBatch)
			}
			// Segments are contiguous from the first byte and carry the
			// written data.
			sort.Slice(segs, func(i, j int) bool {
				a, _, _, _, _ := segs[i].tcpFields()
				b, _, _, _, _ := segs[j].tcpFields()
				return int32(a-b) < 0
			})
			next := cliSeq
			for _, p := range segs {
				seq, _, _, payload, _ := p.tcpFields()
				if seq != next {
					break // later segments may be missing from the sample
				}
				off := int(seq - cliSeq)
				if !bytes.Equal(payload, out[off:off+len(payload)]) {
					t.Fatalf("segment at offset %d carries wrong data", off)
				}
				next += uint32(len(payload))
			}
			if next == cliSeq {
				t.Fatalf("first data segment (seq %d) missing", cliSeq)
			}

			// TUN -> namespace: 8 in-order segments in one Write.
			const n, size = 8, 1000
			in := make([]byte, n*size)
			for i := range in {
				in[i] = byte(i%241) + 7
			}
			bufs := make([][]byte, n)
			for i := range bufs {
				// Room to grow: GRO appends the following segments'
				// payloads to the first packet's buffer.
				b := make([]byte, testOffset+65535)
				flags := uint8(tcpACK)
				if i == n-1 {
					flags |= tcpPSH
				}
				l := tcp4(b[testOffset:], peer, local, srvSeq+uint32(i*size), cliSeq, flags, 65535, 0, in[i*size:(i+1)*size])
				bufs[i] = b[:testOffset+l]
			}
			written, err := q.Write(bufs, testOffset)
			if err != nil {
				t.Fatalf("batch Write: %v", err)
			}
			// Write reports the bytes handed to the kernel: with offloads
			// one coalesced super-segment behind a virtio-net header,
			// without offloads the eight segments one by one.
			wantWritten := n * (40 + size)
			if !tc.noOffload {
				wantWritten = virtioNetHdrLen + 40 + n*size
			}
			if written != wantWritten {
				t.Errorf("Write wrote %d bytes, want %d (offloads %v: GRO coalescing %s)",
					written, wantWritten, !tc.noOffload, map[bool]string{true: "expected", false: "not expected"}[!tc.noOffload])
			}
			got := make([]byte, 0, len(in))
			buf := make([]byte, 4096)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(got) < len(in) {
				k, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("socket read after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:k]...)
			}
			if !bytes.Equal(got, in) {
				t.Errorf("socket received different bytes than the batch written to the TUN")
			}
		})
	}
}

func kernelRelease(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var ma, mi int
	if _, err := fmt.Sscanf(kernelRelease(t), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("parse kernel release %q: %v", kernelRelease(t), err)
	}
	return ma > major || (ma == major && mi >= minor)
}

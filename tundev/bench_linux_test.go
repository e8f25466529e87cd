package tundev

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// echoLoop writes an ICMP echo request to the namespace's address through q
// and reads until the reply comes back, with buffers allocated once.
type echoLoop struct {
	q     tun.Device
	wbufs [][]byte
	rbufs [][]byte
	sizes []int
	err   error
}

func newEchoLoop(q tun.Device) *echoLoop {
	e := &echoLoop{q: q, rbufs: make([][]byte, q.BatchSize()), sizes: make([]int, q.BatchSize())}
	w := make([]byte, testOffset+256)
	n := echo4(w[testOffset:], remote4, localAddr, 0x77, 1, []byte("allocation-free round trip"))
	e.wbufs = [][]byte{w[:testOffset+n]}
	for i := range e.rbufs {
		e.rbufs[i] = make([]byte, testOffset+65535)
	}
	return e
}

// roundTrip reports failures in e.err (it runs inside AllocsPerRun and
// benchmarks, where t.Fatal is not usable).
func (e *echoLoop) roundTrip() {
	if _, err := e.q.Write(e.wbufs, testOffset); err != nil {
		e.err = err
		return
	}
	for {
		n, err := e.q.Read(e.rbufs, e.sizes, testOffset)
		if err != nil {
			e.err = err
			return
		}
		for i := 0; i < n; i++ {
			p := e.rbufs[i][testOffset : testOffset+e.sizes[i]]
			// IPv4, ICMP, echo reply, our id.
			if len(p) >= 28 && p[0] == 0x45 && p[9] == protoICMP && p[20] == 0 && binary.BigEndian.Uint16(p[24:]) == 0x77 {
				return
			}
		}
	}
}

// TestNoAllocs checks that a Write and Read through a queue (wireguard's
// batch path plus tundev's queue wrapper) allocate nothing per packet.
func TestNoAllocs(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := openRouted(t, tc.noOffload, 1)
			e := newEchoLoop(d.Queues()[0])
			e.roundTrip() // warm up
			allocs := testing.AllocsPerRun(200, e.roundTrip)
			if e.err != nil {
				t.Fatalf("round trip: %v", e.err)
			}
			if allocs != 0 {
				t.Errorf("%.1f allocations per echo round trip, want 0", allocs)
			}
		})
	}
}

// BenchmarkEchoRoundTrip measures one packet written to the TUN, answered
// by the kernel and read back.
func BenchmarkEchoRoundTrip(b *testing.B) {
	tundevtest.RequirePrivileges(b)
	for _, tc := range offloadCases {
		b.Run(tc.name, func(b *testing.B) {
			d := openBench(b, tc.noOffload)
			e := newEchoLoop(d.Queues()[0])
			b.ReportAllocs()
			for b.Loop() {
				e.roundTrip()
			}
			if e.err != nil {
				b.Fatal(e.err)
			}
		})
	}
}

// BenchmarkReadUSO measures the kernel -> TUN -> Read path for bulk UDP:
// every op sends one 32-segment UDP GSO datagram from a socket in the
// namespace and reads all 32 packets. With offloads the TUN gets one
// super-packet and Read splits it; without, the kernel segments and Read
// returns one packet per call.
func BenchmarkReadUSO(b *testing.B) {
	tundevtest.RequirePrivileges(b)
	const segs, segSize = 32, 1372
	for _, tc := range offloadCases {
		b.Run(tc.name, func(b *testing.B) {
			d, nsPath := openBenchNs(b, tc.noOffload)
			q := d.Queues()[0]
			var c *net.UDPConn
			err := tundevtest.InNetns(nsPath, func() error {
				var err error
				c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote4, 9997)))
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sc, _ := c.SyscallConn()
			var serr error
			sc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, segSize) })
			if serr != nil {
				b.Fatal(serr)
			}
			payload := make([]byte, segs*segSize)
			bufs := make([][]byte, q.BatchSize())
			sizes := make([]int, q.BatchSize())
			for i := range bufs {
				bufs[i] = make([]byte, testOffset+65535)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := c.Write(payload); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < segs; {
					n, err := q.Read(bufs, sizes, testOffset)
					if err != nil {
						b.Fatal(err)
					}
					for i := 0; i < n; i++ {
						p := bufs[i][testOffset : testOffset+sizes[i]]
						if len(p) == 20+8+segSize && p[9] == protoUDP {
							got++
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*segs), "ns/pkt")
		})
	}
}

// BenchmarkWriteUDPBatch measures the Write -> TUN -> kernel path: every op
// writes a batch of 64 UDP packets of one flow to a socket in the namespace.
// With offloads wireguard coalesces them (UDP GRO) into few write(2) calls.
func BenchmarkWriteUDPBatch(b *testing.B) {
	tundevtest.RequirePrivileges(b)
	const batch, size = 64, 1200
	for _, tc := range offloadCases {
		b.Run(tc.name, func(b *testing.B) {
			d, nsPath := openBenchNs(b, tc.noOffload)
			q := d.Queues()[0]
			var ln *net.UDPConn
			err := tundevtest.InNetns(nsPath, func() error {
				var err error
				ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localAddr, 5555)))
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			ln.SetReadBuffer(8 << 20)
			go func() { // drain so that the socket never becomes the bottleneck
				buf := make([]byte, 65536)
				for {
					if _, err := ln.Read(buf); errors.Is(err, net.ErrClosed) {
						return
					}
				}
			}()
			// GRO rewrites the batch in place (it appends payloads to the
			// first packet of each run), so every op restores the packets
			// from pristine copies; the buffers have room to grow.
			bufs := make([][]byte, batch)
			pristine := make([][]byte, batch)
			src := netip.AddrPortFrom(remote4, 4444)
			dst := netip.AddrPortFrom(localAddr, 5555)
			for i := range bufs {
				p := make([]byte, testOffset+20+8+size)
				udp4(p[testOffset:], src, dst, uint16(i), make([]byte, size))
				pristine[i] = p
				bufs[i] = make([]byte, len(p), testOffset+65535)
			}
			b.ReportAllocs()
			b.SetBytes(batch * size)
			for b.Loop() {
				for i := range bufs {
					bufs[i] = bufs[i][:len(pristine[i])]
					copy(bufs[i], pristine[i])
				}
				if _, err := q.Write(bufs, testOffset); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/pkt")
		})
	}
}

func openBench(b *testing.B, noOffload bool) *Device {
	d, _ := openBenchNs(b, noOffload)
	return d
}

func openBenchNs(b *testing.B, noOffload bool) (*Device, string) {
	b.Helper()
	_, nsPath := tundevtest.NewNetns(b, "tundevb")
	d, err := Open(Config{
		Name: "rt0", Netns: nsPath, MTU: 1500, Up: true, NoOffload: noOffload,
		Addresses: []netip.Prefix{nsAddr4}, Routes: []netip.Prefix{route4},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d, nsPath
}

package egress

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunrouter/router/packet"
)

// superSegment builds a TCP super-segment as netstack hands it over: the
// IP header, a TCP header with options, the payload, and only a (wrong)
// partial value in the TCP checksum field.
func superSegment(v6 bool, payload int, flags uint8) []byte {
	const tcpLen = 32 // with 12 bytes of options (timestamps)
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	b := make([]byte, ipLen+tcpLen+payload)
	if v6 {
		b[0], b[6], b[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(b[4:], uint16(tcpLen+payload))
		s, d := netip.MustParseAddr("fd00::2").As16(), netip.MustParseAddr("fd00::100").As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
	} else {
		b[0], b[8], b[9] = 0x45, 64, 6
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], 0xfff0) // wraps while cutting
		b[6] = 0x40                               // DF
		copy(b[12:], []byte{10, 0, 2, 2})
		copy(b[16:], []byte{10, 0, 2, 100})
		packet.SetIPv4Checksum(b)
	}
	tcp := b[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], 5201)
	binary.BigEndian.PutUint16(tcp[2:], 40000)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // wraps too
	binary.BigEndian.PutUint32(tcp[8:], 12345)
	tcp[12] = tcpLen / 4 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 1000)
	binary.BigEndian.PutUint16(tcp[16:], 0xbeef)
	tcp[20], tcp[21], tcp[22], tcp[23] = 1, 1, 8, 10 // NOP NOP TS
	for i := range payload {
		b[ipLen+tcpLen+i] = byte(i * 7)
	}
	return b
}

// cutAll cuts pkt into segments of mss, each in its own buffer.
func cutAll(t testing.TB, pkt []byte, mss int) [][]byte {
	t.Helper()
	var s tcpSplitter
	if !s.init(pkt, mss) {
		t.Fatalf("init refused the packet")
	}
	var out [][]byte
	for s.remaining() > 0 {
		buf := make([]byte, 65536)
		n := s.writeNext(buf)
		if n == 0 {
			t.Fatal("writeNext wrote nothing")
		}
		out = append(out, buf[:n])
	}
	return out
}

func TestSplitTCP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		payload int
		mss     int
		flags   uint8
		want    int // segments
	}{
		{"v4-exact-multiple", false, 1448 * 4, 1448, 0x18, 4},
		{"v4-remainder", false, 1448*4 + 1, 1448, 0x18, 5},
		{"v4-one-byte", false, 1, 1448, 0x18, 1},
		{"v4-no-payload-ack", false, 0, 1448, 0x10, 1},
		{"v4-fin-psh-cwr", false, 5000, 1000, 0x80 | 0x10 | 0x08 | 0x01, 5},
		{"v4-max", false, 65535 - 52, 1448, 0x18, 46},
		{"v6-remainder", true, 10000, 1428, 0x18, 8},
		{"v6-fin", true, 3000, 1428, 0x11, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := superSegment(tc.v6, tc.payload, tc.flags)
			orig := append([]byte(nil), pkt...)
			segs := cutAll(t, pkt, tc.mss)
			if !bytes.Equal(pkt, orig) {
				t.Fatal("the super-segment was modified")
			}
			if len(segs) != tc.want {
				t.Fatalf("%d segments, want %d", len(segs), tc.want)
			}
			var payload []byte
			for i, s := range segs {
				var p packet.Parsed
				p.Decode(s)
				if p.Err != packet.ErrNone || p.Proto != packet.TCP {
					t.Fatalf("segment %d does not decode: %v", i, p.Err)
				}
				if !p.L4ChecksumValid() {
					t.Errorf("segment %d: bad TCP checksum", i)
				}
				if p.PayloadLen() > tc.mss {
					t.Errorf("segment %d: payload %d > mss %d", i, p.PayloadLen(), tc.mss)
				}
				wantSeq := 0xfffff000 + uint32(len(payload))
				if p.Seq != wantSeq {
					t.Errorf("segment %d: seq %#x, want %#x", i, p.Seq, wantSeq)
				}
				if p.Ack != 12345 || p.Key.SrcPort != 5201 || p.Key.DstPort != 40000 {
					t.Errorf("segment %d: header fields changed", i)
				}
				last, first := i == len(segs)-1, i == 0
				f := uint8(p.TCPFlags)
				if (f&tcpFIN != 0) != (last && tc.flags&tcpFIN != 0) || (f&tcpPSH != 0) != (last && tc.flags&tcpPSH != 0) {
					t.Errorf("segment %d: flags %v: FIN/PSH belong on the last segment only", i, p.TCPFlags)
				}
				if (f&tcpCWR != 0) != (first && tc.flags&tcpCWR != 0) {
					t.Errorf("segment %d: flags %v: CWR belongs on the first segment only", i, p.TCPFlags)
				}
				if !tc.v6 {
					if id := binary.BigEndian.Uint16(s[4:]); id != 0xfff0+uint16(i) {
						t.Errorf("segment %d: IP id %#x", i, id)
					}
					if s[6] != 0x40 {
						t.Errorf("segment %d: DF lost", i)
					}
				}
				if !bytes.Equal(s[p.L4Off+20:p.L4Off+32], orig[p.L4Off+20:p.L4Off+32]) {
					t.Errorf("segment %d: TCP options changed", i)
				}
				payload = append(payload, p.Payload()...)
			}
			ipLen := 20
			if tc.v6 {
				ipLen = 40
			}
			if !bytes.Equal(payload, orig[ipLen+32:]) {
				t.Error("the segments' payloads do not add up to the original")
			}
		})
	}
}

func TestSplitTCPRejects(t *testing.T) {
	good := superSegment(false, 3000, 0x18)
	for _, tc := range []struct {
		name string
		pkt  []byte
		mss  int
	}{
		{"empty", nil, 1448},
		{"mss-zero", good, 0},
		{"udp", func() []byte { b := append([]byte(nil), good...); b[9] = 17; return b }(), 1448},
		{"ip-options", func() []byte { b := append([]byte(nil), good...); b[0] = 0x46; return b }(), 1448},
		{"total-length-mismatch", good[:len(good)-1], 1448},
		{"short-tcp-header", func() []byte { b := append([]byte(nil), good...); b[32] = 4 << 4; return b }(), 1448},
		{"version", func() []byte { b := append([]byte(nil), good...); b[0] = 0x55; return b }(), 1448},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s tcpSplitter
			if s.init(tc.pkt, tc.mss) {
				t.Fatal("init accepted the packet")
			}
		})
	}
	var s tcpSplitter
	if !s.init(good, 1000) {
		t.Fatal("init refused a good packet")
	}
	if n := s.writeNext(make([]byte, 100)); n != 0 {
		t.Fatalf("writeNext into a too small buffer wrote %d bytes", n)
	}
}

func TestSplitTCPNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	pkt := superSegment(false, 65000, 0x18)
	buf := make([]byte, 2000)
	var s tcpSplitter
	allocs := testing.AllocsPerRun(100, func() {
		s.init(pkt, 1448)
		for s.remaining() > 0 {
			s.writeNext(buf)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per super-segment", allocs)
	}
}

func FuzzSplitTCP(f *testing.F) {
	f.Add(superSegment(false, 3000, 0x18), uint16(1448))
	f.Add(superSegment(true, 3000, 0x19), uint16(500))
	f.Add(superSegment(false, 0, 0x10), uint16(1))
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16) {
		var s tcpSplitter
		if !s.init(pkt, int(mss)) {
			return
		}
		total := 0
		buf := make([]byte, 65536+64)
		for s.remaining() > 0 {
			n := s.writeNext(buf)
			if n == 0 || n > s.hdrLen+int(mss) {
				t.Fatalf("segment of %d bytes (headers %d, mss %d)", n, s.hdrLen, mss)
			}
			total += n - s.hdrLen
		}
		if total != len(pkt)-s.hdrLen {
			t.Fatalf("segments carry %d payload bytes, want %d", total, len(pkt)-s.hdrLen)
		}
	})
}

func BenchmarkSplitTCP(b *testing.B) {
	pkt := superSegment(false, 65000, 0x18)
	buf := make([]byte, 2000)
	var s tcpSplitter
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		s.init(pkt, 1448)
		for s.remaining() > 0 {
			s.writeNext(buf)
		}
	}
}

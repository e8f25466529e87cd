package conntrack

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
)

// Benchmarks of the connection table. Packets are decoded once; each
// iteration updates the decoded fields the tracker reads (sequence numbers,
// or the tuple for new flows), so the numbers are Track+Commit alone, not
// Decode. Checksums are reported verified (ChecksumVerified): checksum
// cost is the packet package's and grows with the payload.
//
// Run with -benchtime=1x for the 1M-entry memory and reap benchmarks.

var benchSink Result

// cpuClock reads this thread's CPU time (CLOCK_THREAD_CPUTIME_ID). The
// benchmarks pin their goroutine to a thread and report "cpu-ns/op" from
// it next to the wall-clock ns/op, which a shared, loaded machine
// inflates.
func cpuClock() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// cpuMeter measures a benchmark loop's CPU time on its (locked) thread;
// pause and resume exclude untimed work from it, like StopTimer and
// StartTimer for the wall clock.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
	total time.Duration
}

// The CPU clock is read inside the wall-clock timer's window: StopTimer
// and StartTimer read the memory statistics, which stops the world.
func (m *cpuMeter) pause() {
	m.total += cpuClock() - m.start
	m.b.StopTimer()
}

func (m *cpuMeter) resume() {
	m.b.StartTimer()
	m.start = cpuClock()
}

// cpuTimed runs the benchmark loop pinned to one thread and reports its
// CPU time per iteration as "cpu-ns/op".
func cpuTimed(b *testing.B, loop func(m *cpuMeter)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	m := &cpuMeter{b: b, start: cpuClock()}
	loop(m)
	m.pause()
	b.ReportMetric(float64(m.total)/float64(b.N), "cpu-ns/op")
}

// BenchmarkTrack measures one packet through Track+Commit.
func BenchmarkTrack(b *testing.B) {
	b.Run("established-tcp4", func(b *testing.B) { benchEstablished(b, tbCli4+":40000", tbSrv4+":80") })
	b.Run("established-tcp6", func(b *testing.B) { benchEstablished(b, "["+tbCli6+"]:40000", "["+tbSrv6+"]:80") })
	b.Run("established-udp4", func(b *testing.B) {
		h := newTB(b, func(_ *Config, o *TableOptions) { o.Events = nil })
		pkts := [2]*packet.Parsed{tbDecode(udp4(tbCli4+":5000", tbSrv4+":53")), tbDecode(udp4(tbSrv4+":53", tbCli4+":5000"))}
		args := TrackArgs{Now: h.now, ChecksumVerified: true}
		cpuTimed(b, func(m *cpuMeter) {
			for i := 0; i < b.N; i++ {
				p := pkts[i&1]
				r := h.tab.Track(p, args)
				h.tab.Commit(&r, p, h.now)
				benchSink = r
			}
		})
	})
	for _, max := range []int{1 << 12, 1 << 20} {
		b.Run("new-tcp4/max="+strconv.Itoa(max), func(b *testing.B) {
			syn := tbDecode(packettest.TCP(tbCli4+":40000", tbSrv4+":80", packettest.TCPOpts{Flags: fSYN, Seq: 1, Win: 65535, WScale: 7, MSS: 1460}))
			benchNew(b, syn, max)
		})
		b.Run("new-udp4/max="+strconv.Itoa(max), func(b *testing.B) {
			benchNew(b, tbDecode(udp4(tbCli4+":5000", tbSrv4+":53")), max)
		})
	}
}

// benchEstablished alternates in-window client data (100 bytes) and the
// server's ACK of it on one established connection.
func benchEstablished(b *testing.B, cli, srv string) {
	h := newTB(b, func(_ *Config, o *TableOptions) { o.Events = nil })
	x := newTBTCP(cli, srv, 1000, 50000)
	h.handshake(x)
	data := tbDecode(x.cl(fACK|fPSH, 100))
	ack := tbDecode(x.sv(fACK, 0))
	cseq := data.Seq
	args := TrackArgs{Now: h.now, ChecksumVerified: true}
	bad := 0
	cpuTimed(b, func(m *cpuMeter) {
		for i := 0; i < b.N; i++ {
			p := ack
			if i&1 == 0 {
				data.Seq = cseq
				cseq += 100
				p = data
			} else {
				ack.Ack = cseq
			}
			r := h.tab.Track(p, args)
			h.tab.Commit(&r, p, h.now)
			if r.Info == Invalid {
				bad++
			}
		}
	})
	if bad != 0 {
		b.Fatalf("%d INVALID packets", bad)
	}
}

// benchNew creates a new entry per iteration (a new source address each
// time) and confirms it, in a table of max entries flushed (untimed) when
// half full.
func benchNew(b *testing.B, p *packet.Parsed, max int) {
	h := newTB(b, func(_ *Config, o *TableOptions) { o.Events = nil; o.Max = max })
	args := TrackArgs{Now: h.now, ChecksumVerified: true}
	// Grow the slab once so that the timed loop measures steady state.
	for i := 0; i < max/2; i++ {
		setBenchSrc(p, uint32(i))
		r := h.tab.Track(p, args)
		h.tab.Commit(&r, p, h.now)
	}
	h.tab.Flush()
	cpuTimed(b, func(m *cpuMeter) {
		for i := 0; i < b.N; i++ {
			if i%(max/2) == max/2-1 {
				m.pause()
				h.tab.Flush()
				m.resume()
			}
			setBenchSrc(p, uint32(i))
			r := h.tab.Track(p, args)
			if r.Info != New {
				b.Fatalf("iteration %d: %v %v", i, r.Info, r.Reason)
			}
			h.tab.Commit(&r, p, h.now)
		}
	})
}

// setBenchSrc gives the packet the IPv4 source 10.x.y.z for flow i.
func setBenchSrc(p *packet.Parsed, i uint32) {
	p.Key.Src[0], p.Key.Src[1], p.Key.Src[2], p.Key.Src[3] = 10, byte(i>>16), byte(i>>8), byte(i)
}

// bench1M is a table of 2^20 established TCP connections (client 10.x.y.z
// port 40000 + flow/2^24 to 192.0.2.1:80), built once and shared by the
// lookup benchmark's runs, with each flow's next client sequence number.
var bench1M struct {
	once sync.Once
	tab  *Table
	now  int64
	seq  []uint32
	data *packet.Parsed
}

const bench1MFlows = 1 << 20

func build1M(tb testing.TB) {
	bench1M.once.Do(func() {
		h := newTB(tb, func(_ *Config, o *TableOptions) { o.Events = nil; o.Max = bench1MFlows })
		args := TrackArgs{Now: h.now, ChecksumVerified: true}
		x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1000, 50000)
		syn, synack, ack := tbDecode(x.cl(fSYN, 0)), tbDecode(x.sv(fSYN|fACK, 0)), tbDecode(x.cl(fACK, 0))
		bench1M.data = tbDecode(x.cl(fACK|fPSH, 100))
		bench1M.seq = make([]uint32, bench1MFlows)
		for i := uint32(0); i < bench1MFlows; i++ {
			setBenchSrc(syn, i)
			setBenchSrc(ack, i)
			synack.Key.Dst = syn.Key.Src
			for _, p := range []*packet.Parsed{syn, synack, ack} {
				r := h.tab.Track(p, args)
				if r.Info == Invalid {
					tb.Fatalf("flow %d: %v", i, r.Reason)
				}
				h.tab.Commit(&r, p, h.now)
			}
			bench1M.seq[i] = bench1M.data.Seq
		}
		if h.tab.Len() != bench1MFlows {
			tb.Fatalf("Len %d", h.tab.Len())
		}
		bench1M.tab, bench1M.now = h.tab, h.now
	})
}

// BenchmarkTrack1M measures Track+Commit of in-window data packets of
// random connections of a table holding 2^20 established TCP connections
// (the cost of cache misses on the buckets and entries).
func BenchmarkTrack1M(b *testing.B) {
	build1M(b)
	tab, p := bench1M.tab, bench1M.data
	args := TrackArgs{Now: bench1M.now, ChecksumVerified: true}
	rng := uint64(0x9e3779b97f4a7c15)
	bad := 0
	cpuTimed(b, func(m *cpuMeter) {
		for i := 0; i < b.N; i++ {
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			f := uint32(rng) & (bench1MFlows - 1)
			setBenchSrc(p, f)
			p.Seq = bench1M.seq[f]
			bench1M.seq[f] += 100
			r := tab.Track(p, args)
			tab.Commit(&r, p, bench1M.now)
			if r.Info != Established {
				bad++
			}
		}
	})
	if bad != 0 {
		b.Fatalf("%d packets not ESTABLISHED", bad)
	}
}

// fillUDP confirms n unreplied UDP flows (10.x.y.z:5000 -> 192.0.2.1:53).
func fillUDP(tb testing.TB, tab *Table, n int, now int64) {
	p := tbDecode(udp4(tbCli4+":5000", tbSrv4+":53"))
	args := TrackArgs{Now: now, ChecksumVerified: true}
	for i := 0; i < n; i++ {
		setBenchSrc(p, uint32(i))
		r := tab.Track(p, args)
		if r.Info != New {
			tb.Fatalf("flow %d: %v %v", i, r.Info, r.Reason)
		}
		tab.Commit(&r, p, now)
	}
}

// BenchmarkTableMemory reports the heap bytes per confirmed connection in a
// table holding 2^20 of them (slab, bucket heads, everything), measured
// with runtime.MemStats.HeapAlloc after GC before the table is made and
// after it is full.
func BenchmarkTableMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cfg := DefaultConfig()
		tab := NewTable(cfg, TableOptions{Max: bench1MFlows, Seed: 1})
		fillUDP(b, tab, bench1MFlows, tbStart)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if tab.Len() != bench1MFlows {
			b.Fatalf("Len %d", tab.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/bench1MFlows, "bytes/conn")
		runtime.KeepAlive(tab)
	}
}

// BenchmarkTableReap removes 2^20 expired entries with Reap calls of the
// pipeline's budgets (256 per 10 ms when busy, 4096 when idle) and reports
// the longest single call in CPU time (the work a call does; what the
// worker's next batch waits for on an unloaded core) and in wall-clock
// time (which includes the scheduler's preemptions on a loaded machine),
// the 99th percentile of the CPU time, and the totals.
func BenchmarkTableReap(b *testing.B) {
	for _, budget := range []int{256, 4096} {
		b.Run("budget="+strconv.Itoa(budget), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var maxCPU, maxWall, totalCPU time.Duration
			var perCall []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tab := NewTable(DefaultConfig(), TableOptions{Max: bench1MFlows, Seed: 1})
				fillUDP(b, tab, bench1MFlows, tbStart)
				now := tbStart + 31*tbSec
				runtime.GC()
				b.StartTimer()
				for tab.Len() > 0 {
					w0, c0 := time.Now(), cpuClock()
					tab.Reap(now, budget)
					c, w := cpuClock()-c0, time.Since(w0)
					totalCPU += c
					maxCPU, maxWall = max(maxCPU, c), max(maxWall, w)
					perCall = append(perCall, c)
				}
			}
			slices.Sort(perCall)
			b.ReportMetric(float64(maxCPU.Microseconds()), "max-cpu-µs/call")
			b.ReportMetric(float64(perCall[len(perCall)*99/100].Microseconds()), "p99-cpu-µs/call")
			b.ReportMetric(float64(maxWall.Microseconds()), "max-wall-µs/call")
			b.ReportMetric(float64(totalCPU.Milliseconds())/float64(b.N), "total-cpu-ms")
			b.ReportMetric(float64(len(perCall))/float64(b.N), "calls")
		})
	}
}

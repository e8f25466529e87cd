package pipeline

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// In-memory benchmarks of the whole pipeline: generator devices stand in
// for the TUN queues (no system calls), so the figures are the pipeline's
// own cost per packet: decode, steering, reassembly checks, conntrack, the
// routing decision, the forward chain, GRO head preparation and the
// hand-over between goroutines. The generators copy a template into the
// read buffer and patch it (ports, sequence numbers, incremental checksum),
// which a real Read pays as well (the kernel's copy to user space).
//
// The rule set is the benchmark harness's kernel-ct column
// (../shared/bench): established,related accept; invalid drop; new accept;
// policy drop. See BENCHMARKS.md for the figures and how to run them.

const (
	benchCli  = "10.201.1.2"
	benchSrv  = "10.201.2.2"
	benchSeed = 0x5eed
)

// benchRules is the harness's kernel-ct forward chain.
func benchRules(tb testing.TB, workers int) *filter.Ruleset {
	rs, _, err := filter.Compile(filter.Spec{
		Interfaces: []string{"a", "b"},
		Workers:    workers,
		Chains: []filter.ChainSpec{{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
			{CtState: []string{"invalid"}, Action: "drop"},
			{CtState: []string{"new"}, Action: "accept"},
		}}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

func benchRoutes(tb testing.TB) *Routes {
	rt, err := NewRoutes([]Route{
		{netip.MustParsePrefix("10.201.1.0/24"), 0},
		{netip.MustParsePrefix("10.201.2.0/24"), 1},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rt
}

// tmpl is a packet template with the offsets of the fields a generator
// patches.
type tmpl struct {
	b     []byte
	csum  int // offset of the transport checksum
	sport int // offset of the client's port (source or destination)
}

func newTmpl(b []byte, clientIsSrc bool) tmpl {
	p := pt.MustDecode(b)
	t := tmpl{b: b, sport: p.L4Off}
	if !clientIsSrc {
		t.sport += 2
	}
	switch p.Proto {
	case packet.TCP:
		t.csum = p.L4Off + 16
	case packet.UDP:
		t.csum = p.L4Off + 6
	}
	return t
}

// put16 and put32 store a field and fix the transport checksum.
func put16(b []byte, off, csum int, v uint16) {
	old := binary.BigEndian.Uint16(b[off:])
	binary.BigEndian.PutUint16(b[off:], v)
	c := binary.BigEndian.Uint16(b[csum:])
	binary.BigEndian.PutUint16(b[csum:], packet.ChecksumUpdate16(c, old, v))
}

func put32(b []byte, off, csum int, v uint32) {
	old := binary.BigEndian.Uint32(b[off:])
	binary.BigEndian.PutUint32(b[off:], v)
	c := binary.BigEndian.Uint16(b[csum:])
	binary.BigEndian.PutUint16(b[csum:], packet.ChecksumUpdate32(c, old, v))
}

// traffic produces the packets of one device queue, one burst (one Read)
// at a time.
type traffic interface {
	// burst writes up to len(bufs) packets at bufs[i][bufOffset:], their
	// sizes and their offload metadata (zero for plain packets: offs
	// comes zeroed), and returns how many it wrote.
	burst(bufs [][]byte, sizes []int, offs []packet.Offload) int
}

// portsFor returns n client ports whose flows the pipeline steers to
// worker w of nw (as the kernel's TUN flow steering keeps a flow on the
// queue its replies are written to, queue q carries worker q's flows).
func portsFor(tb testing.TB, proto packet.Proto, dport uint16, w, nw, n int, from uint16) []uint16 {
	var ports []uint16
	for port := uint32(from); len(ports) < n; port++ {
		if port > 65535 {
			tb.Fatalf("not enough ports for worker %d", w)
		}
		k := pt.Key(proto, fmt.Sprintf("%s:%d", benchCli, port), fmt.Sprintf("%s:%d", benchSrv, dport))
		if int(k.SymHash(benchSeed)%uint64(nw)) == w {
			ports = append(ports, uint16(port))
		}
	}
	return ports
}

// tcpBulk is an established bulk TCP transfer per flow: each burst is
// len(bufs)-1 full-sized data segments of one flow, client to server,
// followed by the server's ACK of them (a GSO super-packet split by the
// TUN read, and the reply it causes). The flows take turns. A flow's first
// burst is its three-way handshake.
type tcpBulk struct {
	data, ack, syn, synack, hsack tmpl
	ports                         []uint16
	seq                           []uint32
	open                          []bool
	next                          int
}

const tcpMSS = 1460

func newTCPBulk(ports []uint16) *tcpBulk {
	c, s := benchCli+":1", benchSrv+":5201"
	g := &tcpBulk{
		syn:    newTmpl(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 0, Win: 65535, WScale: 7, MSS: tcpMSS}), true),
		synack: newTmpl(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 5000, Ack: 1, Win: 65535, WScale: 7, MSS: tcpMSS}), false),
		hsack:  newTmpl(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 1, Ack: 5001, Win: 65535}), true),
		data:   newTmpl(pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 1, Ack: 5001, Win: 65535, Payload: make([]byte, tcpMSS)}), true),
		ack:    newTmpl(pt.TCP4(s, c, pt.TCPOpts{Flags: packet.ACK, Seq: 5001, Ack: 1, Win: 65535}), false),
		ports:  ports,
		seq:    make([]uint32, len(ports)),
		open:   make([]bool, len(ports)),
	}
	return g
}

func (g *tcpBulk) burst(bufs [][]byte, sizes []int, offs []packet.Offload) int {
	f := g.next
	g.next = (g.next + 1) % len(g.ports)
	port := g.ports[f]
	emit := func(i int, t *tmpl) []byte {
		b := bufs[i][bufOffset:]
		sizes[i] = copy(b, t.b)
		put16(b, t.sport, t.csum, port)
		return b
	}
	if !g.open[f] {
		// The handshake (cut short if the burst is: the SYN is then
		// repeated next time).
		hs := [3]*tmpl{&g.syn, &g.synack, &g.hsack}
		n := min(len(bufs), 3)
		for i := 0; i < n; i++ {
			emit(i, hs[i])
		}
		g.open[f] = n == 3
		g.seq[f] = 1
		return n
	}
	n := len(bufs)
	for i := 0; i < n-1; i++ {
		b := emit(i, &g.data)
		put32(b, 20+4, g.data.csum, g.seq[f])
		g.seq[f] += tcpMSS
	}
	b := emit(n-1, &g.ack)
	put32(b, 20+8, g.ack.csum, g.seq[f])
	return n
}

// tcpGSO is tcpBulk as a TUN with offloads hands it over: each burst is
// one TSO super-packet of gsoSegs full-sized segments (partial checksum,
// forwarded whole) followed by the server's ACK of it.
type tcpGSO struct {
	*tcpBulk
	gso tmpl
	off packet.Offload
}

const gsoSegs = 44 // 44 x 1460 bytes: a 64 KB TSO super-packet

func newTCPGSO(ports []uint16) *tcpGSO {
	g := &tcpGSO{tcpBulk: newTCPBulk(ports)}
	c, s := benchCli+":1", benchSrv+":5201"
	b := pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 1, Ack: 5001, Win: 65535, DF: true, Payload: make([]byte, gsoSegs*tcpMSS)})
	g.gso = newTmpl(b, true)
	// The checksum field holds the pseudo-header sum alone (over the
	// segment length, as the kernel leaves it), which the port and
	// sequence number do not enter: no update when they change.
	p := pt.MustDecode(b)
	sum := packet.PseudoHeaderSum(4, &p.Key.Src, &p.Key.Dst, packet.TCP, 20+tcpMSS)
	binary.BigEndian.PutUint16(b[g.gso.csum:], uint16(sum))
	g.off = packet.Offload{GSO: packet.GSOTCPv4, GSOSize: tcpMSS, HdrLen: 40, NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
	return g
}

func (g *tcpGSO) burst(bufs [][]byte, sizes []int, offs []packet.Offload) int {
	f := g.next
	if !g.open[f] || len(bufs) < 2 {
		return g.tcpBulk.burst(bufs, sizes, offs)
	}
	g.next = (g.next + 1) % len(g.ports)
	port := g.ports[f]
	b := bufs[0][bufOffset:]
	sizes[0] = copy(b, g.gso.b)
	binary.BigEndian.PutUint16(b[g.gso.sport:], port)
	binary.BigEndian.PutUint32(b[20+4:], g.seq[f])
	offs[0] = g.off
	g.seq[f] += gsoSegs * tcpMSS
	a := bufs[1][bufOffset:]
	sizes[1] = copy(a, g.ack.b)
	put16(a, g.ack.sport, g.ack.csum, port)
	put32(a, 20+8, g.ack.csum, g.seq[f])
	return 2
}

// udpFlood is iperf3's UDP test: datagrams of 64 bytes of payload, client
// to server only (no replies), the flows taking turns per burst.
type udpFlood struct {
	t     tmpl
	ports []uint16
	next  int
}

func newUDPFlood(ports []uint16) *udpFlood {
	return &udpFlood{t: newTmpl(pt.UDP4(benchCli+":1", benchSrv+":5201", make([]byte, 64)), true), ports: ports}
}

func (g *udpFlood) burst(bufs [][]byte, sizes []int, offs []packet.Offload) int {
	port := g.ports[g.next]
	g.next = (g.next + 1) % len(g.ports)
	for i := range bufs {
		b := bufs[i][bufOffset:]
		sizes[i] = copy(b, g.t.b)
		put16(b, g.t.sport, g.t.csum, port)
	}
	return len(bufs)
}

// tcpConns is the harness's connection-rate test: each connection is a
// handshake, one byte each way and a close (8 packets), the client port
// cycling through a pool as connrate's do (the port's previous connection
// is in TIME_WAIT and a new SYN reopens it). Bursts cut the sequence at
// any point.
type tcpConns struct {
	t     [8]tmpl
	seqs  [8][2]uint32 // the template's seq and ack, to offset per connection
	ports []uint16
	conn  int // connection number
	step  int // next packet of the current connection
}

func newTCPConns(ports []uint16) *tcpConns {
	c, s := benchCli+":1", benchSrv+":5300"
	one := []byte{1}
	type p struct {
		cli  bool
		opts pt.TCPOpts
	}
	seq := []p{
		{true, pt.TCPOpts{Flags: packet.SYN, Seq: 0, Win: 64240, WScale: 7, MSS: 1460}},
		{false, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 0, Ack: 1, Win: 65160, WScale: 7, MSS: 1460}},
		{true, pt.TCPOpts{Flags: packet.ACK, Seq: 1, Ack: 1, Win: 502}},
		{true, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Win: 502, Payload: one}},
		{false, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 1, Ack: 2, Win: 509, Payload: one}},
		{true, pt.TCPOpts{Flags: packet.ACK | packet.FIN, Seq: 2, Ack: 2, Win: 502}},
		{false, pt.TCPOpts{Flags: packet.ACK | packet.FIN, Seq: 2, Ack: 3, Win: 509}},
		{true, pt.TCPOpts{Flags: packet.ACK, Seq: 3, Ack: 3, Win: 502}},
	}
	g := &tcpConns{ports: ports}
	for i, x := range seq {
		src, dst := c, s
		if !x.cli {
			src, dst = s, c
		}
		g.t[i] = newTmpl(pt.TCP4(src, dst, x.opts), x.cli)
		g.seqs[i] = [2]uint32{x.opts.Seq, x.opts.Ack}
	}
	return g
}

func (g *tcpConns) burst(bufs [][]byte, sizes []int, offs []packet.Offload) int {
	for i := range bufs {
		t := &g.t[g.step]
		b := bufs[i][bufOffset:]
		sizes[i] = copy(b, t.b)
		put16(b, t.sport, t.csum, g.ports[g.conn%len(g.ports)])
		// Each connection has its own initial sequence numbers.
		isn := uint32(g.conn) * 2654435761
		put32(b, 20+4, t.csum, g.seqs[g.step][0]+isn)
		if g.step > 0 {
			put32(b, 20+8, t.csum, g.seqs[g.step][1]+isn)
		}
		g.step++
		if g.step == len(g.t) {
			g.step = 0
			g.conn++
		}
	}
	return len(bufs)
}

// genDev is a generator device queue: Read returns bursts from its traffic
// until its quota is used, then blocks until the pipeline closes; Write
// counts what the pipeline sends.
type genDev struct {
	gen     traffic
	started bool // start was closed (read once: the channel is shared)
	offload bool // an OffloadDevice with its metadata on
	offs    []packet.Offload
	burstSz int
	quota   int // packets left to produce
	start   chan struct{}
	stop    chan struct{}
	once    *sync.Once   // shared by the devices of a benchmark, like stop
	written atomic.Int64 // own counter: readers write to different devices
	_       [56]byte
}

func (d *genDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.quota <= 0 || d.gen == nil {
		<-d.stop
		return 0, os.ErrClosed
	}
	if !d.started {
		select {
		case <-d.start:
			d.started = true
		case <-d.stop:
			return 0, os.ErrClosed
		}
	}
	n := min(d.burstSz, len(bufs), d.quota)
	n = d.gen.burst(bufs[:n], sizes, d.offs[:n])
	d.quota -= n
	return n, nil
}

func (d *genDev) Offloading() bool { return d.offload }

func (d *genDev) ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error) {
	if d.quota <= 0 || d.gen == nil {
		<-d.stop
		return 0, os.ErrClosed
	}
	if !d.started {
		select {
		case <-d.start:
			d.started = true
		case <-d.stop:
			return 0, os.ErrClosed
		}
	}
	n := min(d.burstSz, len(bufs), d.quota)
	clear(offs[:n])
	n = d.gen.burst(bufs[:n], sizes, offs[:n])
	d.quota -= n
	return n, nil
}

func (d *genDev) WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error) {
	d.written.Add(int64(len(bufs)))
	return len(bufs), nil
}

func (d *genDev) Write(bufs [][]byte, offset int) (int, error) {
	d.written.Add(int64(len(bufs)))
	return len(bufs), nil
}

func (d *genDev) BatchSize() int       { return 128 }
func (d *genDev) InterruptRead() error { d.once.Do(func() { close(d.stop) }); return nil }

// newGenDevs returns a constructor of generator devices sharing one start
// and one stop channel, and a function that closes stop (idempotent).
func newGenDevs(offload bool) (mk func(gen traffic, burst, quota int) *genDev, start func(), stop func(), written func() int64) {
	startc, stopc := make(chan struct{}), make(chan struct{})
	once := new(sync.Once)
	var devs []*genDev
	mk = func(gen traffic, burst, quota int) *genDev {
		d := &genDev{gen: gen, offload: offload, offs: make([]packet.Offload, 128), burstSz: burst, quota: quota, start: startc, stop: stopc, once: once}
		devs = append(devs, d)
		return d
	}
	written = func() int64 {
		var n int64
		for _, d := range devs {
			n += d.written.Load()
		}
		return n
	}
	return mk, func() { close(startc) }, func() { once.Do(func() { close(stopc) }) }, written
}

// pipeBench runs b.N packets of traffic through a started pipeline with
// workers workers and one queue per worker on each of two ports; port A's
// queue q carries the flows of worker q. It reports packets per second
// (total and per worker) and the share dropped.
func pipeBench(b *testing.B, workers, burst int, mk func(q int) traffic, checksum, offload bool) {
	mkDev, start, stop, written := newGenDevs(offload)
	defer stop()
	ports := []Port{{Name: "a", MTU: 1500}, {Name: "b", MTU: 1500}}
	for pi := range ports {
		for q := 0; q < workers; q++ {
			var gen traffic
			quota := 0
			if pi == 0 {
				gen = mk(q)
				quota = b.N / workers
				if q == 0 {
					quota += b.N % workers
				}
			}
			ports[pi].Queues = append(ports[pi].Queues, mkDev(gen, burst, quota))
		}
	}
	ct := conntrack.DefaultConfig()
	ct.Checksum = checksum
	ct.Max = 1 << 20
	p, err := New(Config{
		Ports:     ports,
		Routes:    benchRoutes(b),
		Workers:   workers,
		Conntrack: ct,
		Rules:     benchRules(b, workers),
		Seed:      benchSeed,
	})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	start()
	// Wait until every packet was written (the devices' counters, read
	// every millisecond) or counted as dropped (the pipeline's counters,
	// which take the workers' mutexes, read every 50 ms).
	var st Stats
	for i := 1; ; i++ {
		time.Sleep(time.Millisecond)
		if written() >= int64(b.N) {
			break
		}
		if i%50 != 0 {
			continue
		}
		st = p.Stats()
		var seen uint64
		for _, w := range st.Workers {
			seen += w.Packets
		}
		for _, r := range st.Readers {
			seen += r.QueueFull
		}
		if seen >= uint64(b.N) {
			break
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	st = p.Stats()
	p.Close()
	out := written()
	pps := float64(b.N) / el.Seconds()
	b.ReportMetric(pps/1e6, "Mpps")
	b.ReportMetric(pps/1e6/float64(workers), "Mpps/worker")
	b.ReportMetric(100*float64(int64(b.N)-out)/float64(b.N), "drop%")
	// A packet lost to a full queue can make the following packets of its
	// connection INVALID (a lost SYN/ACK, say); anything else the rules
	// drop is a bug in the generator or the pipeline.
	d := st.Drops()
	b.ReportMetric(100*float64(st.Conntrack.Invalid)/float64(b.N), "invalid%")
	if d[DropRule]+d[DropPolicy] > 8*d[DropQueueFull] {
		b.Fatalf("packets dropped by the rules: %v (conntrack invalid %d)", d, st.Conntrack.Invalid)
	}
}

// BenchmarkPipeline runs the whole pipeline (readers, workers, writes)
// over generator devices: packets per second for established bulk TCP,
// 64-byte UDP and short TCP connections, with 1 and 2 workers (one queue
// per worker). burst is the number of packets per Read: 45 is a 64 KB TSO
// super-packet, 1 is what a TUN read returns for small packets.
func BenchmarkPipeline(b *testing.B) {
	for _, workers := range []int{1, 2} {
		for _, tc := range []struct {
			name    string
			burst   int
			mk      func(q int) traffic
			offload bool
		}{
			{"tcp-bulk/burst=45", 45, func(q int) traffic {
				return newTCPBulk(portsFor(b, packet.TCP, 5201, q, workers, 4, 40000))
			}, false},
			{"tcp-gso/burst=2", 2, func(q int) traffic {
				return newTCPGSO(portsFor(b, packet.TCP, 5201, q, workers, 4, 40000))
			}, true},
			{"udp64/burst=128", 128, func(q int) traffic {
				return newUDPFlood(portsFor(b, packet.UDP, 5201, q, workers, 4, 40000))
			}, false},
			{"udp64/burst=1", 1, func(q int) traffic {
				return newUDPFlood(portsFor(b, packet.UDP, 5201, q, workers, 4, 40000))
			}, false},
			{"tcp-conns/burst=8", 8, func(q int) traffic {
				return newTCPConns(portsFor(b, packet.TCP, 5300, q, workers, 2000, 1024))
			}, false},
			{"tcp-conns/burst=1", 1, func(q int) traffic {
				return newTCPConns(portsFor(b, packet.TCP, 5300, q, workers, 2000, 1024))
			}, false},
		} {
			b.Run(fmt.Sprintf("%s/workers=%d", tc.name, workers), func(b *testing.B) {
				if workers > runtime.GOMAXPROCS(0) {
					b.Skipf("needs %d CPUs", workers)
				}
				if tc.offload {
					b.SetBytes(gsoSegs * tcpMSS / 2)
				}
				pipeBench(b, workers, tc.burst, tc.mk, true, tc.offload)
			})
		}
	}
}

// workerBench runs packets through one reader's decode and steering and
// one worker's processing on the benchmark's goroutine (what a reader
// does when it runs its worker itself), the batch refilled from gen every
// time: the pipeline's CPU cost per packet. ns/op is per packet.
func workerBench(b *testing.B, burst int, gen traffic, checksum, offload bool) {
	mkDev, _, stop, written := newGenDevs(offload)
	defer stop()
	ports := []Port{{Name: "a", MTU: 1500}, {Name: "b", MTU: 1500}}
	for pi := range ports {
		ports[pi].Queues = []Device{mkDev(nil, 0, 0)}
	}
	ct := conntrack.DefaultConfig()
	ct.Checksum = checksum
	p, err := New(Config{
		Ports:     ports,
		Routes:    benchRoutes(b),
		Workers:   1,
		Conntrack: ct,
		Rules:     benchRules(b, 1),
		Seed:      benchSeed,
	})
	if err != nil {
		b.Fatal(err)
	}
	r := p.readers[0]
	run := func(n int) int {
		bt := r.b
		for i := range bt.bufs {
			bt.bufs[i] = bt.bufs[i][:cap(bt.bufs[i])]
		}
		clear(bt.offl[:n])
		n = gen.burst(bt.bufs[:n], bt.sizes, bt.offl[:n])
		r.dispatch(bt, n)
		return n
	}
	// Warm up: connections open, buffers and the slab grown.
	for i := 0; i < 64; i++ {
		run(burst)
	}
	before := written()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		done += run(min(burst, b.N-done))
	}
	b.StopTimer()
	if got := written() - before; got != int64(b.N) {
		st := p.Stats()
		b.Fatalf("%d of %d packets written; drops %v, conntrack invalid %d", got, b.N, st.Drops(), st.Conntrack.Invalid)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
}

// BenchmarkWorker is the per-packet cost of the pipeline on one goroutine:
// decode, steer, conntrack, route, forward chain, GRO heads, write
// (counted, not performed). checksum=off skips the transport checksum
// verification (conntrack.checksum = false, or a device whose checksums
// are trusted).
func BenchmarkWorker(b *testing.B) {
	for _, cs := range []bool{true, false} {
		csName := map[bool]string{true: "on", false: "off"}[cs]
		b.Run("tcp-bulk/burst=45/checksum="+csName, func(b *testing.B) {
			workerBench(b, 45, newTCPBulk(portsFor(b, packet.TCP, 5201, 0, 1, 4, 40000)), cs, false)
		})
		b.Run("udp64/burst=128/checksum="+csName, func(b *testing.B) {
			workerBench(b, 128, newUDPFlood(portsFor(b, packet.UDP, 5201, 0, 1, 4, 40000)), cs, false)
		})
		b.Run("tcp-conns/burst=8/checksum="+csName, func(b *testing.B) {
			workerBench(b, 8, newTCPConns(portsFor(b, packet.TCP, 5300, 0, 1, 2000, 1024)), cs, false)
		})
	}
	// GSO pass-through (offload devices): a packet is a 64 KB TSO
	// super-packet or its ACK; MB/s is the payload forwarded. Partial
	// checksums are not verified, whatever conntrack's setting.
	b.Run("tcp-gso/burst=2", func(b *testing.B) {
		b.SetBytes(gsoSegs * tcpMSS / 2)
		workerBench(b, 2, newTCPGSO(portsFor(b, packet.TCP, 5201, 0, 1, 4, 40000)), true, true)
	})
}

// BenchmarkRoutes is the routing decision: a longest-prefix match over a
// table of n IPv4 (and as many IPv6) routes with nested prefixes, looked
// up for addresses spread over it.
func BenchmarkRoutes(b *testing.B) {
	for _, n := range []int{2, 1000, 100000} {
		var rs []Route
		seen := map[netip.Prefix]bool{}
		add := func(p netip.Prefix, dev int) {
			if p = p.Masked(); !seen[p] {
				seen[p] = true
				rs = append(rs, Route{p, dev})
			}
		}
		for i := 0; i < n; i++ {
			a := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
			add(netip.PrefixFrom(netip.AddrFrom4(a), 32-i%9), i%4) // /24 to /32, nested and not
			a6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)})
			add(netip.PrefixFrom(a6, 48+i%17), i%4)
		}
		rs = append(rs, Route{netip.MustParsePrefix("0.0.0.0/0"), 0}, Route{netip.MustParsePrefix("::/0"), 0})
		rt, err := NewRoutes(rs)
		if err != nil {
			b.Fatal(err)
		}
		var dst4, dst6 [256][16]byte
		for i := range dst4 {
			x := uint32(i) * 2654435761 % uint32(n)
			copy(dst4[i][:4], []byte{10, byte(x >> 16), byte(x >> 8), byte(x) ^ byte(i)})
			dst6[i] = [16]byte{0x20, 0x01, 0xd, 0xb8, byte(x >> 16), byte(x >> 8), byte(x), byte(i)}
		}
		b.Run(fmt.Sprintf("ipv4/routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			sum := 0
			for i := 0; i < b.N; i++ {
				sum += rt.Lookup(4, &dst4[i&255])
			}
			routeSink = sum
		})
		b.Run(fmt.Sprintf("ipv6/routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			sum := 0
			for i := 0; i < b.N; i++ {
				sum += rt.Lookup(6, &dst6[i&255])
			}
			routeSink = sum
		})
	}
}

var routeSink int

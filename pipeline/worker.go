package pipeline

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
)

// worker owns one conntrack table and processes the packets steered to it.
// Whoever holds mu runs it: a reader, for the batches it reads (run to
// completion), or the worker's own goroutine, for control calls and idle
// housekeeping. Everything below mu belongs to the holder.
type worker struct {
	p    *Pipeline
	id   int
	mu   sync.Mutex
	ctl  chan func()
	quit chan struct{}
	// waiting counts readers waiting for mu; idle housekeeping yields to
	// them.
	waiting atomic.Int32

	table *conntrack.Table

	// out collects what the worker emits while a reader runs it: the
	// reader's output, written after the worker is released.
	out *output

	icmpLimit *rate.Limiter
	lastReap  int64
	stats     WorkerStats
	trace     TraceRecord
	meta      filter.Packet
}

// WorkerStats are one worker's counters. They are written only by the
// worker and read through Pipeline.Stats (which runs on the worker).
type WorkerStats struct {
	Batches     uint64
	Packets     uint64
	RxPackets   []uint64 // per port
	RxBytes     []uint64
	TxPackets   []uint64
	TxBytes     []uint64
	WriteErrs   []uint64 // always zero: readers write (ReaderStats.WriteErrors)
	Drops       [NumDropReasons]uint64
	ICMPSent    uint64 // ICMP errors and resets the router sent
	ICMPLimited uint64
}

// DropReason says why the pipeline dropped a packet.
type DropReason uint8

// Drop reasons.
const (
	DropNone      DropReason = iota
	DropIPHeader             // the IP header could not be decoded (always dropped)
	DropTableFull            // conntrack table full
	DropRule                 // a filter rule dropped or rejected it
	DropPolicy               // a chain's policy dropped it
	DropHelper               // the connection's helper dropped it
	DropNoRoute              // no route to the destination
	DropTTL                  // TTL/hop limit exhausted
	DropTooBig               // larger than the output MTU and not fragmentable
	DropLocal                // addressed to the router, not answered
	DropScope                // not forwardable: multicast, broadcast, link-local, loopback
	DropQueueFull            // a worker's queue was full (counted by readers)
	DropWrite                // the device write failed (counted by readers, per write)
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	"", "ip header", "conntrack table full", "rule", "policy", "helper", "no route",
	"ttl exceeded", "too big", "local", "scope", "queue full", "write error",
}

func (d DropReason) String() string {
	if d < NumDropReasons {
		return dropNames[d]
	}
	return "?"
}

func newWorker(p *Pipeline, id, max int) *worker {
	w := &worker{
		p:    p,
		id:   id,
		ctl:  make(chan func()),
		quit: make(chan struct{}),
	}
	w.table = conntrack.NewTable(p.cfg.Conntrack, conntrack.TableOptions{
		Worker:  uint8(id),
		Seed:    p.seed ^ uint64(id)*0x9e3779b97f4a7c15,
		Max:     max,
		Helpers: p.cfg.Helpers,
		Expect:  p.expect,
		Events:  p.cfg.Events,
	})
	burst := int(p.cfg.ICMPRate / 2)
	if burst < 1 {
		burst = 1
	}
	w.icmpLimit = rate.NewLimiter(rate.Limit(p.cfg.ICMPRate), burst)
	n := len(p.ports)
	w.stats.RxPackets = make([]uint64, n)
	w.stats.RxBytes = make([]uint64, n)
	w.stats.TxPackets = make([]uint64, n)
	w.stats.TxBytes = make([]uint64, n)
	w.stats.WriteErrs = make([]uint64, n)
	return w
}

func (w *worker) run() {
	defer w.p.workerWG.Done()
	if w.p.cfg.PinCPUs {
		pinToCPU(w.id)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case f := <-w.ctl:
			w.mu.Lock()
			f()
			w.mu.Unlock()
		case <-tick.C:
			w.mu.Lock()
			w.housekeeping(w.p.clock(), true)
			w.mu.Unlock()
		case <-w.quit:
			return
		}
	}
}

// do runs fn on the worker's goroutine and waits for it.
func (w *worker) do(fn func(t *conntrack.Table, now int64)) bool {
	done := make(chan struct{})
	f := func() {
		defer close(done)
		fn(w.table, w.p.clock())
	}
	select {
	case w.ctl <- f:
	case <-w.quit:
		return false
	}
	<-done
	return true
}

// housekeeping reaps expired entries with bounded work.
func (w *worker) housekeeping(now int64, idle bool) {
	if !idle && now-w.lastReap < int64(10*time.Millisecond) {
		return
	}
	w.lastReap = now
	// One Reap call examines at most reapBudget slots (well under a
	// millisecond even in a table of a million entries); when idle, keep
	// going while nothing waits, up to reapIdleRounds calls.
	rounds := 1
	if idle {
		rounds = reapIdleRounds
	}
	for i := 0; i < rounds; i++ {
		if w.table.Reap(now, reapBudget) == 0 && i > 0 {
			break
		}
		if w.waiting.Load() > 0 {
			break
		}
	}
	if w.id == 0 {
		w.p.expect.Reap(now, reapBudget)
	}
}

// Reaping work per call and per idle tick.
const (
	reapBudget     = 256
	reapIdleRounds = 64
)

// process runs the worker's packets of b; what they emit goes to out,
// which the caller writes after releasing the worker. The caller holds
// w.mu.
func (w *worker) process(b *batch, out *output) {
	rs := w.p.rules.Load()
	w.out = out
	w.stats.Batches++
	me := uint8(w.id)
	for i := 0; i < b.n; i++ {
		if b.owner[i] != me {
			continue
		}
		w.handle(b, i, rs)
	}
	w.out = nil
	w.housekeeping(b.now, false)
}

// emit queues a packet (a slice with bufOffset bytes of headroom before
// it) for writing to port.
func (w *worker) emit(port int, buf []byte) {
	w.emitOffload(port, buf, 0, &noOffload)
}

// noOffload is the metadata of a plain packet with a complete checksum.
var noOffload packet.Offload

// completeChecksum computes the transport checksum of packet i of b if it
// is partial, before a reply is built from the packet (the reply builders
// refuse packets whose checksum does not verify, as the kernel's reject
// code does, which takes a partial checksum as good). The packet is not
// forwarded afterwards.
func completeChecksum(b *batch, i int) {
	if o := &b.offl[i]; o.NeedsCsum {
		b.pkts[i].SetL4Checksum()
		o.NeedsCsum = false
	}
}

// emitOffload is emit for a forwarded packet: the device may coalesce
// it with the other segments of flow (a hash, 0 for none; devices without
// offload metadata), or it keeps its offload metadata off (devices with).
func (w *worker) emitOffload(port int, buf []byte, flow uint64, off *packet.Offload) {
	w.out.add(port, w.id, buf, flow, off)
	w.stats.TxPackets[port]++
	w.stats.TxBytes[port] += uint64(len(buf) - bufOffset)
}

// scratch returns a buffer of n bytes plus headroom for a packet the
// worker builds.
func (w *worker) scratch(n int) []byte { return w.out.scratch(n) }

// handle runs one packet through the pipeline.
func (w *worker) handle(b *batch, i int, rs *filter.Ruleset) {
	p := &b.pkts[i]
	in := b.port
	now := b.now
	buf := b.bufs[i][:bufOffset+b.sizes[i]]
	w.stats.Packets++
	w.stats.RxPackets[in]++
	w.stats.RxBytes[in] += uint64(b.sizes[i])
	tr := w.p.cfg.Tracer
	if tr != nil {
		w.trace = TraceRecord{Time: now, In: in, Out: -1, Rule: -1}
	}

	if p.Err.IsIPLevel() {
		w.drop(DropIPHeader, p, tr, conntrack.Result{Info: conntrack.Invalid, Reason: conntrack.ReasonFromDecode(p.Err)})
		return
	}

	m := &w.meta
	*m = filter.Packet{P: p, IIf: in, OIf: -1, Ct: conntrack.Invalid}

	// Prerouting: notrack and helper assignment, before tracking.
	var helper conntrack.HelperID
	untracked := false
	if rs.Defined(filter.Prerouting) {
		v := rs.Eval(filter.Prerouting, m, w.id)
		if v.Action != filter.Accept {
			w.reject(b, i, &v)
			if tr != nil {
				w.trace.Chain, w.trace.Rule = filter.Prerouting, v.Rule
			}
			w.dropRule(&v, p, tr, conntrack.Result{Info: conntrack.Invalid})
			return
		}
		untracked = v.Notrack
		if v.Helper != "" {
			helper = w.helperID(v.Helper)
		}
	}

	var r conntrack.Result
	if untracked {
		r.Info = conntrack.Untracked
	} else {
		// A partial checksum (the host's stack made the packet) or one
		// the sender verified is not verified again, as in Linux.
		r = w.table.Track(p, conntrack.TrackArgs{Now: now, Helper: helper, ChecksumVerified: b.offl[i].ChecksumKnownGood()})
		if r.Drop() {
			w.drop(DropTableFull, p, tr, r)
			return
		}
	}
	m.Ct, m.Status, m.Reason = r.Info, r.Status, r.Reason
	if r.MasterHelper != 0 {
		m.Helper = w.p.cfg.Helpers[r.MasterHelper-1].Name()
	}

	// Routing.
	chain := filter.Forward
	out := -1
	local := w.isLocal(p)
	if local {
		chain = filter.Input
	} else {
		if !forwardable(p) {
			// Link-scoped and multicast traffic (neighbour and router
			// discovery, MLD, broadcasts) stays on its link: a router
			// without multicast routing never forwards it.
			w.table.Discard(&r)
			w.drop(DropScope, p, tr, r)
			return
		}
		out = w.p.routes.Lookup(p.Family, &p.Key.Dst)
		if out < 0 {
			w.table.Discard(&r)
			w.icmpError(b, i, unreachNoRoute)
			w.drop(DropNoRoute, p, tr, r)
			return
		}
		if p.TTL <= 1 {
			w.table.Discard(&r)
			w.icmpError(b, i, timeExceeded)
			w.drop(DropTTL, p, tr, r)
			return
		}
		mtu := w.p.mtu(out)
		// A GSO super-packet leaves as its segments: they must fit.
		size := b.offl[i].SegmentLen(p.Length)
		if f := int(b.frag[i]); f != 0 {
			size = f
		}
		if size > mtu && (p.Family == 6 || p.DontFrag) {
			w.table.Discard(&r)
			w.icmpError(b, i, tooBig)
			w.drop(DropTooBig, p, tr, r)
			return
		}
	}
	m.OIf = out

	v := rs.Eval(chain, m, w.id)
	if tr != nil {
		w.trace.Chain = chain
		w.trace.Rule = v.Rule
	}
	switch v.Action {
	case filter.Accept:
	default:
		w.table.Discard(&r)
		if v.Action == filter.Reject {
			w.reject(b, i, &v)
		}
		w.dropRule(&v, p, tr, r)
		return
	}
	if hr := w.table.Commit(&r, p, now); hr.Drop {
		if tr != nil {
			w.trace.Why = hr.Why
		}
		w.drop(DropHelper, p, tr, r)
		return
	}
	if local {
		w.deliverLocal(b, i, p, tr, r)
		return
	}
	packet.DecTTL(buf[bufOffset:])
	mtu := w.p.mtu(out)
	limit := mtu
	if f := int(b.frag[i]); f != 0 && f < limit {
		limit = f
	}
	off := &b.offl[i]
	switch {
	case off.GSO != packet.GSONone && off.SegmentLen(p.Length) > limit:
		// Segments too big for the link, and the packet may be
		// fragmented (IPv4 without DF): the kernel would cut it into
		// segments and fragment those; the router does not cut GSO
		// packets.
		w.drop(DropTooBig, p, tr, r)
		return
	case off.GSO == packet.GSONone && p.Length > limit:
		if off.NeedsCsum {
			// Fragments cannot carry a partial checksum.
			p.SetL4Checksum()
		}
		w.fragment(out, buf[bufOffset:], limit)
	default:
		var flow uint64
		if (p.Proto == packet.TCP || p.Proto == packet.UDP) && p.PayloadLen() > 0 {
			flow = p.Key.Hash(w.p.seed) | 1
		}
		w.emitOffload(out, buf, flow, off)
	}
	if tr != nil {
		w.trace.Out = out
		w.traceDone(p, r, "accept")
	}
}

// forwardable reports whether a packet may be routed: not to or from a
// multicast, broadcast, loopback, unspecified or (IPv6) link-local address.
func forwardable(p *packet.Parsed) bool {
	s, d := &p.Key.Src, &p.Key.Dst
	if p.Family == 4 {
		switch {
		case d[0] >= 224, d[0] == 127, d[0] == 0, s[0] >= 224, s[0] == 127:
			return false
		}
		return true
	}
	switch {
	case d[0] == 0xff, s[0] == 0xff: // multicast
		return false
	case d[0] == 0xfe && d[1]&0xc0 == 0x80, s[0] == 0xfe && s[1]&0xc0 == 0x80: // link-local
		return false
	case isZeroOrLoopback6(d):
		return false
	}
	return true
}

func isZeroOrLoopback6(a *[16]byte) bool {
	for _, b := range a[:15] {
		if b != 0 {
			return false
		}
	}
	return a[15] <= 1
}

func (w *worker) isLocal(p *packet.Parsed) bool {
	if len(w.p.local) == 0 {
		return false
	}
	return w.p.local[p.DstAddr()]
}

func (w *worker) drop(why DropReason, p *packet.Parsed, tr Tracer, r conntrack.Result) {
	w.stats.Drops[why]++
	if tr != nil {
		w.traceDone(p, r, "drop: "+why.String())
	}
}

func (w *worker) dropRule(v *filter.Verdict, p *packet.Parsed, tr Tracer, r conntrack.Result) {
	why := DropRule
	if v.Rule < 0 {
		why = DropPolicy
	}
	w.stats.Drops[why]++
	if tr != nil {
		w.traceDone(p, r, v.Action.String())
	}
}

// icmp error kinds the router generates itself.
type icmpKind uint8

const (
	unreachNoRoute icmpKind = iota
	timeExceeded
	tooBig
	unreachAdmin
	unreachPort
)

// icmpError sends an ICMP/ICMPv6 error about packet i back out of its
// input port, rate-limited.
func (w *worker) icmpError(b *batch, i int, kind icmpKind) {
	p := &b.pkts[i]
	if !w.icmpLimit.Allow() {
		w.stats.ICMPLimited++
		return
	}
	var typ, code uint8
	mtu := 0
	v6 := p.Family == 6
	switch kind {
	case unreachNoRoute:
		typ, code = packet.ICMPDestUnreachable, packet.ICMPNetUnreachable
		if v6 {
			typ, code = packet.ICMPv6DestUnreachable, packet.ICMPv6NoRoute
		}
	case timeExceeded:
		typ, code = packet.ICMPTimeExceeded, 0
		if v6 {
			typ, code = packet.ICMPv6TimeExceeded, 0
		}
	case tooBig:
		out := w.p.routes.Lookup(p.Family, &p.Key.Dst)
		if out >= 0 {
			mtu = w.p.mtu(out)
		}
		typ, code = packet.ICMPDestUnreachable, packet.ICMPFragNeeded
		if v6 {
			typ, code = packet.ICMPv6PacketTooBig, 0
		}
	case unreachAdmin:
		typ, code = packet.ICMPDestUnreachable, packet.ICMPAdminProhibited
		if v6 {
			typ, code = packet.ICMPv6DestUnreachable, packet.ICMPv6AdminProhibited
		}
	case unreachPort:
		typ, code = packet.ICMPDestUnreachable, packet.ICMPPortUnreachable
		if v6 {
			typ, code = packet.ICMPv6DestUnreachable, packet.ICMPv6PortUnreachable
		}
	}
	w.sendICMP(b.port, p, typ, code, mtu)
}

// sendICMP builds an ICMP error about p and queues it on port.
func (w *worker) sendICMP(port int, p *packet.Parsed, typ, code uint8, mtu int) {
	src := w.routerAddr(port, p)
	s := w.scratch(1280)
	pkt, ok := packet.AppendICMPError(s[:bufOffset], p, typ, code, uint32(mtu), src)
	if !ok {
		return
	}
	w.stats.ICMPSent++
	w.emit(port, pkt)
}

// routerAddr is the source address for errors the router sends on port:
// the port's configured address of p's family, else p's destination.
func (w *worker) routerAddr(port int, p *packet.Parsed) [16]byte {
	pt := &w.p.ports[port]
	var a [16]byte
	switch {
	case p.Family == 4 && pt.Addr4.IsValid():
		x := pt.Addr4.As4()
		copy(a[:], x[:])
	case p.Family == 6 && pt.Addr6.IsValid():
		a = pt.Addr6.As16()
	default:
		a = p.Key.Dst
	}
	return a
}

// reject sends what a reject verdict asks for (the filter already applied
// its rate limit and its rules about what may be answered).
func (w *worker) reject(b *batch, i int, v *filter.Verdict) {
	if v.Action != filter.Reject {
		return
	}
	p := &b.pkts[i]
	switch v.Reject {
	case filter.RejectTCPReset:
		completeChecksum(b, i)
		s := w.scratch(60)
		if pkt, ok := packet.AppendTCPReset(s[:bufOffset], p); ok {
			w.stats.ICMPSent++
			w.emit(b.port, pkt)
		}
	case filter.RejectICMP:
		w.sendICMP(b.port, p, v.ICMPType, v.ICMPCode, 0)
	}
}

// helperID maps a helper name from a verdict to its conntrack id.
func (w *worker) helperID(name string) conntrack.HelperID {
	for i, h := range w.p.cfg.Helpers {
		if h.Name() == name {
			return conntrack.HelperID(i + 1)
		}
	}
	return 0
}

// fragment splits an IPv4 datagram larger than limit into fragments.
func (w *worker) fragment(port int, pkt []byte, limit int) {
	var frags [64][]byte
	n := 0
	ok := defrag.Fragment(pkt, limit, func(size int) []byte {
		if n == len(frags) {
			return nil
		}
		s := w.scratch(size)
		frags[n] = s
		n++
		return s[bufOffset:]
	})
	if !ok {
		w.stats.Drops[DropTooBig]++
		return
	}
	for _, f := range frags[:n] {
		w.emit(port, f)
	}
}

// deliverLocal handles an accepted packet addressed to the router: echo
// requests are answered, the rest is dropped (the router runs no
// services on its addresses).
func (w *worker) deliverLocal(b *batch, i int, p *packet.Parsed, tr Tracer, r conntrack.Result) {
	isEcho := (p.Proto == packet.ICMP && p.ICMPType == packet.ICMPEchoRequest) ||
		(p.Proto == packet.ICMPv6 && p.ICMPType == packet.ICMPv6EchoRequest)
	if !isEcho {
		w.drop(DropLocal, p, tr, r)
		return
	}
	completeChecksum(b, i)
	s := w.scratch(p.Length)
	reply, ok := packet.AppendEchoReply(s[:bufOffset], p)
	if !ok {
		w.drop(DropLocal, p, tr, r)
		return
	}
	// The reply belongs to the request's connection, as the kernel's
	// output path would record it (it then shows as replied).
	var rp packet.Parsed
	rp.Decode(reply[bufOffset:])
	rr := w.table.Track(&rp, conntrack.TrackArgs{Now: b.now, ChecksumVerified: true})
	w.table.Commit(&rr, &rp, b.now)
	w.emit(b.port, reply)
	if tr != nil {
		w.traceDone(p, r, "local: echo reply")
	}
}

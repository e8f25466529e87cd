package pipeline

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
)

// worker owns one conntrack table and processes the packets steered to it.
// Whoever holds mu runs it: a reader, for a batch it read (run to
// completion), or the worker's own goroutine, for batches queued to it
// while it was busy, control calls and idle housekeeping. Everything below
// mu belongs to the holder.
type worker struct {
	p    *Pipeline
	id   int
	mu   sync.Mutex
	in   chan *batch
	ctl  chan func()
	quit chan struct{}

	table *conntrack.Table

	// out[port] lists the buffers to write to that port after the batch;
	// outFlow[port][i] is a hash of the flow of out[port][i] when the
	// device may coalesce it with others (GRO), else 0.
	out     [][][]byte
	outFlow [][]uint64
	// heads are big buffers the packets that may start a GRO run are
	// copied into before a write, so that the device can append the
	// following segments of their flow (read buffers hold one packet).
	heads [][]byte
	seen  headSet
	// arena holds packets the worker builds (ICMP errors, resets,
	// fragments) until the batch's writes are done.
	arena []byte

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
	WriteErrs   []uint64
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
	DropWrite                // the device write failed
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
		in:   make(chan *batch, p.cfg.QueueDepth),
		ctl:  make(chan func()),
		quit: make(chan struct{}),
		out:  make([][][]byte, len(p.ports)),
	}
	w.outFlow = make([][]uint64, len(p.ports))
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
		case b := <-w.in:
			w.processQueued(b)
		case f := <-w.ctl:
			w.mu.Lock()
			f()
			w.mu.Unlock()
		case <-tick.C:
			w.mu.Lock()
			w.housekeeping(w.p.clock(), true)
			w.mu.Unlock()
		case <-w.quit:
			// Drain what the readers queued before they stopped.
			for {
				select {
				case b := <-w.in:
					w.processQueued(b)
				default:
					return
				}
			}
		}
	}
}

// processQueued processes a batch that a reader queued to the worker.
func (w *worker) processQueued(b *batch) {
	src := b.src // b belongs to its reader again after process
	w.mu.Lock()
	w.process(b)
	w.mu.Unlock()
	src.pending[w.id].Add(-1)
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
		if len(w.in) > 0 {
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

// process runs the worker's packets of b and writes them out, then
// releases b. The caller holds w.mu.
func (w *worker) process(b *batch) {
	rs := w.p.rules.Load()
	w.stats.Batches++
	w.arena = w.arena[:0]
	me := uint8(w.id)
	for i := 0; i < b.n; i++ {
		if b.owner[i] != me {
			continue
		}
		w.handle(b, i, rs)
	}
	w.flush()
	now := b.now // b belongs to its reader again after release
	b.release()
	w.housekeeping(now, false)
}

// flush writes the queued packets of every port.
func (w *worker) flush() {
	for port, bufs := range w.out {
		if len(bufs) == 0 {
			continue
		}
		qs := w.p.ports[port].Queues
		q := qs[w.id%len(qs)]
		if q.BatchSize() > 1 && len(bufs) > 1 {
			w.prepareHeads(bufs, w.outFlow[port])
		}
		if _, err := q.Write(bufs, bufOffset); err != nil {
			w.stats.WriteErrs[port]++
			w.stats.Drops[DropWrite]++
		}
		for i := range bufs {
			bufs[i] = nil
		}
		w.out[port] = bufs[:0]
		w.outFlow[port] = w.outFlow[port][:0]
	}
}

// prepareHeads copies the first packet of every coalescable flow of a
// write batch into a big buffer: the device's GRO appends the flow's
// following segments to it, which needs room a read buffer does not have.
// It costs one copy per flow per batch.
func (w *worker) prepareHeads(bufs [][]byte, flows []uint64) {
	w.seen.reset()
	nh := 0
	for i, f := range flows {
		if f == 0 || cap(bufs[i]) >= bigSize || !w.seen.add(f) {
			continue
		}
		if nh == len(w.heads) {
			w.heads = append(w.heads, make([]byte, bigSize))
		}
		h := w.heads[nh][:len(bufs[i])]
		nh++
		copy(h, bufs[i])
		bufs[i] = h
	}
}

// headSet is a small set of flow hashes for one write batch.
type headSet struct {
	slots [256]uint64
	used  [256]uint8
	n     int
}

func (s *headSet) reset() {
	for _, i := range s.used[:s.n] {
		s.slots[i] = 0
	}
	s.n = 0
}

// add inserts f and reports whether it was new. A full set answers false
// (no more heads are prepared for this batch).
func (s *headSet) add(f uint64) bool {
	i := uint8(f)
	for probe := 0; probe < 256; probe++ {
		switch s.slots[i] {
		case f:
			return false
		case 0:
			if s.n == len(s.used) {
				return false
			}
			s.slots[i] = f
			s.used[s.n] = i
			s.n++
			return true
		}
		i++
	}
	return false
}

// emit queues a packet (a slice with bufOffset bytes of headroom before
// it) for writing to port.
func (w *worker) emit(port int, buf []byte) {
	w.emitFlow(port, buf, 0)
}

// emitFlow is emit for a forwarded packet that the device may coalesce
// with the other segments of flow (a hash, 0 for none).
func (w *worker) emitFlow(port int, buf []byte, flow uint64) {
	w.out[port] = append(w.out[port], buf)
	w.outFlow[port] = append(w.outFlow[port], flow)
	w.stats.TxPackets[port]++
	w.stats.TxBytes[port] += uint64(len(buf) - bufOffset)
}

// scratch returns a buffer of n bytes plus headroom from the worker's arena.
func (w *worker) scratch(n int) []byte {
	need := bufOffset + n
	if len(w.arena)+need > cap(w.arena) {
		if cap(w.arena) == 0 || len(w.arena) == 0 {
			w.arena = make([]byte, 0, max(256<<10, 2*need))
		} else {
			// Earlier packets still reference the arena: write them out
			// first, then reuse it.
			w.flush()
			w.arena = w.arena[:0]
			if need > cap(w.arena) {
				w.arena = make([]byte, 0, 2*need)
			}
		}
	}
	s := w.arena[len(w.arena) : len(w.arena)+need]
	w.arena = w.arena[:len(w.arena)+need]
	return s
}

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
		r = w.table.Track(p, conntrack.TrackArgs{Now: now, Helper: helper})
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
		size := p.Length
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
	if p.Length > limit {
		w.fragment(out, buf[bufOffset:], limit)
	} else {
		var flow uint64
		if (p.Proto == packet.TCP || p.Proto == packet.UDP) && p.PayloadLen() > 0 {
			flow = p.Key.Hash(w.p.seed) | 1
		}
		w.emitFlow(out, buf, flow)
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

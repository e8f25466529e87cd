package defrag

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/tunrouter/router/packet"
)

// Config holds the reassembly limits.
type Config struct {
	// MaxBytes bounds the memory held by incomplete datagrams: fragment
	// data and headers (as buffer capacity) plus a fixed charge per
	// datagram and per fragment. Default 4 MiB (ipfrag_high_thresh).
	MaxBytes int
	// MaxDatagrams bounds the number of incomplete datagrams. Default 1024.
	MaxDatagrams int
	// Timeout is how long an IPv4 datagram may take to complete, from its
	// first fragment. Default 30 s (ipfrag_time).
	Timeout time.Duration
	// Timeout6 is the same for IPv6. Default 60 s
	// (nf_conntrack_frag6_timeout).
	Timeout6 time.Duration
}

// DefaultConfig returns the defaults (the kernel's).
func DefaultConfig() Config {
	return Config{MaxBytes: 4 << 20, MaxDatagrams: 1024, Timeout: 30 * time.Second, Timeout6: 60 * time.Second}
}

// Validate reports the first nonsensical value.
func (c *Config) Validate() error {
	switch {
	case c.MaxBytes < 0:
		return fmt.Errorf("defrag: max bytes %d is negative", c.MaxBytes)
	case c.MaxDatagrams < 0:
		return fmt.Errorf("defrag: max datagrams %d is negative", c.MaxDatagrams)
	case c.Timeout < 0 || c.Timeout6 < 0:
		return fmt.Errorf("defrag: negative timeout")
	}
	return nil
}

// Status says what Add did with a fragment.
type Status uint8

// Statuses.
const (
	NotFragment Status = iota // not a fragment: nothing to do
	Queued                    // held until the datagram completes
	Reassembled               // completed the datagram, which is returned
	Duplicate                 // dropped: all its bytes were already held
	Overlap                   // dropped with its whole datagram: overlapping fragments
	TooBig                    // dropped with its whole datagram: longer than an IP packet can be
	Malformed                 // dropped (sometimes with its datagram): inconsistent fragment
	NoMemory                  // dropped: MaxBytes or MaxDatagrams reached
	NumStatuses
)

var statusText = [NumStatuses]string{
	NotFragment: "not a fragment",
	Queued:      "queued",
	Reassembled: "reassembled",
	Duplicate:   "defrag: duplicate fragment",
	Overlap:     "defrag: overlapping fragments",
	TooBig:      "defrag: datagram too big",
	Malformed:   "defrag: bad fragment",
	NoMemory:    "defrag: out of memory",
}

// String returns a stable text ("defrag: overlapping fragments").
func (s Status) String() string {
	if s < NumStatuses {
		return statusText[s]
	}
	return "defrag: status(?)"
}

// IsDrop reports whether the fragment was dropped.
func (s Status) IsDrop() bool { return s >= Duplicate }

// Stats are a Table's counters.
type Stats struct {
	Fragments   uint64 // fragments given to Add
	Reassembled uint64 // datagrams completed
	Timeouts    uint64 // datagrams expired incomplete
	Duplicates  uint64 // fragments dropped as duplicates
	Overlaps    uint64 // datagrams dropped for overlapping fragments
	TooBig      uint64 // datagrams dropped for exceeding the maximum size
	Malformed   uint64 // fragments dropped as inconsistent
	NoMemory    uint64 // fragments dropped because a limit was reached
	Datagrams   uint64 // incomplete datagrams held now
	Bytes       uint64 // memory charged now
}

// Map returns the counters by name, for metrics.
func (s Stats) Map() map[string]uint64 {
	return map[string]uint64{
		"fragments": s.Fragments, "reassembled": s.Reassembled, "timeouts": s.Timeouts,
		"duplicates": s.Duplicates, "overlaps": s.Overlaps, "too_big": s.TooBig,
		"malformed": s.Malformed, "no_memory": s.NoMemory, "datagrams": s.Datagrams, "bytes": s.Bytes,
	}
}

type counters struct {
	fragments, reassembled, timeouts, duplicates, overlaps, tooBig, malformed, noMemory atomic.Uint64
	datagrams, bytes                                                                    atomic.Uint64
}

// Memory charges beyond the stored bytes: one per datagram (its struct
// and map entry) and one per fragment (its bookkeeping, with slack for the
// slices' growth). They keep a flood of tiny fragments from holding much
// more memory than MaxBytes says.
const (
	datagramCharge = 256
	fragmentCharge = 64
)

// maxDatagram is the largest IPv4 datagram, and the largest IPv6 payload.
const maxDatagram = 65535

// key identifies a datagram. proto is zero for IPv6 (the kernel's IPv6 key
// has no protocol: later fragments' next-header values may differ).
type key struct {
	src, dst [16]byte
	id       uint32
	proto    packet.Proto
	family   uint8
}

// frag is one fragment's data: bytes [off, end) of the fragmentable part,
// stored at arena[pos:].
type frag struct{ off, end, pos int32 }

// run is a stretch of bytes received as consecutive fragments in order
// (the kernel's "run"); runs are disjoint and sorted.
type run struct{ start, end int32 }

const (
	firstIn = 1 << iota
	lastIn
)

// dgram is an incomplete datagram.
type dgram struct {
	k       key
	arena   []byte // fragment data (and the first fragment's header) in arrival order
	frags   []frag
	runs    []run
	hdrPos  int32 // the first fragment's header (IPv4 header, IPv6 unfragmentable part) in arena
	hdrLen  int32 // zero until the first fragment arrived
	nhOff   int32 // IPv6: offset in the header of the byte that pointed at the fragment header
	nextHdr uint8 // IPv6: the first fragment's fragment-header next header
	flags   uint8
	ecn     uint8 // OR of ecnBit over the fragments
	length  int32 // end of the fragmentable part, as far as known
	meat    int32 // bytes received
	maxSize int32 // largest fragment (whole packet size)
	maxDF   int32 // largest fragment with DF (IPv4)
	charged int
	expires int64
	// creation-order list of the datagram's family
	prev, next *dgram
}

type list struct{ head, tail *dgram }

func (l *list) push(d *dgram) {
	d.prev, d.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = d
	} else {
		l.head = d
	}
	l.tail = d
}

func (l *list) remove(d *dgram) {
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		l.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else {
		l.tail = d.prev
	}
	d.prev, d.next = nil, nil
}

// Table reassembles fragments. It is owned by one goroutine.
type Table struct {
	cfg      Config
	timeout  [2]int64 // ns, by family (0: IPv4, 1: IPv6)
	m        map[key]*dgram
	lists    [2]list
	mem      int
	spare    []*dgram
	pool     [numClasses][][]byte
	out      []byte
	counters counters
}

// New returns an empty Table; zero fields of cfg take their defaults.
func New(cfg Config) *Table {
	def := DefaultConfig()
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = def.MaxBytes
	}
	if cfg.MaxDatagrams <= 0 {
		cfg.MaxDatagrams = def.MaxDatagrams
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.Timeout6 <= 0 {
		cfg.Timeout6 = def.Timeout6
	}
	return &Table{
		cfg:     cfg,
		timeout: [2]int64{int64(cfg.Timeout), int64(cfg.Timeout6)},
		m:       make(map[key]*dgram, min(cfg.MaxDatagrams, 1<<16)),
	}
}

// Len returns the number of incomplete datagrams held.
func (t *Table) Len() int { return len(t.m) }

// Mem returns the memory charged for incomplete datagrams (at most
// Config.MaxBytes).
func (t *Table) Mem() int { return t.mem }

// Stats returns the counters. It may be called from any goroutine.
func (t *Table) Stats() Stats {
	c := &t.counters
	return Stats{
		Fragments: c.fragments.Load(), Reassembled: c.reassembled.Load(), Timeouts: c.timeouts.Load(),
		Duplicates: c.duplicates.Load(), Overlaps: c.overlaps.Load(), TooBig: c.tooBig.Load(),
		Malformed: c.malformed.Load(), NoMemory: c.noMemory.Load(),
		Datagrams: c.datagrams.Load(), Bytes: c.bytes.Load(),
	}
}

// Add is AddStatus for callers that only need to know whether a datagram
// completed.
func (t *Table) Add(p *packet.Parsed, now int64) (whole []byte, maxFrag uint16, ok bool) {
	whole, maxFrag, st := t.AddStatus(p, now)
	return whole, maxFrag, st == Reassembled
}

// AddStatus takes the fragment p (decoded by packet.Parsed.Decode; its
// bytes are copied, p is not retained) received at now (nanoseconds, any
// monotonic clock). When p completes its datagram, it returns the
// reassembled datagram, the size of its largest fragment (the whole IP
// packet, for refragmenting on output), and Reassembled. The datagram is
// in a buffer of the Table's, valid until the next call to AddStatus or
// Add: the caller copies it (or finishes with it) before then.
//
// Otherwise whole is nil and the status says whether the fragment is held
// (Queued) or was dropped, and why. A packet that is not a fragment gives
// NotFragment; one whose IP header did not decode gives Malformed.
func (t *Table) AddStatus(p *packet.Parsed, now int64) (whole []byte, maxFrag uint16, st Status) {
	if !p.Fragment {
		return nil, 0, NotFragment
	}
	c := &t.counters
	c.fragments.Add(1)
	t.reap(now, 4)
	if p.Family != 4 && p.Family != 6 || p.Err.IsIPLevel() || p.Length > len(p.Buf()) {
		return t.dropped(Malformed)
	}
	b := p.Buf()[:p.Length]
	v6 := p.Family == 6
	k := key{src: p.Key.Src, dst: p.Key.Dst, id: p.IPID, family: p.Family}
	var hdrLen, dataOff int
	if v6 {
		if p.FragHdrOff < 40 || p.FragHdrOff+8 > p.Length {
			return t.dropped(Malformed)
		}
		hdrLen, dataOff = p.FragHdrOff, p.FragHdrOff+8
		if p.FragOff == 0 && !upperHeaderPresent(p) {
			// RFC 8200 4.5: a first fragment must hold the whole header
			// chain up to the upper-layer header. The kernel lets such a
			// fragment through unreassembled; we drop it.
			return t.dropped(Malformed)
		}
	} else {
		k.proto = p.Proto
		hdrLen, dataOff = p.L4Off, p.L4Off
	}
	off := int32(p.FragOff)
	end := off + int32(p.Length-dataOff)
	more := p.MoreFrags

	d := t.m[k]
	if d != nil && now >= d.expires {
		t.expire(d)
		d = nil
	}
	if more && end&7 != 0 {
		if !v6 {
			// The kernel drops the bytes past the last multiple of 8.
			end &^= 7
		} else {
			// RFC 8200: a non-last fragment's length is a multiple of 8.
			// The kernel kills the queue (and passes the fragment through;
			// we drop it).
			if d != nil {
				t.free(d)
			}
			return t.dropped(Malformed)
		}
	}
	data := b[dataOff : dataOff+int(end-off)]

	// Memory: the kernel refuses every fragment while over its limit.
	need := len(data)
	if off == 0 {
		need += hdrLen
	}
	if d == nil {
		if len(t.m) >= t.cfg.MaxDatagrams || t.mem+datagramCharge+fragmentCharge+classSize(need) > t.cfg.MaxBytes {
			return t.dropped(NoMemory)
		}
		d = t.newDgram(k, now)
	} else if t.mem-d.charged+d.chargeAfter(need) > t.cfg.MaxBytes {
		return t.dropped(NoMemory)
	}

	// Where the datagram ends (the kernel's q.len checks).
	if !more {
		if end < d.length || d.flags&lastIn != 0 && end != d.length {
			return t.malformed(d, !v6)
		}
		d.flags |= lastIn
		d.length = end
	} else if end > d.length {
		if d.flags&lastIn != 0 {
			return t.malformed(d, !v6)
		}
		d.length = end
	}
	if end == off {
		return t.malformed(d, !v6)
	}
	if t.tooBig(d, off, hdrLen) {
		t.free(d)
		c.tooBig.Add(1)
		return nil, 0, TooBig
	}

	switch d.insert(off, end) {
	case insDup:
		c.duplicates.Add(1)
		t.checkEmpty(d)
		return nil, 0, Duplicate
	case insOverlap:
		t.free(d)
		c.overlaps.Add(1)
		return nil, 0, Overlap
	}

	// Store the data (and the first fragment's header).
	t.reserve(d, need)
	if off == 0 {
		d.flags |= firstIn
		d.hdrPos, d.hdrLen = int32(len(d.arena)), int32(hdrLen)
		d.arena = append(d.arena, b[:hdrLen]...)
		if v6 {
			d.nhOff = int32(p.FragNextOff)
			d.nextHdr = b[p.FragHdrOff]
		}
	}
	d.frags = append(d.frags, frag{off: off, end: end, pos: int32(len(d.arena))})
	d.arena = append(d.arena, data...)
	d.meat += end - off
	d.ecn |= ecnBit(p.TOS)
	size := int32(p.Length)
	if !v6 {
		size = int32(hdrLen) + end - off
		if p.DontFrag && size > d.maxDF {
			d.maxDF = size
		}
	}
	if size > d.maxSize {
		d.maxSize = size
	}
	t.recharge(d)

	if d.flags == firstIn|lastIn && d.meat == d.length {
		return t.complete(d)
	}
	return nil, 0, Queued
}

// upperHeaderPresent reports whether the first fragment p holds its
// upper-layer header (the bytes the kernel's ipv6frag_thdr_truncated asks
// for: 20 for TCP, 8 for UDP and ICMPv6, 1 for anything else).
func upperHeaderPresent(p *packet.Parsed) bool {
	need := 1
	switch p.Proto {
	case packet.TCP:
		need = 20
	case packet.UDP, packet.ICMPv6:
		need = 8
	case packet.IPv6NoNext:
		need = 0
	}
	return p.L4Off > 0 && p.L4Off+need <= p.Length
}

// tooBig reports whether the datagram cannot fit in an IP packet: an IPv4
// datagram of at most 65535 bytes with a header of at least 20 (or the
// first fragment's), an IPv6 payload of at most 65535 bytes. The kernel
// finds out at reassembly; this finds out as soon as the fragments say so.
func (t *Table) tooBig(d *dgram, off int32, hdrLen int) bool {
	h := int32(20)
	if d.k.family == 6 {
		h = 40
	}
	if d.hdrLen != 0 {
		h = d.hdrLen
	} else if off == 0 {
		h = int32(hdrLen)
	}
	if d.k.family == 6 {
		return h-40+d.length > maxDatagram
	}
	return h+d.length > maxDatagram
}

// malformed drops the fragment; for IPv4 (kill) also its datagram, as the
// kernel does (for IPv6 the kernel keeps the queue).
func (t *Table) malformed(d *dgram, kill bool) ([]byte, uint16, Status) {
	if kill {
		t.free(d)
	} else {
		t.checkEmpty(d)
	}
	return t.dropped(Malformed)
}

// checkEmpty frees a datagram that holds no fragment (one just created for
// a fragment that was then dropped).
func (t *Table) checkEmpty(d *dgram) {
	if len(d.frags) == 0 && d.flags&lastIn == 0 {
		t.free(d)
	}
}

func (t *Table) dropped(st Status) ([]byte, uint16, Status) {
	c := &t.counters
	switch st {
	case Malformed:
		c.malformed.Add(1)
	case NoMemory:
		c.noMemory.Add(1)
	}
	return nil, 0, st
}

const (
	insOK = iota
	insDup
	insOverlap
)

// insert records [off, end) in the datagram's runs, as the kernel's
// inet_frag_queue_insert: a fragment that extends the last run in order
// joins it; one contained in a run is a duplicate; one overlapping any
// received byte otherwise is an overlap; anything else starts a new run.
func (d *dgram) insert(off, end int32) int {
	n := len(d.runs)
	if n == 0 {
		d.runs = append(d.runs, run{off, end})
		return insOK
	}
	last := &d.runs[n-1]
	if end > last.end {
		switch {
		case off < last.end:
			return insOverlap
		case off == last.end:
			// The kernel appends to the last run a fragment that starts
			// where the highest received fragment ends.
			last.end = end
		default:
			d.runs = append(d.runs, run{off, end})
		}
		return insOK
	}
	// Find the first run ending after off.
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d.runs[m].end <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < n && d.runs[lo].start < end {
		r := d.runs[lo]
		if off >= r.start && end <= r.end {
			return insDup
		}
		return insOverlap
	}
	d.runs = append(d.runs, run{})
	copy(d.runs[lo+1:], d.runs[lo:])
	d.runs[lo] = run{off, end}
	return insOK
}

// ecnBit maps a TOS / traffic class to one of four bits for its ECN
// codepoint (not-ECT, ECT(1), ECT(0), CE).
func ecnBit(tos uint8) uint8 { return 1 << (tos & 3) }

// ecnResult applies RFC 3168 5.3 to the OR of the fragments' ecnBits:
// ok is false when not-ECT fragments are mixed with ECT or CE ones (the
// datagram is dropped); ce is true when CE must be set on the datagram
// (some fragment had CE, and some other ECT(0) or ECT(1)).
func ecnResult(m uint8) (ce, ok bool) {
	const notECT, ect1, ect0, ceBit = 1, 2, 4, 8
	if m&notECT != 0 && m&^notECT != 0 {
		return false, false
	}
	return m&ceBit != 0 && m&(ect0|ect1) != 0, true
}

// complete builds the datagram from d's fragments in t.out and frees d.
func (t *Table) complete(d *dgram) ([]byte, uint16, Status) {
	c := &t.counters
	ce, ok := ecnResult(d.ecn)
	if !ok {
		t.free(d)
		return t.dropped(Malformed)
	}
	hl := int(d.hdrLen)
	n := hl + int(d.length)
	if t.tooBig(d, 0, hl) {
		t.free(d)
		c.tooBig.Add(1)
		return nil, 0, TooBig
	}
	if cap(t.out) < n {
		t.out = make([]byte, 0, max(n, maxDatagram+40))
	}
	out := t.out[:n]
	copy(out, d.arena[d.hdrPos:d.hdrPos+d.hdrLen])
	for _, f := range d.frags {
		copy(out[hl+int(f.off):], d.arena[f.pos:f.pos+f.end-f.off])
	}
	if d.k.family == 4 {
		binary.BigEndian.PutUint16(out[2:], uint16(n))
		var fo uint16
		if d.maxDF == d.maxSize {
			fo = 0x4000
		}
		binary.BigEndian.PutUint16(out[6:], fo)
		if ce {
			out[1] |= 3
		}
		packet.SetIPv4Checksum(out)
	} else {
		out[d.nhOff] = d.nextHdr
		binary.BigEndian.PutUint16(out[4:], uint16(n-40))
		if ce {
			out[1] |= 3 << 4
		}
	}
	maxFrag := uint16(min(d.maxSize, 0xffff))
	t.free(d)
	c.reassembled.Add(1)
	return out, maxFrag, Reassembled
}

// Reap expires every datagram whose time is up at now and returns how
// many. Its cost is proportional to that number. Add also expires a few on
// each call, so a Table that is never reaped still frees memory.
func (t *Table) Reap(now int64) int { return t.reap(now, -1) }

func (t *Table) reap(now int64, limit int) int {
	n := 0
	for i := range t.lists {
		l := &t.lists[i]
		for l.head != nil && now >= l.head.expires && n != limit {
			t.expire(l.head)
			n++
		}
	}
	return n
}

func (t *Table) expire(d *dgram) {
	t.free(d)
	t.counters.timeouts.Add(1)
}

func famIndex(family uint8) int { return int(family>>1) & 1 } // 4 -> 0, 6 -> 1

func (t *Table) newDgram(k key, now int64) *dgram {
	var d *dgram
	if n := len(t.spare); n > 0 {
		d = t.spare[n-1]
		t.spare = t.spare[:n-1]
	} else {
		d = new(dgram)
	}
	d.k = k
	d.expires = now + t.timeout[famIndex(k.family)]
	t.m[k] = d
	t.lists[famIndex(k.family)].push(d)
	t.recharge(d)
	t.counters.datagrams.Store(uint64(len(t.m)))
	return d
}

// free removes d from the table and recycles it.
func (t *Table) free(d *dgram) {
	delete(t.m, d.k)
	t.lists[famIndex(d.k.family)].remove(d)
	t.mem -= d.charged
	t.putBuf(d.arena)
	frags, runs := d.frags[:0], d.runs[:0]
	if cap(frags) > 256 || cap(runs) > 256 {
		frags, runs = nil, nil // do not keep a flood's bookkeeping around
	}
	*d = dgram{frags: frags, runs: runs}
	if len(t.spare) < 64 {
		t.spare = append(t.spare, d)
	}
	t.counters.datagrams.Store(uint64(len(t.m)))
	t.counters.bytes.Store(uint64(t.mem))
}

// chargeAfter returns d's charge once need more bytes and one more
// fragment are stored.
func (d *dgram) chargeAfter(need int) int {
	c := cap(d.arena)
	if len(d.arena)+need > c {
		c = classSize(len(d.arena) + need)
	}
	return datagramCharge + (len(d.frags)+1)*fragmentCharge + c
}

func (t *Table) recharge(d *dgram) {
	c := datagramCharge + len(d.frags)*fragmentCharge + cap(d.arena)
	t.mem += c - d.charged
	d.charged = c
	t.counters.bytes.Store(uint64(t.mem))
}

// reserve makes room for need more bytes in d's arena.
func (t *Table) reserve(d *dgram, need int) {
	if len(d.arena)+need <= cap(d.arena) {
		return
	}
	nb := t.getBuf(len(d.arena) + need)
	nb = append(nb, d.arena...)
	t.putBuf(d.arena)
	d.arena = nb
}

// Arena buffers come in power-of-two size classes from 256 bytes to
// 128 KiB (an IPv6 datagram's first-fragment header plus 65535 bytes of
// data fit), recycled through small free lists.
const (
	minClassShift = 8
	numClasses    = 10 // 256 B .. 128 KiB
	spareBufs     = 8
)

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

func classSize(n int) int { return 1 << (classOf(n) + minClassShift) }

func (t *Table) getBuf(n int) []byte {
	c := classOf(n)
	if c >= numClasses {
		return make([]byte, 0, n)
	}
	if l := t.pool[c]; len(l) > 0 {
		b := l[len(l)-1]
		t.pool[c] = l[:len(l)-1]
		return b[:0]
	}
	return make([]byte, 0, 1<<(c+minClassShift))
}

func (t *Table) putBuf(b []byte) {
	if cap(b) == 0 {
		return
	}
	c := classOf(cap(b))
	if c >= numClasses || cap(b) != 1<<(c+minClassShift) || len(t.pool[c]) >= spareBufs {
		return
	}
	t.pool[c] = append(t.pool[c], b[:0])
}

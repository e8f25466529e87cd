package conntrack

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tunrouter/router/packet"
)

// Expectation announces a connection that a helper expects (an FTP data
// connection): the tuple its first packet will have in the original
// direction, with the source address and/or port wildcarded.
//
// The destination address, destination port, protocol and family always
// match exactly; the source address and source port match exactly unless
// wildcarded (the kernel's expectation mask is all-ones or all-zeros per
// field, as nf_ct_expect_init sets it).
type Expectation struct {
	Tuple       packet.FlowKey // expected original-direction tuple
	SrcAddrWild bool           // any source address matches
	SrcPortWild bool           // any source port matches (FTP: true)
	Master      ConnID         // the connection that announced it
	MasterTuple packet.FlowKey // the master's original tuple (for listings)
	Helper      string         // name of the helper that created it
	Class       uint8          // helper policy class (FTP: 0)
	Created     int64          // ns; set by Add
	Expires     int64          // ns; set by the helper (now + policy timeout); never refreshed
}

// Matches reports whether a packet whose tuple is k would be taken by x
// (ignoring expiry): destination, protocol and family exactly, the source
// under the wildcards.
func (x *Expectation) Matches(k *packet.FlowKey) bool {
	return k.Dst == x.Tuple.Dst && k.DstPort == x.Tuple.DstPort &&
		k.Proto == x.Tuple.Proto && k.Family == x.Tuple.Family &&
		(x.SrcAddrWild || k.Src == x.Tuple.Src) &&
		(x.SrcPortWild || k.SrcPort == x.Tuple.SrcPort)
}

// Errors returned by Expectations.Add. None of them is fatal: the helper
// that called Add drops the announcing packet (as the kernel's FTP helper
// does) and the table is unchanged, except that an identical expectation
// of the same master may have been replaced and the master's oldest one
// evicted before a later check failed (as in the kernel).
var (
	// ErrExpectClash: an expectation of another master (or class) has the
	// same tuple and wildcards, or the two overlap (some packet would match
	// both). A NAT helper retries with another port on this error.
	ErrExpectClash = errors.New("expectation clashes with another master's")
	// ErrExpectTableFull: the global limit (Config.ExpectMax) is reached.
	ErrExpectTableFull = errors.New("expectation table full")
	// ErrExpectMasterLimit: the master still has maxPerMaster expectations
	// of the class after its oldest one was evicted (only possible when the
	// limit was lowered while it had more).
	ErrExpectMasterLimit = errors.New("expectation limit per master reached")
	// ErrExpectInvalid: the expectation is malformed (family not 4 or 6,
	// zero master, Expires not after now).
	ErrExpectInvalid = errors.New("invalid expectation")
)

// ExpectStats are the expectation table's counters since creation.
type ExpectStats struct {
	Pending  int    // expectations in the table (including expired ones not yet reaped)
	Created  uint64 // added
	Used     uint64 // taken by the first packet of the expected connection
	Expired  uint64 // removed because their timer ran out (Reap, or found expired by Take/Add)
	Evicted  uint64 // removed to make room under the per-master limit
	Replaced uint64 // removed because the same master announced the same tuple again
	Removed  uint64 // removed with their master (RemoveMaster) or by Delete

	RefusedClash       uint64 // Add failed with ErrExpectClash
	RefusedTableFull   uint64 // Add failed with ErrExpectTableFull
	RefusedMasterLimit uint64 // Add failed with ErrExpectMasterLimit
	RefusedInvalid     uint64 // Add failed with ErrExpectInvalid
}

// Expectations is the expectation table shared by all workers (the data
// connection usually hashes to another worker than its master).
//
// Concurrency: every method is safe for concurrent use. Len and the miss
// path of Take take no lock (a few atomic loads); everything else holds
// one mutex, which is fine because it runs only when a helper announces a
// connection, when a packet that missed a worker's table might be expected,
// or from the control plane.
//
// Like the kernel, the table assumes an expectation's master is confirmed
// (in its table) while the expectation exists: the connection table must
// call RemoveMaster when it destroys, or discards before confirming, an
// entry that had a helper.
//
// Memory is bounded by the global limit (max) and, per master, by the
// helper's per-master limit. Entries are recycled through a small free
// list, so Add does not allocate in steady state.
type Expectations struct {
	max int

	// n is the number of entries, readable without the lock.
	n atomic.Int64
	// filter has one counter per slot of a hash of the destination
	// (address, port, protocol, family): the number of entries whose
	// destination hashes there. Take returns at once when its slot is zero,
	// so a busy table with expectations elsewhere costs a miss two atomic
	// loads and no lock. Counters change only under mu.
	filter     []atomic.Uint32
	filterMask uint64
	seed       uint64

	stats struct {
		created, used, expired, evicted, replaced, removed     atomic.Uint64
		refClash, refTableFull, refMasterLimit, refusedInvalid atomic.Uint64
	}

	mu      sync.Mutex
	byDst   map[expectDst]*expectEntry // chains of entries with the same destination
	byMstr  map[ConnID]*expectEntry    // chains of entries with the same master
	timers  expectHeap                 // all entries, earliest Expires first
	seq     uint64                     // insertion order, to find the oldest
	free    *expectEntry               // recycled entries (linked through nextDst)
	nfree   int
	scratch []*expectEntry // reused by Delete
}

// expectDst is the exact-match part of an expectation: its index key.
type expectDst struct {
	dst    [16]byte
	dport  uint16
	proto  packet.Proto
	family uint8
}

type expectEntry struct {
	x   Expectation
	seq uint64
	// Doubly linked chains: same destination, same master.
	nextDst, prevDst *expectEntry
	nextMst, prevMst *expectEntry
	heapIdx          int
	dead             bool // removed (for Delete, which unlocks in between)
}

const maxFreeEntries = 64

// NewExpectations returns an empty table holding at most max expectations
// (Config.ExpectMax; 0 means unlimited).
func NewExpectations(max int) *Expectations {
	if max < 0 {
		max = 0
	}
	// Size the lock-free filter at about 4 slots per allowed entry, within
	// [1024, 65536] slots (4 KiB .. 256 KiB).
	slots := 1 << 16
	if max > 0 {
		slots = 1024
		for slots < 4*max && slots < 1<<16 {
			slots <<= 1
		}
	}
	return &Expectations{
		max:        max,
		filter:     make([]atomic.Uint32, slots),
		filterMask: uint64(slots - 1),
		seed:       rand.Uint64() | 1,
		byDst:      make(map[expectDst]*expectEntry),
		byMstr:     make(map[ConnID]*expectEntry),
	}
}

// Len returns the number of expectations in the table, expired ones not yet
// reaped included. It takes no lock: the connection table calls it before
// Take, so that an empty table costs a miss one atomic load.
func (e *Expectations) Len() int { return int(e.n.Load()) }

func dstOf(k *packet.FlowKey) expectDst {
	return expectDst{dst: k.Dst, dport: k.DstPort, proto: k.Proto, family: k.Family}
}

// slot returns the filter index of a destination.
func (e *Expectations) slot(k *packet.FlowKey) uint64 {
	a := binary.LittleEndian.Uint64(k.Dst[0:8])
	b := binary.LittleEndian.Uint64(k.Dst[8:16])
	c := uint64(k.DstPort) | uint64(k.Proto)<<16 | uint64(k.Family)<<24
	hi, lo := bits.Mul64(a^e.seed, b^c^0x9e3779b97f4a7c15)
	h := hi ^ lo
	hi, lo = bits.Mul64(h^e.seed, c^0xe7037ed1a0b428db)
	return (hi ^ lo) & e.filterMask
}

// Add inserts x, following the kernel's insertion rules
// (__nf_ct_expect_check):
//
//  1. x is normalised: wildcarded source fields are zeroed, and the bytes
//     past an IPv4 address. Created is set to now. x.Expires must be after
//     now; the timer is never refreshed.
//  2. Expired expectations met on the way (same destination, same master)
//     are removed first.
//  3. An expectation with the same tuple and wildcards from the same master
//     and class is replaced (counted as Replaced; x gets a new timer). The
//     same tuple from another master or class, or an overlapping one (a
//     packet could match both: the tuples agree on every field that neither
//     wildcards) fails with ErrExpectClash and changes nothing.
//  4. If maxPerMaster > 0 and the master already has that many
//     expectations of x's class, its oldest one of that class is evicted
//     (counted as Evicted); if it still has that many, ErrExpectMasterLimit.
//  5. If the table holds max live expectations, ErrExpectTableFull
//     (expired ones are reaped first).
func (e *Expectations) Add(x Expectation, maxPerMaster int, now int64) error {
	if (x.Tuple.Family != 4 && x.Tuple.Family != 6) || x.Master == 0 || x.Expires <= now {
		e.stats.refusedInvalid.Add(1)
		return ErrExpectInvalid
	}
	normalize(&x)
	x.Created = now
	d := dstOf(&x.Tuple)

	e.mu.Lock()
	defer e.mu.Unlock()

	var same *expectEntry
	for c := e.byDst[d]; c != nil; {
		next := c.nextDst
		switch {
		case c.x.Expires <= now:
			e.removeLocked(c)
			e.stats.expired.Add(1)
		case identical(&c.x, &x):
			if c.x.Master != x.Master || c.x.Class != x.Class {
				e.stats.refClash.Add(1)
				return ErrExpectClash
			}
			same = c
		case overlap(&c.x, &x):
			e.stats.refClash.Add(1)
			return ErrExpectClash
		}
		c = next
	}
	if same != nil {
		e.removeLocked(same)
		e.stats.replaced.Add(1)
	}

	if maxPerMaster > 0 {
		n, oldest := 0, (*expectEntry)(nil)
		for c := e.byMstr[x.Master]; c != nil; {
			next := c.nextMst
			if c.x.Expires <= now {
				e.removeLocked(c)
				e.stats.expired.Add(1)
			} else if c.x.Class == x.Class {
				n++
				if oldest == nil || c.seq < oldest.seq {
					oldest = c
				}
			}
			c = next
		}
		if n >= maxPerMaster {
			e.removeLocked(oldest)
			e.stats.evicted.Add(1)
			if n-1 >= maxPerMaster {
				e.stats.refMasterLimit.Add(1)
				return ErrExpectMasterLimit
			}
		}
	}

	if e.max > 0 && e.n.Load() >= int64(e.max) {
		// Only live expectations count (the kernel's timers remove them at
		// expiry): reap the expired ones before refusing. Each entry is
		// reaped once, so this is amortised O(log n).
		e.stats.expired.Add(uint64(e.reapLocked(now, e.max)))
		if e.n.Load() >= int64(e.max) {
			e.stats.refTableFull.Add(1)
			return ErrExpectTableFull
		}
	}
	e.insertLocked(&x, d)
	e.stats.created.Add(1)
	return nil
}

// normalize zeroes what the kernel's mask makes irrelevant, so that tuples
// compare with ==.
func normalize(x *Expectation) {
	if x.Tuple.Family == 4 {
		clear(x.Tuple.Src[4:])
		clear(x.Tuple.Dst[4:])
	}
	if x.SrcAddrWild {
		x.Tuple.Src = [16]byte{}
	}
	if x.SrcPortWild {
		x.Tuple.SrcPort = 0
	}
}

// identical reports whether a and b have the same tuple and wildcards
// (both normalised).
func identical(a, b *Expectation) bool {
	return a.Tuple == b.Tuple && a.SrcAddrWild == b.SrcAddrWild && a.SrcPortWild == b.SrcPortWild
}

// overlap reports whether some packet could match both a and b, which have
// the same destination: they agree on each source field that neither
// wildcards (the kernel's "clash": equal under the intersection of masks).
func overlap(a, b *Expectation) bool {
	return (a.SrcAddrWild || b.SrcAddrWild || a.Tuple.Src == b.Tuple.Src) &&
		(a.SrcPortWild || b.SrcPortWild || a.Tuple.SrcPort == b.Tuple.SrcPort)
}

func (e *Expectations) insertLocked(x *Expectation, d expectDst) {
	c := e.free
	if c != nil {
		e.free = c.nextDst
		e.nfree--
		*c = expectEntry{}
	} else {
		c = new(expectEntry)
	}
	c.x = *x
	e.seq++
	c.seq = e.seq

	if h := e.byDst[d]; h != nil {
		h.prevDst = c
		c.nextDst = h
	}
	e.byDst[d] = c
	if h := e.byMstr[x.Master]; h != nil {
		h.prevMst = c
		c.nextMst = h
	}
	e.byMstr[x.Master] = c
	e.timers.push(c)
	e.filter[e.slot(&x.Tuple)].Add(1)
	e.n.Add(1)
}

// removeLocked unlinks c from every index and recycles it. The caller
// counts the removal under its reason.
func (e *Expectations) removeLocked(c *expectEntry) {
	if c.prevDst != nil {
		c.prevDst.nextDst = c.nextDst
	} else {
		d := dstOf(&c.x.Tuple)
		if c.nextDst != nil {
			e.byDst[d] = c.nextDst
		} else {
			delete(e.byDst, d)
		}
	}
	if c.nextDst != nil {
		c.nextDst.prevDst = c.prevDst
	}
	if c.prevMst != nil {
		c.prevMst.nextMst = c.nextMst
	} else if c.nextMst != nil {
		e.byMstr[c.x.Master] = c.nextMst
	} else {
		delete(e.byMstr, c.x.Master)
	}
	if c.nextMst != nil {
		c.nextMst.prevMst = c.prevMst
	}
	e.timers.remove(c.heapIdx)
	e.filter[e.slot(&c.x.Tuple)].Add(^uint32(0))
	e.n.Add(-1)
	c.dead = true
	if e.nfree < maxFreeEntries {
		// Keep the entry for reuse; drop its string so the helper name is
		// not retained past its time.
		*c = expectEntry{dead: true, nextDst: e.free}
		e.free = c
		e.nfree++
	}
}

// Take finds a live expectation matching the tuple k of a packet that
// missed the connection table (destination address and port, protocol and
// family exactly; source address and port unless wildcarded), removes it
// (an expectation serves one connection, and it is consumed before the
// filter sees the packet, as in the kernel) and returns it. Expectations
// found expired (Expires <= now) never match and are removed (counted as
// Expired). The miss path allocates nothing and, unless another
// expectation's destination shares k's filter slot, takes no lock.
func (e *Expectations) Take(k packet.FlowKey, now int64) (Expectation, bool) {
	if e.n.Load() == 0 || e.filter[e.slot(&k)].Load() == 0 {
		return Expectation{}, false
	}
	d := dstOf(&k)
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := e.byDst[d]; c != nil; {
		next := c.nextDst
		if c.x.Expires <= now {
			e.removeLocked(c)
			e.stats.expired.Add(1)
		} else if c.x.Matches(&k) {
			x := c.x
			e.removeLocked(c)
			e.stats.used.Add(1)
			return x, true
		}
		c = next
	}
	return Expectation{}, false
}

// RemoveMaster removes every expectation of master (the master connection
// ended or was discarded) and returns how many it removed (counted as
// Removed).
func (e *Expectations) RemoveMaster(master ConnID) int {
	if e.n.Load() == 0 {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for c := e.byMstr[master]; c != nil; {
		next := c.nextMst
		e.removeLocked(c)
		n++
		c = next
	}
	e.stats.removed.Add(uint64(n))
	return n
}

// Reap removes up to budget expectations whose timer ran out (Expires <=
// now), earliest first, and returns how many it removed (counted as
// Expired). Its cost is O(budget log n); a budget <= 0 removes nothing.
func (e *Expectations) Reap(now int64, budget int) int {
	if e.n.Load() == 0 || budget <= 0 {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.reapLocked(now, budget)
	e.stats.expired.Add(uint64(n))
	return n
}

func (e *Expectations) reapLocked(now int64, budget int) int {
	n := 0
	for n < budget && len(e.timers) > 0 && e.timers[0].x.Expires <= now {
		e.removeLocked(e.timers[0])
		n++
	}
	return n
}

// NextExpiry returns the earliest Expires in the table, for a caller that
// schedules Reap; ok is false when the table is empty.
func (e *Expectations) NextExpiry() (at int64, ok bool) {
	if e.n.Load() == 0 {
		return 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.timers) == 0 {
		return 0, false
	}
	return e.timers[0].x.Expires, true
}

// List calls fn for each expectation in the table, oldest first, until fn
// returns false (for `router ct -L expect`). It works on a snapshot: fn
// runs without the lock and may call e's methods. Expired expectations not
// yet reaped are included; compare Expires with the clock to skip them.
func (e *Expectations) List(fn func(Expectation) bool) {
	e.mu.Lock()
	snap := make([]*expectEntry, 0, len(e.timers))
	snap = append(snap, e.timers...)
	xs := make([]Expectation, len(snap))
	slices.SortFunc(snap, func(a, b *expectEntry) int { return cmp.Compare(a.seq, b.seq) })
	for i, c := range snap {
		xs[i] = c.x
	}
	e.mu.Unlock()
	for _, x := range xs {
		if !fn(x) {
			return
		}
	}
}

// Delete removes every expectation for which match returns true (control
// plane delete and flush; a nil match removes all) and returns how many it
// removed (counted as Removed). match is called with the lock held and must
// not call e's methods.
func (e *Expectations) Delete(match func(Expectation) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.scratch = append(e.scratch[:0], e.timers...)
	n := 0
	for _, c := range e.scratch {
		if !c.dead && (match == nil || match(c.x)) {
			e.removeLocked(c)
			n++
		}
	}
	clear(e.scratch)
	e.scratch = e.scratch[:0]
	e.stats.removed.Add(uint64(n))
	return n
}

// Stats returns the table's counters. It takes no lock.
func (e *Expectations) Stats() ExpectStats {
	s := &e.stats
	return ExpectStats{
		Pending:            e.Len(),
		Created:            s.created.Load(),
		Used:               s.used.Load(),
		Expired:            s.expired.Load(),
		Evicted:            s.evicted.Load(),
		Replaced:           s.replaced.Load(),
		Removed:            s.removed.Load(),
		RefusedClash:       s.refClash.Load(),
		RefusedTableFull:   s.refTableFull.Load(),
		RefusedMasterLimit: s.refMasterLimit.Load(),
		RefusedInvalid:     s.refusedInvalid.Load(),
	}
}

// expectHeap is a binary min-heap of entries ordered by Expires, each entry
// knowing its index so that any entry can be removed in O(log n).
type expectHeap []*expectEntry

func (h *expectHeap) less(i, j int) bool { return (*h)[i].x.Expires < (*h)[j].x.Expires }

func (h *expectHeap) swap(i, j int) {
	s := *h
	s[i], s[j] = s[j], s[i]
	s[i].heapIdx = i
	s[j].heapIdx = j
}

func (h *expectHeap) push(c *expectEntry) {
	c.heapIdx = len(*h)
	*h = append(*h, c)
	h.up(c.heapIdx)
}

func (h *expectHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	if i != last {
		h.swap(i, last)
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *expectHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down moves i towards the leaves; it reports whether it moved.
func (h *expectHeap) down(i int) bool {
	start := i
	n := len(*h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}

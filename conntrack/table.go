package conntrack

import (
	"encoding/binary"
	"math/bits"

	"github.com/tunrouter/router/packet"
)

// Table is one worker's connection table.
//
// Layout (chosen for memory per entry and for the garbage collector):
// entries live in pages of a slab ([]conn holds no pointers, so the GC never
// scans it); each entry is linked into two hash chains, one for its
// original tuple and one for its reply tuple, through the next indexes it
// carries; bucket heads are a []uint32. A node reference is
// (entry index << 1 | direction) + 1, zero ends a chain. The rare data
// (NAT bindings, helper state, master link) sits in a separate extension
// slab that only some entries use.
//
// A Table is not safe for concurrent use: it belongs to one goroutine (see
// the package comment).
type Table struct {
	cfg     Config
	worker  uint8
	seed    uint64
	max     int
	buckets []uint32
	mask    uint32

	pages    [][]conn
	freeHead uint32 // index+1 of the first free entry (linked through next[0])
	nslots   uint32 // entries ever allocated (slab high-water mark)
	n        int    // live entries (confirmed or tentative)

	exts     []connExt
	extFree  []uint32
	helpers  []Helper
	expect   *Expectations
	events   EventSink
	gcCursor uint32

	// Scratch space for the per-packet paths that hand a pointer to an
	// interface (events, helpers): as locals they would escape to the heap.
	evInfo EntryInfo
	hctx   HelperContext

	stats Stats
}

const (
	pageShift = 10
	pageSize  = 1 << pageShift
	pageMask  = pageSize - 1
)

// conn is one connection entry. Keep it small and pointer-free: one lives
// per tracked connection (168 bytes; with the bucket heads 176 bytes per
// connection, see TestTableEntrySize and BenchmarkTableMemory).
type conn struct {
	orig    packet.FlowKey
	status  Status
	next    [2]uint32 // chain links for the original and reply tuple
	expires int64     // ns
	created int64     // ns
	packets [2]uint64
	bytes   [2]uint64
	tcp     tcpConn
	ext     uint32 // index+1 into Table.exts, 0 when none
	gen     uint32 // generation, part of the ConnID; bumped on reuse
	live    bool
	linked  bool // confirmed: in the hash chains
}

// connExt holds what only some connections need.
type connExt struct {
	reply        packet.FlowKey // reply tuple when it is not the inverse of orig (NAT)
	hasReply     bool
	helper       uint8 // index+1 into Table.helpers
	masterHelper uint8 // the master's helper, for expected connections
	master       ConnID
	helperState  any
}

// HelperID names a helper registered with NewTable (index+1; 0 is none).
type HelperID uint8

// TableOptions configures a Table beyond Config.
type TableOptions struct {
	// Worker is the owner's index, embedded in ConnIDs so they are unique
	// across the pipeline's tables.
	Worker uint8
	// Seed keys the bucket hash (use the same value for every table of a
	// pipeline only if you want deterministic layouts; a random one
	// otherwise). The bucket hash is symmetric, like the hash that steers
	// flows to workers: keep the two seeds distinct.
	Seed uint64
	// Max overrides Config.Max for this table (the pipeline divides the
	// global limit among workers).
	Max int
	// Helpers are the helpers rules may attach; HelperID i is Helpers[i-1].
	Helpers []Helper
	// Expect is the expectation table shared by all workers (nil: none).
	Expect *Expectations
	// Events receives connection events (nil: none).
	Events EventSink
}

// NewTable returns an empty table. The bucket array is allocated at once
// for the entry limit (8 bytes per allowed entry) and never resized; a
// limit of 0 (in both cfg.Max and opt.Max) gives DefaultConfig().Max, not
// an unlimited table.
func NewTable(cfg Config, opt TableOptions) *Table {
	max := cfg.Max
	if opt.Max > 0 {
		max = opt.Max
	}
	if max <= 0 {
		max = DefaultConfig().Max
	}
	nb := uint32(1) << bits.Len32(uint32(2*max-1))
	if nb < 64 {
		nb = 64
	}
	t := &Table{
		cfg:     cfg,
		worker:  opt.Worker,
		seed:    opt.Seed,
		max:     max,
		buckets: make([]uint32, nb),
		mask:    nb - 1,
		helpers: opt.Helpers,
		expect:  opt.Expect,
		events:  opt.Events,
	}
	return t
}

// Len returns the number of live entries.
func (t *Table) Len() int { return t.n }

// Max returns the table's entry limit.
func (t *Table) Max() int { return t.max }

// SetConfig replaces the tunables (timeouts, flags) for future packets.
// Max and the hash layout are fixed at creation.
func (t *Table) SetConfig(cfg Config) { t.cfg = cfg }

func (t *Table) at(i uint32) *conn { return &t.pages[i>>pageShift][i&pageMask] }

func (t *Table) id(i uint32) ConnID {
	c := t.at(i)
	return ConnID(uint64(t.worker)<<56 | uint64(c.gen&0xffffff)<<32 | uint64(i))
}

// lookupIndex resolves an id to an entry index.
func (t *Table) lookupIndex(id ConnID) (uint32, bool) {
	if uint8(id>>56) != t.worker {
		return 0, false
	}
	i := uint32(id)
	if i >= t.nslots {
		return 0, false
	}
	c := t.at(i)
	if !c.live || !c.linked || c.gen&0xffffff != uint32(id>>32)&0xffffff {
		return 0, false
	}
	return i, true
}

func (t *Table) ext(c *conn) *connExt {
	if c.ext == 0 {
		return nil
	}
	return &t.exts[c.ext-1]
}

func (t *Table) extOrNew(c *conn) *connExt {
	if c.ext != 0 {
		return &t.exts[c.ext-1]
	}
	var i uint32
	if n := len(t.extFree); n > 0 {
		i = t.extFree[n-1]
		t.extFree = t.extFree[:n-1]
	} else {
		t.exts = append(t.exts, connExt{})
		i = uint32(len(t.exts) - 1)
	}
	c.ext = i + 1
	return &t.exts[i]
}

// tuple returns the entry's tuple for direction d.
func (t *Table) tuple(c *conn, d Dir) packet.FlowKey {
	if d == Original {
		return c.orig
	}
	if e := t.ext(c); e != nil && e.hasReply {
		return e.reply
	}
	r, _ := c.orig.Invert()
	return r
}

// bucketOf returns the hash bucket of tuple k. The hash is symmetric: a
// tuple and its inverse (for ICMP, the request and its reply: only the
// identifier counts, not the type) land in the same bucket, so both nodes
// of an entry without NAT share one bucket head. Linking, unlinking (Reap,
// early drop, deletion) and early drop's scan then touch one random bucket
// per entry instead of two: in a table of 2^20 entries that halves the
// cost of removing one (cache misses dominate it). A NAT reply tuple, not
// the inverse, simply hashes elsewhere.
//
// The endpoints are put in a canonical order and hashed like
// packet.FlowKey.Hash (two 128-bit multiplies), cheaper than SymHash.
func (t *Table) bucketOf(k *packet.FlowKey) uint32 {
	s0 := binary.LittleEndian.Uint64(k.Src[0:8])
	s1 := binary.LittleEndian.Uint64(k.Src[8:16])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:8])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:16])
	sp, dp := uint64(k.SrcPort), uint64(k.DstPort)
	if k.Proto.IsICMP() {
		dp = sp
	}
	if s0 > d0 || s0 == d0 && (s1 > d1 || s1 == d1 && sp > dp) {
		s0, s1, sp, d0, d1, dp = d0, d1, dp, s0, s1, sp
	}
	h := bucketMix(s0^t.seed, s1^sp<<16^dp)
	h = bucketMix(h^d0, d1^uint64(k.Proto)<<8^uint64(k.Family))
	return uint32(h) & t.mask
}

// bucketMix is a 128-bit multiply folded to 64 bits (the wyhash mixer).
func bucketMix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// matchReply reports whether k is the inverse of o without building it.
func matchReply(k *packet.FlowKey, o *packet.FlowKey) bool {
	if k.Src != o.Dst || k.Dst != o.Src || k.Proto != o.Proto || k.Family != o.Family {
		return false
	}
	if !k.Proto.IsICMP() {
		return k.SrcPort == o.DstPort && k.DstPort == o.SrcPort
	}
	inv, ok := o.Invert()
	return ok && inv.SrcPort == k.SrcPort && inv.DstPort == k.DstPort
}

// find looks k up in the hash chains and returns the entry index and the
// direction k matched. Expired entries are not returned (the caller reaps).
func (t *Table) find(k *packet.FlowKey) (idx uint32, d Dir, ok bool) {
	b := t.bucketOf(k)
	for ref := t.buckets[b]; ref != 0; {
		i, dir := (ref-1)>>1, Dir((ref-1)&1)
		c := t.at(i)
		if dir == Original {
			if c.orig == *k {
				return i, Original, true
			}
		} else if e := t.ext(c); e != nil && e.hasReply {
			if e.reply == *k {
				return i, Reply, true
			}
		} else if matchReply(k, &c.orig) {
			return i, Reply, true
		}
		ref = c.next[dir]
	}
	return 0, 0, false
}

func (t *Table) link(i uint32) {
	c := t.at(i)
	for d := Original; d <= Reply; d++ {
		k := t.tuple(c, d)
		b := t.bucketOf(&k)
		c.next[d] = t.buckets[b]
		t.buckets[b] = i<<1 | uint32(d) + 1
	}
	c.linked = true
	c.status |= StatusConfirmed
}

func (t *Table) unlink(i uint32) {
	c := t.at(i)
	if !c.linked {
		return
	}
	for d := Original; d <= Reply; d++ {
		k := t.tuple(c, d)
		b := t.bucketOf(&k)
		want := i<<1 | uint32(d) + 1
		p := &t.buckets[b]
		for *p != 0 {
			if *p == want {
				*p = c.next[d]
				break
			}
			pi, pd := (*p-1)>>1, Dir((*p-1)&1)
			p = &t.at(pi).next[pd]
		}
	}
	c.linked = false
}

// alloc takes a free entry (not linked) or returns false when the table is
// at its limit.
func (t *Table) alloc() (uint32, bool) {
	if t.n >= t.max {
		return 0, false
	}
	var i uint32
	if t.freeHead != 0 {
		i = t.freeHead - 1
		t.freeHead = t.at(i).next[0]
	} else {
		if t.nslots>>pageShift >= uint32(len(t.pages)) {
			t.pages = append(t.pages, make([]conn, pageSize))
		}
		i = t.nslots
		t.nslots++
	}
	c := t.at(i)
	gen := c.gen + 1
	if gen&0xffffff == 0 {
		// The id keeps 24 bits of the generation: skip the value that
		// would give slot 0 of worker 0 the id 0 ("no connection").
		gen++
	}
	*c = conn{gen: gen, live: true}
	t.n++
	return i, true
}

// free releases entry i (already unlinked).
func (t *Table) free(i uint32) {
	c := t.at(i)
	if e := t.ext(c); e != nil {
		*e = connExt{}
		t.extFree = append(t.extFree, c.ext-1)
	}
	gen := c.gen
	*c = conn{gen: gen}
	c.next[0] = t.freeHead
	t.freeHead = i + 1
	t.n--
}

// destroy removes a confirmed entry: unlink, drop its expectations, emit
// the event, free.
func (t *Table) destroy(i uint32, why EventType) {
	c := t.at(i)
	if c.status&StatusHelper != 0 && t.expect != nil {
		t.expect.RemoveMaster(t.id(i))
	}
	if t.events != nil && c.linked {
		t.emit(i, why, 0)
	}
	t.unlink(i)
	t.free(i)
}

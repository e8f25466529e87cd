package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
)

// Device is the subset of golang.zx2c4.com/wireguard/tun.Device the
// pipeline uses: batched reads and writes with headroom before each packet.
type Device interface {
	// Read reads one or more packets into bufs[i][offset:], setting
	// sizes[i]; it returns the number of packets.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes bufs[i][offset:] for every i. It may modify the
	// buffers (GRO coalescing) within their capacity.
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the most packets one Read can return.
	BatchSize() int
}

// OffloadDevice is a Device that can also move packets with their offload
// metadata (a TUN queue with a virtio-net header, see tundev): GSO
// super-packets whole and partial checksums as they are, as the kernel
// forwards them. When every queue of every port can, the pipeline reads
// and writes only this way (unless Config.SplitGSO): no segmentation on
// read, no checksum completion, verification or coalescing on the way.
type OffloadDevice interface {
	Device
	// Offloading reports whether the two methods below work.
	Offloading() bool
	// ReadOffload is Read with each packet's metadata in offs; a packet
	// may be a GSO super-packet of up to 64 KiB.
	ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error)
	// WriteOffload is Write with each packet's metadata.
	WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error)
}

// Port is one device as the pipeline sees it.
type Port struct {
	Name string
	// Queues are the device's queues (one for a single-queue TUN); a
	// reader runs per queue and worker w writes to Queues[w%len(Queues)].
	Queues []Device
	MTU    int
	// Addr4 and Addr6 are the router's own addresses on this link, the
	// source of the ICMP errors it sends there (optional).
	Addr4, Addr6 netip.Addr
}

// Config configures a pipeline.
type Config struct {
	Ports  []Port
	Routes *Routes
	// Workers is the number of workers (0: one per CPU, at most 64).
	Workers int
	// PinCPUs locks each worker to an OS thread pinned to one CPU.
	PinCPUs bool
	// Conntrack is the tracking configuration; Conntrack.Max is the whole
	// pipeline's limit, divided among the workers.
	Conntrack conntrack.Config
	// Helpers are the helpers rules can attach; filter verdicts name them
	// by index+1 (conntrack.HelperID).
	Helpers []conntrack.Helper
	// ExpectTimeout is not used here (helpers set expirations); ExpectMax
	// comes from Conntrack.ExpectMax.
	Rules *filter.Ruleset
	// LocalAddrs are the router's own addresses: packets to them go
	// through the input chain, and echo requests to them are answered.
	LocalAddrs []netip.Addr
	Defrag     defrag.Config
	// SplitGSO makes the pipeline use the devices' Read and Write even
	// when they are all OffloadDevices: GSO super-packets are cut into
	// segments on read, coalesced again on write, and every transport
	// checksum is completed on read (and verified by conntrack when its
	// Checksum setting is on). For comparison and debugging.
	SplitGSO bool
	// QueueDepth is not used any more: readers run their workers
	// themselves (see the package comment) and no worker has a queue. It
	// stays so that existing configurations keep working.
	QueueDepth int
	// ICMPRate limits the ICMP errors and TCP resets the router sends, per
	// worker, in packets per second (default 100, burst 50).
	ICMPRate float64
	Tracer   Tracer
	Events   conntrack.EventSink
	Logger   *slog.Logger
	// Clock returns monotonic nanoseconds (default: time since start).
	Clock func() int64
	Seed  uint64
}

// Pipeline is a running set of readers and workers.
type Pipeline struct {
	cfg     Config
	ports   []Port
	mtus    []atomic.Int32 // per port: the MTU in force (SetMTU may change it)
	routes  *Routes
	rules   atomic.Pointer[filter.Ruleset]
	workers []*worker
	expect  *conntrack.Expectations
	local   map[netip.Addr]bool
	seed    uint64
	clock   func() int64
	log     *slog.Logger
	// offload: every queue is an OffloadDevice with its metadata on, and
	// SplitGSO is off: packets are read and written whole.
	offload bool

	readerWG sync.WaitGroup
	workerWG sync.WaitGroup
	readers  []*reader
	started  bool
	closed   atomic.Bool
	stopped  atomic.Bool // the workers have ended
	closeMu  sync.Mutex
}

// MaxWorkers is the most workers a pipeline runs (a batch records its
// recipients in a 64-bit mask).
const MaxWorkers = 64

// bufOffset is the headroom before each packet in a buffer: wireguard's
// TUN needs the virtio-net header (10 bytes) there.
const bufOffset = 16

// bigSize is the capacity of the buffers that hold whole datagrams: a
// reassembled one, or the head of a GRO run the device coalesces on write.
const bigSize = bufOffset + 65535 + 1

// slotSize returns the capacity of the read buffers: one packet of the
// largest MTU (TUN reads never return more; GSO reads are split into
// segments of at most the MTU).
func slotSize(ports []Port) int {
	m := 1280
	for _, p := range ports {
		m = max(m, p.MTU)
	}
	return bufOffset + m + 64
}

// New builds a pipeline; Start runs it.
func New(cfg Config) (*Pipeline, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("pipeline: no devices")
	}
	for i, p := range cfg.Ports {
		if len(p.Queues) == 0 {
			return nil, fmt.Errorf("pipeline: device %q has no queue", p.Name)
		}
		if p.MTU <= 0 {
			cfg.Ports[i].MTU = 1500
		}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Workers > MaxWorkers {
		cfg.Workers = MaxWorkers
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 8
	}
	if cfg.ICMPRate <= 0 {
		cfg.ICMPRate = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		start := time.Now()
		cfg.Clock = func() int64 { return int64(time.Since(start)) + int64(time.Second) }
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	if err := cfg.Conntrack.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline: conntrack: %w", err)
	}
	if cfg.Rules == nil {
		return nil, errors.New("pipeline: no rule set")
	}
	p := &Pipeline{
		cfg:    cfg,
		ports:  cfg.Ports,
		routes: cfg.Routes,
		expect: conntrack.NewExpectations(cfg.Conntrack.ExpectMax),
		local:  map[netip.Addr]bool{},
		seed:   cfg.Seed,
		clock:  cfg.Clock,
		log:    cfg.Logger,
	}
	for _, a := range cfg.LocalAddrs {
		p.local[a.Unmap()] = true
	}
	p.mtus = make([]atomic.Int32, len(cfg.Ports))
	for i, port := range cfg.Ports {
		p.mtus[i].Store(int32(port.MTU))
	}
	p.rules.Store(cfg.Rules)
	p.offload = !cfg.SplitGSO && allOffload(cfg.Ports)
	perWorker := 0
	if cfg.Conntrack.Max > 0 {
		perWorker = (cfg.Conntrack.Max + cfg.Workers - 1) / cfg.Workers
	}
	for i := 0; i < cfg.Workers; i++ {
		w := newWorker(p, i, perWorker)
		p.workers = append(p.workers, w)
	}
	for pi, port := range cfg.Ports {
		for qi, q := range port.Queues {
			p.readers = append(p.readers, newReader(p, pi, qi, q))
		}
	}
	return p, nil
}

// allOffload reports whether every queue of every port moves packets with
// their offload metadata.
func allOffload(ports []Port) bool {
	for _, port := range ports {
		for _, q := range port.Queues {
			if o, ok := q.(OffloadDevice); !ok || !o.Offloading() {
				return false
			}
		}
	}
	return true
}

// Offload reports whether the pipeline moves packets whole with their
// offload metadata (see OffloadDevice).
func (p *Pipeline) Offload() bool { return p.offload }

// Start launches the workers and readers.
func (p *Pipeline) Start() {
	if p.started {
		return
	}
	p.started = true
	for _, w := range p.workers {
		p.workerWG.Add(1)
		go w.run()
	}
	for _, r := range p.readers {
		p.readerWG.Add(1)
		go r.run()
	}
}

// SetRules publishes a new rule set; workers use it from their next batch.
// Connection state is kept.
func (p *Pipeline) SetRules(rs *filter.Ruleset) { p.rules.Store(rs) }

// Rules returns the rule set in use.
func (p *Pipeline) Rules() *filter.Ruleset { return p.rules.Load() }

// Export calls fn with a snapshot of every connection of every worker
// (between batches, worker by worker).
func (p *Pipeline) Export(fn func(s *conntrack.Snapshot) bool) {
	stop := false
	p.DoAll(func(_ int, t *conntrack.Table, now int64) {
		if stop {
			return
		}
		t.Export(now, func(s *conntrack.Snapshot) bool {
			if !fn(s) {
				stop = true
			}
			return !stop
		})
	})
}

// Restore inserts saved connections into the tables of the workers their
// packets will be steered to. Call it before Start. It returns how many
// were restored and the first error of those refused.
func (p *Pipeline) Restore(snaps []conntrack.Snapshot) (int, error) {
	n := 0
	var first error
	nw := uint64(len(p.workers))
	for i := range snaps {
		s := &snaps[i]
		w := p.workers[s.Orig.SymHash(p.seed)%nw]
		var err error
		p.Do(w.id, func(t *conntrack.Table, now int64) { err = t.Restore(s, now) })
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}

// SetMTU changes a port's MTU (its device's MTU changed); packets routed
// to the port from now on are fragmented or answered with
// fragmentation-needed / packet-too-big accordingly.
func (p *Pipeline) SetMTU(port, mtu int) {
	if port >= 0 && port < len(p.mtus) && mtu > 0 {
		p.mtus[port].Store(int32(mtu))
	}
}

// mtu returns the MTU in force on a port.
func (p *Pipeline) mtu(port int) int { return int(p.mtus[port].Load()) }

// Expectations returns the shared expectation table.
func (p *Pipeline) Expectations() *conntrack.Expectations { return p.expect }

// Workers returns the number of workers.
func (p *Pipeline) Workers() int { return len(p.workers) }

// Now returns the pipeline's clock.
func (p *Pipeline) Now() int64 { return p.clock() }

// Do runs fn on worker w's goroutine with its table, between batches, and
// waits for it. It returns false if the pipeline is stopped.
func (p *Pipeline) Do(w int, fn func(t *conntrack.Table, now int64)) bool {
	if w < 0 || w >= len(p.workers) {
		return false
	}
	if !p.started || p.stopped.Load() {
		// No worker goroutine runs: the tables are the caller's.
		wk := p.workers[w]
		fn(wk.table, p.clock())
		return true
	}
	return p.workers[w].do(fn)
}

// DoAll runs fn on every worker in turn.
func (p *Pipeline) DoAll(fn func(w int, t *conntrack.Table, now int64)) {
	for i := range p.workers {
		p.Do(i, func(t *conntrack.Table, now int64) { fn(i, t, now) })
	}
}

// ReadInterrupter is implemented by devices whose blocked Read can be made
// to return without closing the device (a read deadline on the TUN file).
type ReadInterrupter interface {
	InterruptRead() error
}

// Close stops the pipeline gracefully: readers stop taking packets (reads
// are interrupted on devices that implement ReadInterrupter; the caller
// must close other devices to unblock them), workers process and write
// everything already queued, then stop. The devices stay open for the
// caller to close. Close is idempotent.
func (p *Pipeline) Close() {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Swap(true) || !p.started {
		return
	}
	for _, port := range p.ports {
		for _, q := range port.Queues {
			if ri, ok := q.(ReadInterrupter); ok {
				ri.InterruptRead()
			}
		}
	}
	p.readerWG.Wait()
	for _, w := range p.workers {
		close(w.quit)
	}
	p.workerWG.Wait()
	p.stopped.Store(true)
}

// Stopping reports whether Close was called.
func (p *Pipeline) Stopping() bool { return p.closed.Load() }

// DefaultWorkers is the number of workers used when none is configured:
// one per CPU the process may use.
func DefaultWorkers() int { return min(runtime.GOMAXPROCS(0), MaxWorkers) }

package pipeline

import (
	"github.com/tunrouter/router/conntrack"
)

// Stats is a snapshot of the whole pipeline's counters.
type Stats struct {
	Workers   []WorkerStats
	Conntrack conntrack.Stats // summed over the workers' tables
	PerTable  []conntrack.Stats
	Readers   []ReaderStats
	Expect    conntrack.ExpectStats
}

// ReaderStats are one device queue reader's counters.
type ReaderStats struct {
	Port, Queue int
	Reads       uint64
	Packets     uint64
	Bytes       uint64
	// QueueFull and QueueWaits are always zero: readers run their
	// workers themselves (run to completion) and have no worker queue to
	// overflow. The fields stay for the counters' consumers.
	QueueFull  uint64
	QueueWaits uint64
	// Contended counts the times the reader waited for a worker busy with
	// another reader's batch.
	Contended uint64
	// WriteErrors counts the device writes of the reader's batches that
	// failed (the reader writes what its workers emit, to any port).
	WriteErrors uint64
	ReadErrors  uint64
	FragHeld    uint64 // fragments held for reassembly
	Defrag      DefragStats
}

// DefragStats mirrors the defragmenter's counters.
type DefragStats = map[string]uint64

// Stats collects every counter. Worker and table counters are copied on
// the workers' goroutines, between batches.
func (p *Pipeline) Stats() Stats {
	var s Stats
	s.Workers = make([]WorkerStats, len(p.workers))
	s.PerTable = make([]conntrack.Stats, len(p.workers))
	for i, w := range p.workers {
		copyStats := func(t *conntrack.Table, now int64) {
			ws := w.stats
			ws.RxPackets = append([]uint64(nil), w.stats.RxPackets...)
			ws.RxBytes = append([]uint64(nil), w.stats.RxBytes...)
			ws.TxPackets = append([]uint64(nil), w.stats.TxPackets...)
			ws.TxBytes = append([]uint64(nil), w.stats.TxBytes...)
			ws.WriteErrs = append([]uint64(nil), w.stats.WriteErrs...)
			s.Workers[i] = ws
			s.PerTable[i] = t.Stats()
		}
		p.Do(i, copyStats)
		s.Conntrack.Add(&s.PerTable[i])
	}
	for _, r := range p.readers {
		s.Readers = append(s.Readers, ReaderStats{
			Port: r.port, Queue: r.queue,
			Reads: r.stats.reads.Load(), Packets: r.stats.packets.Load(), Bytes: r.stats.bytes.Load(),
			Contended: r.stats.contended.Load(), WriteErrors: r.out.writeErrors(), ReadErrors: r.stats.readErrors.Load(),
			FragHeld: r.stats.fragHeld.Load(),
		})
	}
	s.Expect = p.expect.Stats()
	return s
}

// Drops returns the pipeline's drops by reason, summed over workers and
// readers.
func (s *Stats) Drops() [NumDropReasons]uint64 {
	var d [NumDropReasons]uint64
	for i := range s.Workers {
		for r, n := range s.Workers[i].Drops {
			d[r] += n
		}
	}
	for _, r := range s.Readers {
		d[DropQueueFull] += r.QueueFull
		d[DropWrite] += r.WriteErrors
	}
	return d
}

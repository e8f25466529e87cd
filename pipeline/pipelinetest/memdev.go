// Package pipelinetest has an in-memory device for tests and benchmarks of
// the pipeline and of what is built on it (control socket, daemon): the
// test pushes packets in with Send and reads what the pipeline wrote with
// Recv.
package pipelinetest

import (
	"os"
	"sync"
	"time"

	"github.com/tunrouter/router/packet"
)

// MemDev is an in-memory device with the pipeline's Device methods and
// InterruptRead. Reads return up to Batch queued packets at once.
type MemDev struct {
	In    chan []byte // packets the pipeline will read
	Out   chan []byte // packets the pipeline wrote (copies)
	Batch int
	stop  chan struct{}
	once  sync.Once
}

// NewMemDev returns a device that reads up to batch packets per Read and
// buffers 1024 packets each way (4096 written).
func NewMemDev(batch int) *MemDev {
	return &MemDev{In: make(chan []byte, 1024), Out: make(chan []byte, 4096), Batch: batch, stop: make(chan struct{})}
}

// Read blocks for the first packet, then takes what else is queued.
func (d *MemDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case pkt = <-d.In:
	case <-d.stop:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
		if n == len(bufs) || n == d.Batch {
			return n, nil
		}
		select {
		case pkt = <-d.In:
		default:
			return n, nil
		}
	}
}

// Write copies every packet to Out.
func (d *MemDev) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.Out <- append([]byte(nil), b[offset:]...)
	}
	return len(bufs), nil
}

// BatchSize returns Batch.
func (d *MemDev) BatchSize() int { return d.Batch }

// InterruptRead makes Read return os.ErrClosed from now on.
func (d *MemDev) InterruptRead() error { d.once.Do(func() { close(d.stop) }); return nil }

// Send queues a packet for the pipeline to read.
func (d *MemDev) Send(pkt []byte) { d.In <- pkt }

// Recv returns the next packet written to the device, decoded, or nil
// after wait.
func (d *MemDev) Recv(wait time.Duration) *packet.Parsed {
	select {
	case b := <-d.Out:
		var p packet.Parsed
		p.Decode(b)
		return &p
	case <-time.After(wait):
		return nil
	}
}

package tundev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/packet"
)

// Offload I/O: on a queue opened with a virtio-net header the kernel hands
// over TSO/USO super-packets (up to 64 KiB) and packets whose transport
// checksum it left partial; wireguard's Read cuts the former into segments
// and completes the latter, and its Write coalesces segments again. A
// router that forwards between such queues can skip all of that and move
// every packet whole, with its header, as the kernel does when it
// forwards a GSO packet: ReadOffload and WriteOffload do that. The packet
// bytes are the same; only the metadata travels with them.

// errNoVNetHdr is returned by the offload methods of a queue opened
// without a virtio-net header.
var errNoVNetHdr = errors.New("tundev: queue has no virtio-net header (offloads off)")

// Offloading reports whether the queue exchanges a virtio-net header with
// the kernel, that is whether ReadOffload and WriteOffload work.
func (q *queue) Offloading() bool { return q.d.vnetHdr }

// offloadReader is the state of ReadOffload's non-blocking reads (one
// reader per queue).
type offloadReader struct {
	rc     syscall.RawConn
	try    func(fd uintptr) bool // tryRead, bound once (no allocation per call)
	buf    []byte
	n      int
	err    error
	rawErr error // SyscallConn's error, if any
	// idle counts the batches since a non-blocking read last found a
	// packet. A read that finds nothing costs a system call; under light
	// load (every packet read alone) the reader only probes every
	// probeEvery batches.
	idle int
}

// probeEvery: a reader whose non-blocking reads keep finding nothing
// tries one every probeEvery batches (a load that builds up a queue is
// seen within that many packets).
const probeEvery = 8

func (r *offloadReader) tryRead(fd uintptr) bool {
	r.n, r.err = unix.Read(int(fd), r.buf)
	return true // never wait: EAGAIN ends the batch
}

// ReadOffload reads up to len(bufs) packets, each with the virtio-net
// header the kernel put before it: packet i is bufs[i][offset:offset+sizes[i]]
// and offs[i] its metadata. The header is read into the offset bytes
// before the packet (offset must be at least the header's 10 bytes), so
// nothing is copied. The first packet is waited for; the others are taken
// only if the kernel has them queued already (looked for at every call
// while that finds packets, else every few calls). A buffer should hold
// offset+65535 bytes: a GSO packet is not cut.
func (q *queue) ReadOffload(bufs [][]byte, sizes []int, offs []packet.Offload, offset int) (int, error) {
	if !q.d.vnetHdr {
		return 0, errNoVNetHdr
	}
	if offset < virtioNetHdrLen {
		return 0, fmt.Errorf("tundev: offset %d below the %d-byte virtio-net header", offset, virtioNetHdrLen)
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	f := q.File()
	got := 0
	for got == 0 {
		n, err := f.Read(bufs[0][offset-virtioNetHdrLen:])
		if err != nil {
			if errors.Is(err, syscall.EBADFD) {
				err = os.ErrClosed
			}
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) && q.detached() {
				err = fmt.Errorf("tundev: %s was removed: %w (%v)", q.d.subject(), os.ErrClosed, err)
			}
			return 0, err
		}
		if decodeVNetHdr(bufs[0][offset-virtioNetHdrLen:offset+n-virtioNetHdrLen], &offs[0]) {
			sizes[0] = n - virtioNetHdrLen
			got = 1
		}
	}
	r := &q.rd
	if r.rc == nil && r.rawErr == nil {
		r.rc, r.rawErr = f.SyscallConn()
		r.try = r.tryRead
	}
	if r.rawErr != nil {
		return got, nil
	}
	if r.idle > 0 && r.idle%probeEvery != 0 {
		r.idle++
		return got, nil
	}
	first := got
	for got < len(bufs) {
		r.buf = bufs[got][offset-virtioNetHdrLen:]
		if err := r.rc.Read(r.try); err != nil {
			break
		}
		r.buf = nil
		if r.err != nil || r.n <= 0 {
			break // EAGAIN (nothing queued) or an error the next Read reports
		}
		if !decodeVNetHdr(bufs[got][offset-virtioNetHdrLen:offset+r.n-virtioNetHdrLen], &offs[got]) {
			continue
		}
		sizes[got] = r.n - virtioNetHdrLen
		got++
	}
	if got > first {
		r.idle = 0
	} else {
		r.idle++
	}
	return got, nil
}

// WriteOffload writes bufs[i][offset:] with offs[i] as its virtio-net
// header (stored in the offset bytes before the packet, which must be at
// least 10), one write per packet. It returns the number of packets
// written and the first error.
func (q *queue) WriteOffload(bufs [][]byte, offs []packet.Offload, offset int) (int, error) {
	if !q.d.vnetHdr {
		return 0, errNoVNetHdr
	}
	if offset < virtioNetHdrLen {
		return 0, fmt.Errorf("tundev: offset %d below the %d-byte virtio-net header", offset, virtioNetHdrLen)
	}
	f := q.File()
	var first error
	n := 0
	for i, b := range bufs {
		h := b[offset-virtioNetHdrLen:]
		encodeVNetHdr(h, &offs[i])
		if _, err := f.Write(h); err != nil {
			if errors.Is(err, syscall.EBADFD) {
				return n, os.ErrClosed
			}
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}

// decodeVNetHdr reads the virtio-net header at the start of b (the
// packet follows it) into o. It reports false for a header this package
// does not forward whole (legacy UDP fragmentation offload) or that does
// not fit the packet; the packet is then dropped, as wireguard's Read
// does.
func decodeVNetHdr(b []byte, o *packet.Offload) bool {
	if len(b) < virtioNetHdrLen {
		return false
	}
	flags, gso := b[0], b[1]
	*o = packet.Offload{
		GSOSize:    binary.NativeEndian.Uint16(b[4:6]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:8]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:10]),
		NeedsCsum:  flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
		DataValid:  flags&unix.VIRTIO_NET_HDR_F_DATA_VALID != 0,
		ECN:        gso&unix.VIRTIO_NET_HDR_GSO_ECN != 0,
	}
	pkt := b[virtioNetHdrLen:]
	if o.NeedsCsum && int(o.CsumStart)+int(o.CsumOffset)+2 > len(pkt) {
		return false
	}
	switch gso &^ unix.VIRTIO_NET_HDR_GSO_ECN {
	case unix.VIRTIO_NET_HDR_GSO_NONE:
		o.GSOSize, o.ECN = 0, false
		return true
	case unix.VIRTIO_NET_HDR_GSO_TCPV4:
		o.GSO = packet.GSOTCPv4
	case unix.VIRTIO_NET_HDR_GSO_TCPV6:
		o.GSO = packet.GSOTCPv6
	case unix.VIRTIO_NET_HDR_GSO_UDP_L4:
		o.GSO = packet.GSOUDPL4
	default:
		return false
	}
	// The kernel's hdr_len may cover the whole first segment on its
	// forwarding path: take the transport header's own length instead.
	if !o.NeedsCsum || o.GSOSize == 0 {
		return false
	}
	hl := int(o.CsumStart) + 8
	if o.GSO != packet.GSOUDPL4 {
		if int(o.CsumStart)+13 > len(pkt) {
			return false
		}
		hl = int(o.CsumStart) + int(pkt[o.CsumStart+12]>>4)*4
	}
	if hl > len(pkt) {
		return false
	}
	o.HdrLen = uint16(hl)
	return true
}

// encodeVNetHdr writes o as a virtio-net header at the start of b.
func encodeVNetHdr(b []byte, o *packet.Offload) {
	var flags, gso uint8
	if o.NeedsCsum {
		flags |= unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	}
	if o.DataValid {
		flags |= unix.VIRTIO_NET_HDR_F_DATA_VALID
	}
	switch o.GSO {
	case packet.GSOTCPv4:
		gso = unix.VIRTIO_NET_HDR_GSO_TCPV4
	case packet.GSOTCPv6:
		gso = unix.VIRTIO_NET_HDR_GSO_TCPV6
	case packet.GSOUDPL4:
		gso = unix.VIRTIO_NET_HDR_GSO_UDP_L4
	}
	if o.ECN && gso != 0 {
		gso |= unix.VIRTIO_NET_HDR_GSO_ECN
	}
	b[0], b[1] = flags, gso
	hdrLen, gsoSize := o.HdrLen, o.GSOSize
	if gso == 0 {
		hdrLen, gsoSize = 0, 0
	}
	binary.NativeEndian.PutUint16(b[2:4], hdrLen)
	binary.NativeEndian.PutUint16(b[4:6], gsoSize)
	var start, off uint16
	if o.NeedsCsum {
		start, off = o.CsumStart, o.CsumOffset
	}
	binary.NativeEndian.PutUint16(b[6:8], start)
	binary.NativeEndian.PutUint16(b[8:10], off)
}

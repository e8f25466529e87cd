// Package pipeline moves packets: readers take batches from each device
// queue, decode them, reassemble fragments and steer every packet to a
// worker by the symmetric hash of its flow key (ICMP errors by the key of
// the packet they quote), so that both directions of a connection meet the
// same worker. Each worker owns a conntrack.Table and runs, per packet:
// the prerouting chain (notrack, helper assignment), connection tracking,
// the routing decision, TTL and MTU checks, the forward (or input) chain,
// the connection's helper and confirmation, then queues the packet for a
// batched write to its output device.
//
//	device queue ──Read──▶ reader ──decode, defrag, steer──▶ worker w (mutex held)
//	                         │                              │ prerouting chain
//	                         │                              │ conntrack.Track
//	                         │                              │ route, TTL, MTU
//	                         │                              │ forward/input chain
//	                         │                              │ helper, confirm
//	                         │◀──── packets to write ───────┘
//	device queue ◀──Write (batched, GRO; no worker held)
//
// Run to completion: the reader that read a batch runs the batch's
// workers itself, on its own goroutine, holding each worker's mutex while
// it processes that worker's packets of the batch (and waiting for it
// when another reader holds it), then writes what the workers emitted,
// holding none. A packet never changes goroutine between Read and Write,
// as in a bare TUN-to-TUN forwarder, and nothing is queued between
// goroutines: when the workers cannot keep up, the readers fall behind
// and the kernel's device queues absorb (or drop) the excess, as for any
// slow device. Worker w writes to queue w of each device; with one queue
// per worker and several readers per device, the workers' tables are
// processed in parallel. The worker's own goroutine runs only control
// calls (Do) and idle housekeeping.
//
// Nothing on the per-packet path takes a lock or does an atomic
// read-modify-write: a worker's mutex is taken once per batch. The rule
// set is an immutable value behind an atomic pointer, loaded once per
// batch. Expectations are the only shared table, consulted on the miss
// path.
//
// Control-plane work on a worker's table (listing, deleting, statistics)
// runs on the worker's goroutine through Do, between batches (holding the
// worker's mutex).
//
// The pipeline imports conntrack, filter, defrag and packet; it knows
// devices only through the Device interface (the subset of wireguard-go's
// tun.Device it uses), so tests run it over in-memory devices.
package pipeline

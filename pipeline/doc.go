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
//	device queue ──Read──▶ reader ──decode, defrag, steer──▶ worker w
//	                                                        │ prerouting chain
//	                                                        │ conntrack.Track
//	                                                        │ route, TTL, MTU
//	                                                        │ forward/input chain
//	                                                        │ helper, confirm
//	device queue ◀──Write (batched, GRO)────────────────────┘
//
// Run to completion: the reader that read a batch runs the batch's
// workers itself, on its own goroutine, whenever it can take them (a
// worker's mutex, tried without waiting, per batch) and has no earlier
// batch still queued to them; only a worker busy with another reader's
// batch gets the batch through its queue, processed by the worker's own
// goroutine. With one queue per worker the kernel's TUN flow steering
// keeps each flow on the queue its replies are written to (worker w
// writes to queue w), so in the steady state a reader runs its own
// worker and most packets never change goroutine between Read and Write,
// as in a bare TUN-to-TUN forwarder; the two readers of a flow's two
// directions (one per device) meet at its worker and take turns.
//
// Nothing on the per-packet path takes a lock or does an atomic
// read-modify-write: ownership of a worker is taken once per batch, and a
// batch carries a reference count that each worker it was sent to
// decrements once. The rule set is an immutable value behind an atomic
// pointer, loaded once per batch. Expectations are the only shared table,
// consulted on the miss path.
//
// Control-plane work on a worker's table (listing, deleting, statistics)
// runs on the worker's goroutine through Do, between batches (holding the
// worker's mutex).
//
// The pipeline imports conntrack, filter, defrag and packet; it knows
// devices only through the Device interface (the subset of wireguard-go's
// tun.Device it uses), so tests run it over in-memory devices.
package pipeline

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
// Nothing on the per-packet path takes a lock or does an atomic
// read-modify-write: a batch carries a reference count that each worker it
// was sent to decrements once. The rule set is an immutable value behind an
// atomic pointer, loaded once per batch. Expectations are the only shared
// table, consulted on the miss path.
//
// Control-plane work on a worker's table (listing, deleting, statistics)
// runs on the worker's goroutine through Do, between batches.
//
// The pipeline imports conntrack, filter, defrag and packet; it knows
// devices only through the Device interface (the subset of wireguard-go's
// tun.Device it uses), so tests run it over in-memory devices.
package pipeline

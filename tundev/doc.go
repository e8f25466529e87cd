// Package tundev creates, adopts and configures the Linux TUN devices the
// router reads packets from and writes packets to.
//
// Open creates a TUN device (optionally inside another network namespace),
// gives it an MTU, addresses and routes through netlink, and returns a Device
// whose Queues are golang.zx2c4.com/wireguard/tun devices with the batched
// Read(bufs, sizes, offset) / Write(bufs, offset) API. With offloads on (the
// default) every queue is opened with IFF_VNET_HDR: the kernel hands over
// TSO/USO super-packets that Read splits into MTU-sized packets, and Write
// coalesces runs of packets of one flow again (TCP/UDP GRO). Writers must then
// leave at least MinOffset bytes of headroom in front of every packet, and
// should give every buffer spare capacity (up to offset+65535): GRO appends
// the payloads of a run to its first packet's buffer in place and silently
// skips coalescing when that buffer cannot grow. Write may therefore modify
// the buffers it is given. Read buffers should hold offset+65535 bytes (a
// non-segmented packet) and a Read call at least BatchSize buffers.
//
// Ownership: a Device owns its file descriptors. A device the package created
// is not persistent and disappears from the kernel when Close closes its last
// queue; an adopted descriptor (Config.FD, for rootless launchers) is only
// closed, the link itself is left alone.
//
// Concurrency: Open and Close may be called from any goroutine. Each queue
// may be read by one goroutine and written by one goroutine at a time (the
// wireguard device serialises reads and writes internally). Events are
// delivered by one goroutine per Device that Close stops.
//
// Namespaces: creating a device in another network namespace runs on a
// dedicated, locked OS thread that enters the namespace, opens the queues
// and leaves again; if it cannot leave, the thread is discarded rather than
// returned to the Go scheduler. Netlink configuration and link monitoring use
// sockets bound to the device's namespace, so no other goroutine ever runs in
// a foreign namespace.
//
// Preflight reports what a host lacks for running the router (TUN node,
// privileges, user-namespace sysctls); it backs `router doctor`.
package tundev

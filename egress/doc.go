// Package egress is the router's rootless egress: a device whose far side
// is not a link but the host's own sockets, as with slirp4netns, pasta,
// gvisor-tap-vsock or Tailscale's userspace networking. It is the only
// package of the router that imports gVisor.
//
// Packets the pipeline routes to the egress device are written into a
// gVisor netstack that accepts every destination (promiscuous NIC,
// spoofed source addresses). Its TCP and UDP forwarders terminate each
// flow and relay it through an ordinary socket of the router's process:
//
//	inside (TUN) ─▶ pipeline: conntrack, filter, FTP helper ─▶ Queue.Write
//	   ─▶ GRO ─▶ netstack (TCP/UDP endpoint per flow) ◀─relay─▶ host socket
//	   ◀─ Queue.Read ◀─ cut super-segments ◀─ netstack's replies
//
// What netstack sends back (replies, and the packets of port-forwarded
// connections) is read from the device by the pipeline, so conntrack,
// the filter and the FTP helper see both directions of every relayed flow
// like any other traffic; the egress itself filters nothing.
//
// Address mapping (Device.target): a connection to a gateway address goes
// to the host's loopback on the same port when Config.HostLoopback is set
// (slirp4netns' 10.0.2.2); a DNS address, on port 53, goes to the host's
// resolver (slirp4netns' 10.0.2.3); any other destination is connected to
// as it is. Payloads are never rewritten: an FTP server reached through
// the gateway must announce the gateway's address in its 227 reply (for
// vsftpd, pasv_address), or the client must use EPSV, whose 229 reply
// carries only a port; the FTP helper then expects the data connection to
// the gateway, and it is RELATED.
//
// TCP: the client's SYN is answered only once the host connection is
// established (a reset if it fails or the mapping refuses it). FIN and
// RST are passed on both ways: a FIN becomes a half-close (CloseWrite) of
// the other side, a reset a reset; a flow that one side has closed is reset
// after TCPHalfClosedTimeout without data. UDP bypasses netstack (it needs
// only headers): one connected host socket per flow, what the client sends
// is batched onto it (UDP_SEGMENT), the replies are wrapped here; a flow
// ends after UDPTimeout without datagrams, or after
// UDPStreamTimeout once replies have passed and it outlived its first two
// seconds (conntrack's rule); a port unreachable the host reports reaches
// the client as one. ICMP echo: answered by the egress for its own
// addresses, relayed through the host's unprivileged ping sockets
// otherwise (when net.ipv4.ping_group_range allows the router's group).
//
// Throughput: netstack's TCP sends super-segments of up to 64 KiB (host
// GSO) that Read cuts into MSS-sized segments in one copy; runs of
// segments of a flow written by the pipeline are coalesced (gVisor's GRO)
// before netstack processes them; the device has several queues, so
// pipeline readers and workers run in parallel, and a flow's packets
// always use the same queue. Relay buffers are taken from a pool only while
// data moves, so an idle flow holds none.
//
// Resources: MaxFlows bounds the relayed flows (TCP, UDP and echo
// sessions), TCPBuffer each netstack TCP buffer, QueuePackets and
// QueueBytes what waits for the pipeline. Port forwards (Config.Forwards)
// listen on host sockets and open flows from the gateway address to an
// address inside; they enter the pipeline from the egress device.
//
// Concurrency: a Queue may be read by one goroutine and written by any
// number (writes serialise per queue). Close the pipeline before the
// device.
package egress

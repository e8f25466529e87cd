// Package defrag reassembles IPv4 and IPv6 fragments before connection
// tracking, as Linux's nf_defrag_ipv4 and nf_defrag_ipv6 do, so that
// fragments neither bypass tracking and filtering nor are INVALID: the
// pipeline's reader hands every fragment to a Table and tracks the whole
// datagram it returns.
//
// A Table is owned by one goroutine (the reader of one device queue): it
// takes no locks and is given the time with each call. Only Stats may be
// called from other goroutines. Fragments of one datagram must all reach the
// same Table.
//
// Behaviour follows the kernel (net/ipv4/ip_fragment.c,
// net/ipv6/netfilter/nf_conntrack_reasm.c, net/ipv4/inet_fragment.c):
//
//   - Datagrams are keyed by (source, destination, protocol, identification)
//     for IPv4 and (source, destination, identification) for IPv6.
//   - A fragment all of whose bytes were already received is a duplicate:
//     it is dropped and the datagram kept. A fragment that overlaps
//     received bytes otherwise drops the whole datagram (RFC 5722 for IPv6;
//     Linux does the same for IPv4 since 4.19). "Received bytes" are the
//     kernel's runs: stretches received as consecutive fragments in
//     increasing order, so the check is exactly the kernel's.
//   - A datagram lives Config.Timeout (IPv4, ipfrag_time) or
//     Config.Timeout6 (IPv6, nf_conntrack_frag6_timeout) from its first
//     fragment; the timer is not refreshed by later fragments. No ICMP
//     time-exceeded is sent on expiry (the kernel sends none for conntrack's
//     defragmentation either).
//   - When the memory held reaches Config.MaxBytes, new fragments are
//     dropped until expiry frees memory (the kernel's ipfrag_high_thresh;
//     it no longer evicts old datagrams to make room).
//   - The reassembled IPv4 datagram has the first fragment's header
//     (options included), DF set only if the largest fragment had DF, and
//     the ECN bits combined by RFC 3168 5.3 (a mix of not-ECT and ECT drops
//     the datagram, CE wins over ECT). The IPv6 datagram has the first
//     fragment's unfragmentable part, the fragment header removed.
//   - Add reports the largest fragment's size, which the output path uses
//     to refragment (Fragment), so that the router forwards fragments no
//     larger than the sender's (Linux's frag_max_size).
//
// Where this package differs from nf_defrag_ipv6 on purpose: an IPv6
// atomic fragment (offset 0, M clear) is a whole packet (RFC 6946; it is
// not a fragment to packet.Parsed, so it never reaches a Table), whereas
// the kernel queues it with the fragments of its identification, where a
// forged one can complete or destroy another datagram. And where this
// package is stricter than the kernel, it says so at the check
// (the kernel passes some malformed IPv6 fragments through unreassembled;
// here they are dropped, so that nothing untracked gets through). The
// kernel's ipfrag_max_dist (restarting a datagram after 64 fragments from
// the same source arrived in between) is not implemented.
//
// TestKernelDifferential (ROUTER_KERNEL_DEFRAG=1, root) replays a thousand
// fragment sequences through the running kernel's conntrack
// defragmentation and through a Table and requires the same datagrams to
// come out.
package defrag

// Package conformance is the differential test of the router against the
// Linux kernel's nf_conntrack: the same exact packets go through both, and
// per packet the suite compares whether it was delivered and its ct state
// (new, established, related, invalid, untracked, or "-" when conntrack
// never saw it). Every difference fails unless docs/conformance-deviations.md
// documents it (the kernel's behaviour, ours, and why).
//
// Scenarios (catalogue.go) are packet sequences, each packet with the side
// it comes from, plus an abstract rule set (ordered forward rules on ct
// state, protocol and destination port with accept or drop, a policy, the
// ports the FTP helper is attached to, optional notrack matches) and the
// conntrack sysctls. The generator (gen.go) builds the bytes with
// packet/packettest and tracks TCP sequence numbers; every packet gets a
// unique IPv4 ID or IPv6 flow label ("mark") so that it can be recognised
// wherever it shows up. Packets may carry the state they are built to
// provoke (Want): it is checked against the kernel, so a scenario that
// stops testing what it says fails.
//
// The kernel runner (kernel_linux.go): namespaces client - router - server
// joined by veth pairs. The router namespace forwards with the rule set
// as nftables: notrack in a raw-priority prerouting chain, the FTP helper
// attached with a "ct helper" object, a prerouting chain after conntrack
// that logs every packet's ct state to NFLOG, and the forward chain whose
// rules log their index before their verdict. Conntrack's own INVALID
// reasons reach NFLOG too (nf_conntrack_log_invalid with the namespace's
// nf_log bound to nfnetlink_log). Packets are injected with AF_PACKET on an
// end namespace's veth, below its IP stack, and captured with AF_PACKET on
// the other end; the end namespaces drop everything their own stacks would
// receive or send, so they never answer.
//
// The router runner (router_linux.go): the daemon (go build ./cmd/router,
// or $CONFORMANCE_ROUTER) runs with the rule set translated into its
// configuration, its TUN devices in the client and server namespaces.
// Packets are injected with AF_PACKET on the client's (or server's) TUN,
// which hands the daemon exactly those bytes, and captured on the other
// TUN; the trace file gives each packet's state, INVALID reason and
// verdict.
//
// Run it as root:
//
//	go test -v -run TestConformance ./test/conformance/
//
// It prints "conformance: N scenarios, N packets, N agree". Without root it
// skips (fails with REQUIRE_E2E=1). testdata/mutations.sh breaks the
// router in scratch copies and checks that the suite notices.
package conformance

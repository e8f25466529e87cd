// Package filter is the router's stateful rule filter: ordered rules in
// chains with a default policy, matching conntrack state and packet fields in
// nftables' vocabulary ("ct state established,related accept; ct state
// invalid drop").
//
// A [Spec] (plain strings, as a configuration file holds them) is compiled
// once by [Compile] into an immutable [*Ruleset]. Compile validates every
// rule and reports all problems as [Errors], each naming the chain, rule,
// field and list element, so that the configuration layer can point at the
// file position. It also returns [Warning]s for rules that can never match.
//
// # Chains
//
//   - prerouting: before conntrack. Only matches that need no connection
//     state; actions accept, drop, notrack, helper, continue (counter/log).
//   - input: packets addressed to the router itself (all matches but oif).
//   - forward: routed packets, after conntrack and routing (all matches).
//   - output: packets the router itself sends (all matches but iif).
//
// A chain with no rules and no spec accepts everything (as a missing nft
// chain does).
//
// # Evaluation
//
// Rules are evaluated in order; the first matching rule with a terminal
// action (accept, drop, reject) decides. notrack, helper and continue (alias
// counter, log) are statements: they count, log, record their effect in the
// [Verdict] and evaluation goes on, as nft's "notrack" and "ct helper set"
// do. When no terminal rule matches, the chain's policy decides (Rule -1).
//
// Eval does not allocate. A pre-index by (ct state, protocol class, family)
// skips rules that cannot match the packet; address sets are merged ranges
// searched by bisection, port sets are ranges or a 64 Ki-bit bitmap.
//
// # Concurrency
//
// A Ruleset is immutable once built: all pipeline workers call Eval on it
// concurrently; the daemon publishes it through an atomic.Pointer and swaps
// it on reload (conntrack state lives elsewhere and is kept). Per-rule
// packet and byte counters have one slot per worker, written only by that
// worker with atomic stores (no read-modify-write shared between cores) and
// summed by [Ruleset.Counters].
//
// # Match semantics worth knowing
//
//   - Matches in a rule are ANDed; list values are ORed ("any of").
//   - "!" before an address, port, set, interface, state, status, reason,
//     ICMP type/code or flag expression negates it. In a list, either all
//     elements are negated ("not any of these") or none.
//   - Address matches apply only to the families they name: "10.0.0.0/8"
//     (or "!10.0.0.0/8") never matches an IPv6 packet, as nft's "ip saddr"
//     implies "meta nfproto ipv4".
//   - sport/dport imply a protocol with ports (tcp, udp, udplite, sctp);
//     icmp_type/icmp_code imply icmp; icmpv6_* imply icmpv6; tcp_flags
//     implies tcp. Non-first fragments have no ports and never match them.
//   - ct_direction, ct_status and ct_helper need a connection: they never
//     match INVALID or UNTRACKED packets, even negated (nft's ct expression
//     breaks the rule when there is no conntrack). ct_reason implies
//     ct state invalid.
//   - tcp_flags follows nft: "syn" or "syn,ack" matches when any of the
//     flags is set; "syn / syn,ack,rst,fin" matches when the flags masked by
//     the part after "/" equal the part before it ("SYN only": SYN set and
//     ACK, RST, FIN clear); "== syn,ack" compares all eight bits; an
//     all-of match is written "syn,ack / syn,ack". "!" negates any form.
//   - ct_helper matches the helper of the connection's master, as nft's
//     "ct helper" does: it selects RELATED data connections announced by
//     the FTP helper.
package filter

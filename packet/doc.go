// Package packet turns the bytes of an IP packet into facts without
// allocating: the IPv4/IPv6 header (with the IPv6 extension-header chain
// walked), the transport header (TCP with its options, UDP, ICMP, ICMPv6),
// the quoted packet inside ICMP/ICMPv6 errors, and a packed, comparable
// flow key with a symmetric hash.
//
// It is a leaf package: it imports only the standard library, so that
// conntrack, the filter, the FTP helper and the pipeline share one decoder.
//
// A Parsed is reusable: Decode overwrites every field. Malformed input never
// panics; it decodes to a Parsed whose Err says what is wrong (an enumerated
// DecodeError with a stable text such as "ip: truncated header").
package packet

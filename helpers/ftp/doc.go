// Package ftp is the FTP application-level gateway: a conntrack.Helper
// that reads the control connection's PORT and EPRT commands and 227 and
// 229 replies and announces the data connection they set up as an
// expectation, so that its first packet is RELATED to the control
// connection (the behaviour of Linux's nf_conntrack_ftp).
//
// The parsers (ParsePORT, ParseEPRT, Parse227, Parse229) are pure
// functions over a segment's payload that follow the kernel's parsing rules
// exactly, quirks included: no range check on numbers, empty fields are 0,
// a malformed or truncated command is "partial" and its packet is dropped.
// They also report where the announced text lies, for NAT to rewrite it
// later.
//
// The Helper keeps, per control connection, the sequence numbers that
// follow a newline in each direction and only parses a segment that starts
// at one of them; it checks that the announced address is the sender's own
// (FTP bounce protection) and adds at most one expectation per control
// connection. It allocates once per control connection (its state) and
// never per packet; its counters are atomic and can be read at any time.
package ftp

package ftp

import (
	"encoding/binary"
	"net/netip"
)

// Result is the outcome of matching one FTP pattern at the start of a
// segment.
type Result uint8

// Results. The helper lets a NoMatch segment pass, creates an expectation
// for a Match and drops a Partial one (the sender retransmits it; the
// kernel drops too, so that a command is never half-seen).
const (
	NoMatch Result = iota // the segment does not start with the pattern
	Match                 // the pattern matched and the address and port parsed
	Partial               // a prefix of the pattern, or the pattern followed by something malformed
)

var resultNames = [...]string{NoMatch: "nomatch", Match: "match", Partial: "partial"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "Result(?)"
}

// Kind says which command or reply a Command came from.
type Kind uint8

// Kinds, in the order of the kernel's enum nf_ct_ftp_type.
const (
	KindPORT Kind = iota // PORT h1,h2,h3,h4,p1,p2 (RFC 959), client to server
	KindPASV             // 227 reply to PASV (RFC 959/1123), server to client
	KindEPRT             // EPRT |af|addr|port| (RFC 2428), client to server
	KindEPSV             // 229 reply to EPSV, (|||port|) (RFC 2428), server to client
	numKinds
)

var kindNames = [numKinds]string{"PORT", "227", "EPRT", "229"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "Kind(?)"
}

// Command is what a parser found in a segment.
type Command struct {
	Kind Kind
	// Addr is the announced address: IPv4 for PORT, 227 and EPRT |1|
	// (built from 32 bits as the kernel does, see ParsePORT), IPv6 for EPRT
	// |2|, and the zero Addr for 229, which announces only a port.
	Addr netip.Addr
	// Port is the announced port (never 0 for EPRT and 229; PORT and 227
	// may announce 0, which the kernel accepts).
	Port uint16
	// Off and Len locate the announced text in the segment, for a NAT
	// helper that rewrites it: PORT from after the space to before '\r';
	// 227 from the first digit to the end of the sixth number; EPRT from
	// the first delimiter through the last; 229 the "|||port|" part.
	Off, Len int
}

// Every parser matches its pattern only at the start of b (the start of a
// TCP segment's payload): the kernel never searches further, so a second
// command later in the same segment is ignored.
//
// Common rules (the kernel's find_pattern): the pattern is compared
// case-insensitively. If b is not longer than the pattern, b is Partial
// when it is a prefix of the pattern ("PO", "227", "227 ") and NoMatch
// otherwise; an empty b is therefore Partial (the helper never passes one).
// PORT, EPRT and 229 then skip to the first ' ' (PORT, EPRT) or '(' (229)
// anywhere after the pattern; if there is none, Partial. Any failure of
// the number parsing after that is Partial.

// ParsePORT parses an RFC 959 PORT command: "PORT" (any case), anything up
// to the first space, then exactly six decimal numbers separated by ','
// and followed by '\r'.
//
// Like the kernel: there is no range check (each number accumulates in 32
// bits; the address is n1<<24 | n2<<16 | n3<<8 | n4 in 32 bits, so a value
// over 255 spills into the octet to its left, and the port is the low 16
// bits of n5<<8 | n6); an empty field counts as 0 (",,"); leading zeros are
// fine; any other character, a space after a comma, a missing number, or a
// terminator other than '\r' make it Partial.
func ParsePORT(b []byte) (Command, Result) {
	start, r := findPattern(b, "PORT", ' ')
	if r != Match {
		return Command{}, r
	}
	var v [6]uint32
	n, ok := parseNumbers(b[start:], v[:], ',', '\r')
	if !ok {
		return Command{}, Partial
	}
	return Command{Kind: KindPORT, Addr: addr4(v[:4]), Port: uint16(v[4]<<8 | v[5]), Off: start, Len: n}, Match
}

// Parse227 parses a 227 reply to PASV: "227 " (with the space), then,
// because RFC 1123 says the reply's format varies, everything up to the
// first decimal digit anywhere in the segment is skipped, and six numbers
// separated by ',' are parsed as for PORT, ended by any character other
// than a digit or ',' (')', '.', '\r'). A reply whose first digit belongs
// to something else ("227 Mode 2 (...)"), or that has no digit at all, or
// whose numbers run to the end of the segment, is Partial (the kernel
// drops it).
func Parse227(b []byte) (Command, Result) {
	start, r := findPattern(b, "227 ", 0)
	if r != Match {
		return Command{}, r
	}
	i := start
	for i < len(b) && !isDigit(b[i]) {
		i++
	}
	if i == len(b) {
		return Command{}, Partial
	}
	var v [6]uint32
	n, ok := parseNumbers(b[i:], v[:], ',', 0)
	if !ok {
		return Command{}, Partial
	}
	return Command{Kind: KindPASV, Addr: addr4(v[:4]), Port: uint16(v[4]<<8 | v[5]), Off: i, Len: n}, Match
}

// ParseEPRT parses an RFC 2428 EPRT command on a control connection of the
// given family (4 or 6; anything but 4 is taken as 6): "EPRT", anything up
// to the first space, then <d><af><d><addr><d><port><d> where <d> is any
// character from '!' to '~' except a digit, and the same character at both
// of its first two places.
//
// <af> must be '1' on an IPv4 control connection and '2' on an IPv6 one;
// anything else is Partial (so the kernel drops the packet). For '1' the
// address is four decimal numbers separated by '.', parsed like PORT's (no
// range check) and ended by <d>. For '2' it is IPv6 text as the kernel's
// in6_pton reads it (see parseIPv6). The port is decimal digits ended by
// <d>, accumulated in 16 bits (so 65536 wraps to 0 and 65537 to 1); a port
// of 0, a missing port or a non-digit is Partial.
func ParseEPRT(b []byte, family uint8) (Command, Result) {
	start, r := findPattern(b, "EPRT", ' ')
	if r != Match {
		return Command{}, r
	}
	d := b[start:]
	if len(d) <= 3 {
		return Command{}, Partial
	}
	delim := d[0]
	if !isDelim(delim) || d[2] != delim {
		return Command{}, Partial
	}
	want := byte('2')
	if family == 4 {
		want = '1'
	}
	if d[1] != want {
		return Command{}, Partial
	}
	cmd := Command{Kind: KindEPRT, Off: start}
	var end int // index in d of the character that ended the address
	if want == '1' {
		var v [4]uint32
		n, ok := parseNumbers(d[3:], v[:], '.', delim)
		if !ok {
			return Command{}, Partial
		}
		cmd.Addr = addr4(v[:])
		end = 3 + n
	} else {
		a, n, ok := parseIPv6(d[3:], delim)
		if !ok {
			return Command{}, Partial
		}
		cmd.Addr = netip.AddrFrom16(a)
		end = 3 + n
	}
	// Like the kernel, the character that ended the address is skipped
	// without being checked: the IPv6 parser may stop at a NUL byte or,
	// after an embedded IPv4 address, at a ':'.
	port, n, ok := parsePort(d, end+1, delim)
	if !ok {
		return Command{}, Partial
	}
	cmd.Port, cmd.Len = port, n
	return cmd, Match
}

// Parse229 parses a 229 reply to EPSV: "229 " (with the space), anything
// up to the first '(', then three identical delimiters (a character from
// '!' to '~' except a digit), the port as for EPRT, and the delimiter. The
// closing ')' is not checked. The reply names no address: the data
// connection goes to the server's address on the control connection.
func Parse229(b []byte) (Command, Result) {
	start, r := findPattern(b, "229 ", '(')
	if r != Match {
		return Command{}, r
	}
	d := b[start:]
	if len(d) <= 3 {
		return Command{}, Partial
	}
	delim := d[0]
	if !isDelim(delim) || d[1] != delim || d[2] != delim {
		return Command{}, Partial
	}
	port, n, ok := parsePort(d, 3, delim)
	if !ok {
		return Command{}, Partial
	}
	return Command{Kind: KindEPSV, Port: port, Off: start, Len: n}, Match
}

// findPattern matches pattern case-insensitively at the start of b and, if
// skip is not 0, skips to just after the first skip character that follows
// it. It returns the index where the numbers start.
func findPattern(b []byte, pattern string, skip byte) (int, Result) {
	if len(b) <= len(pattern) {
		if equalFold(b, pattern[:len(b)]) {
			return 0, Partial
		}
		return 0, NoMatch
	}
	if !equalFold(b[:len(pattern)], pattern) {
		return 0, NoMatch
	}
	i := len(pattern)
	if skip != 0 {
		for i < len(b) && b[i] != skip {
			i++
		}
		if i == len(b) {
			return 0, Partial
		}
		i++
	}
	return i, Match
}

// equalFold compares ASCII case-insensitively; pattern holds no letters
// outside A-Z.
func equalFold(b []byte, pattern string) bool {
	for i := range len(b) {
		c, p := b[i], pattern[i]
		if c == p {
			continue
		}
		if 'a' <= c && c <= 'z' && c-'a'+'A' == p {
			continue
		}
		return false
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isDelim reports whether c may delimit EPRT and 229 fields.
func isDelim(c byte) bool { return c >= 33 && c <= 126 && !isDigit(c) }

// parseNumbers reads len(v) decimal numbers separated by sep from the start
// of b and returns the index of the character that ended the last one.
// That character must be term, or, when term is 0, anything but a digit
// or sep. Numbers accumulate in 32 bits without a range check (overflow
// wraps) and an empty field is 0. Running out of input, a character that
// is none of digit, sep and terminator, a terminator before the last
// number, or one separator too many all fail.
func parseNumbers(b []byte, v []uint32, sep, term byte) (int, bool) {
	clear(v)
	f := 0
	for i, c := range b {
		switch {
		case isDigit(c):
			v[f] = v[f]*10 + uint32(c-'0')
		case c == sep:
			f++
			if f == len(v) {
				return 0, false
			}
		default:
			if (term == 0 || c == term) && f == len(v)-1 {
				return i, true
			}
			return 0, false
		}
	}
	return 0, false
}

// addr4 builds the 32-bit address n1<<24 | n2<<16 | n3<<8 | n4 (bits of
// values over 255 spill to the left and the highest are lost).
func addr4(v []uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v[0]<<24|v[1]<<16|v[2]<<8|v[3])
	return netip.AddrFrom4(a)
}

// parsePort reads decimal digits from b[start:] up to delim, accumulating
// in 16 bits, and returns the port and the index just after delim. A port
// of 0 (also one that wrapped to 0), a non-digit before delim, or no delim
// fail.
func parsePort(b []byte, start int, delim byte) (port uint16, n int, ok bool) {
	for i := start; i < len(b); i++ {
		c := b[i]
		switch {
		case c == delim:
			if port == 0 {
				return 0, 0, false
			}
			return port, i + 1, true
		case isDigit(c):
			port = port*10 + uint16(c-'0')
		default:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// What may come next while reading an IPv6 address (parseIPv6).
const (
	v6Hex       = 1 << iota // another hex digit of the current group
	v6ColonSep              // ':' ending a group, not the start of "::"
	v6ColonOpen             // ':' that ends a group or starts "::" (where "::" is still possible)
	v6ColonTwo              // the second ':' of "::"
	v6Dot                   // '.': the current group starts an embedded IPv4 address
	v6End                   // the end of the address

	v6Colons = v6ColonSep | v6ColonOpen | v6ColonTwo
)

// parseIPv6 reads IPv6 text at the start of b the way the kernel's
// in6_pton does for the FTP helper, and returns the address and the index
// of the character that ended it. The end is delim, a NUL byte, or the end
// of b (the caller then finds no port). Accepted:
//
//   - eight groups of hex digits separated by ':', or fewer with one "::"
//     standing for one or more zero groups (also at either end);
//   - a group may have more than four digits if the extra ones are leading
//     zeros ("00000001"); a group may not exceed 0xffff;
//   - the last 32 bits may be an embedded IPv4 address (four decimal
//     octets, 0..255 each, leading zeros allowed), which ends the address
//     at the first delim, NUL or ':' after it.
//
// Rejected: zones ("%eth0"), a single leading or trailing ':', ":::",
// two "::", too many or too few groups, hex digits in an embedded IPv4
// address, and any other character.
func parseIPv6(b []byte, delim byte) (addr [16]byte, end int, ok bool) {
	var buf [16]byte
	n := 0    // bytes of buf filled
	gap := -1 // where the "::" zeros go
	var group uint32
	pending := false // a group (maybe empty, hence zero) is to be stored at the next ':' or end
	groupStart := 0
	next := v6ColonOpen | v6Hex

	for i := 0; ; i++ {
		var c byte
		atEnd := i >= len(b)
		if !atEnd {
			c = b[i]
		}
		switch {
		case atEnd || c == delim || c == 0 || c == ':':
			isEnd := atEnd || c == delim || c == 0
			if isEnd && next&v6End == 0 || !isEnd && next&v6Colons == 0 {
				return addr, i, false
			}
			if pending {
				buf[n], buf[n+1] = byte(group>>8), byte(group)
				n += 2
			}
			group = 0
			if isEnd {
				return assembleIPv6(&buf, n, gap), i, true
			}
			pending = true
			switch next & v6Colons {
			case v6ColonTwo:
				gap = n
				next = v6Hex | v6End
				if gap >= len(buf) {
					pending = false
				}
			case v6ColonSep | v6ColonOpen:
				next = v6Hex | v6ColonTwo
			case v6ColonSep:
				next = v6Hex
			case v6ColonOpen:
				next = v6ColonTwo
			default:
				next = 0
			}
			groupStart = i + 1
		case c == '.':
			if next&v6Dot == 0 {
				return addr, i, false
			}
			e, ok := parseIPv4Tail(b[groupStart:], delim, buf[n:n+4])
			if !ok {
				return addr, groupStart + e, false
			}
			return assembleIPv6(&buf, n+4, gap), groupStart + e, true
		default:
			h, isHex := hexVal(c)
			if !isHex || next&v6Hex == 0 {
				return addr, i, false
			}
			group = group<<4 | h
			pending = true
			next = v6ColonSep | v6End
			if group&0xf000 == 0 {
				next |= v6Hex
			}
			if gap < 0 && n+2 < len(buf) {
				next = next&^v6End | v6ColonOpen
			}
			if n+2 >= len(buf) {
				next &^= v6ColonSep | v6ColonOpen
			}
		}
		// After every colon or digit: where an embedded IPv4 address may
		// start, and nothing but the end once the buffer is full.
		if gap >= 0 && n+4 < len(buf) || n+4 == len(buf) {
			next |= v6Dot
		}
		if n >= len(buf) {
			next &^= v6Hex | v6Colons
		}
	}
}

// assembleIPv6 moves the groups after the "::" to the end of the address
// and fills the gap with zeros.
func assembleIPv6(buf *[16]byte, n, gap int) [16]byte {
	if gap < 0 {
		return *buf
	}
	var a [16]byte
	copy(a[:gap], buf[:gap])
	copy(a[16-(n-gap):], buf[gap:n])
	return a
}

// parseIPv4Tail reads the embedded IPv4 address that ends IPv6 text, as the
// kernel's in4_pton does: four decimal octets separated by '.', each at
// most 255 and not empty, ended by delim, a NUL byte, ':' or the end of b.
// It stores the octets in out and returns the index of the ending
// character.
func parseIPv4Tail(b []byte, delim byte, out []byte) (int, bool) {
	var oct [4]byte
	k := 0
	val, digits := 0, 0
	for i := 0; ; i++ {
		var c byte
		atEnd := i >= len(b)
		if !atEnd {
			c = b[i]
		}
		// The delimiter is tested first: it may itself be '.' or ':'.
		isEnd := atEnd || c == delim || c == 0 || c == ':'
		switch {
		case isEnd || c == '.':
			if digits == 0 {
				return i, false
			}
			oct[k] = byte(val)
			k++
			val, digits = 0, 0
			if isEnd {
				if k != 4 {
					return i, false
				}
				copy(out, oct[:])
				return i, true
			}
			if k >= 4 {
				return i, false
			}
		case isDigit(c):
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return i, false
			}
		default:
			return i, false
		}
	}
}

func hexVal(c byte) (uint32, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint32(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint32(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint32(c-'A') + 10, true
	}
	return 0, false
}

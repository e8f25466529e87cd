package filter

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tunrouter/router/packet"
)

// splitNeg removes a leading "!" (and spaces after it).
func splitNeg(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "!") {
		return strings.TrimSpace(s[1:]), true
	}
	return s, false
}

// splitList splits "a,b , c" (and nft's "a|b") into trimmed parts.
func splitList(s string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '|' })
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

// parsePort parses "80" or "1024-65535".
func parsePort(s string) (range16, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := portNumber(strings.TrimSpace(lo))
	if err != nil {
		return range16{}, err
	}
	if !isRange {
		return range16{a, a}, nil
	}
	b, err := portNumber(strings.TrimSpace(hi))
	if err != nil {
		return range16{}, err
	}
	if a > b {
		return range16{}, fmt.Errorf("port range %q is reversed (%d > %d)", s, a, b)
	}
	return range16{a, b}, nil
}

func portNumber(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("empty port")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("port %s out of range 0..65535", s)
		}
		return 0, fmt.Errorf("invalid port %q (want a number 0..65535, \"lo-hi\" or \"@set\")", s)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 0..65535", n)
	}
	return uint16(n), nil
}

// parseAddr parses a prefix ("10.0.0.0/8"), an address ("10.0.0.1", a host
// prefix) or an address range ("10.0.0.1-10.0.0.9"). A prefix with host
// bits set is an error: it usually means a typo.
func parseAddr(s string, b *addrBuilder) error {
	if from, to, ok := strings.Cut(s, "-"); ok && !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return fmt.Errorf("invalid address range %q: %v", s, shortAddrErr(err))
		}
		z, err := netip.ParseAddr(strings.TrimSpace(to))
		if err != nil {
			return fmt.Errorf("invalid address range %q: %v", s, shortAddrErr(err))
		}
		if a.Zone() != "" || z.Zone() != "" {
			return fmt.Errorf("invalid address range %q: zones are not allowed", s)
		}
		if a.Is4() != z.Is4() {
			return fmt.Errorf("address range %q mixes IPv4 and IPv6", s)
		}
		if z.Less(a) {
			return fmt.Errorf("address range %q is reversed", s)
		}
		b.addRange(a, z)
		return nil
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("invalid address or prefix %q: %v", s, shortAddrErr(err))
		}
		if a.Zone() != "" {
			return fmt.Errorf("invalid address %q: zones are not allowed", s)
		}
		b.addPrefix(netip.PrefixFrom(a, a.BitLen()))
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("invalid prefix %q: %v", s, shortAddrErr(err))
	}
	if p.Masked() != p {
		return fmt.Errorf("prefix %s has host bits set (did you mean %s?)", s, p.Masked())
	}
	b.addPrefix(p)
	return nil
}

// shortAddrErr strips netip's repetition of the input from its messages.
func shortAddrErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "): "); i >= 0 {
		return s[i+3:]
	}
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// parseProto parses a protocol name or number.
func parseProto(s string) (packet.Proto, error) {
	switch s {
	case "icmp6", "ipv6-icmp":
		return packet.ICMPv6, nil
	case "ipv6-frag", "hopopts", "ipv6-route", "ipv6-opts", "ipv6-nonxt":
		return 0, fmt.Errorf("protocol %q is an IPv6 extension header, not a transport protocol", s)
	}
	if p, ok := packet.ProtoByName(s); ok {
		return p, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > 255 {
		return 0, fmt.Errorf("unknown protocol %q (want tcp, udp, icmp, icmpv6, udplite, sctp, gre, esp, ah, or 0..255)", s)
	}
	return packet.Proto(n), nil
}

// ICMP type and code names as nft spells them.
var (
	icmpTypeNames = map[string]uint8{
		"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
		"echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
		"time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
		"timestamp-reply": 14, "info-request": 15, "info-reply": 16,
		"address-mask-request": 17, "address-mask-reply": 18,
	}
	icmpCodeNames = map[string]uint8{
		"net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2,
		"port-unreachable": 3, "frag-needed": 4, "net-prohibited": 9,
		"host-prohibited": 10, "admin-prohibited": 13,
	}
	icmpv6TypeNames = map[string]uint8{
		"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
		"parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
		"mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
		"mld-listener-reduction": 132, "nd-router-solicit": 133, "nd-router-advert": 134,
		"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
		"router-renumbering": 138, "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142,
		"mld2-listener-report": 143,
	}
	icmpv6CodeNames = map[string]uint8{
		"no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3,
		"port-unreachable": 4, "policy-fail": 5, "reject-route": 6,
	}
)

func parseByteName(s string, names map[string]uint8, what string) (uint8, error) {
	if v, ok := names[s]; ok {
		return v, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unknown %s %q", what, s)
	}
	if n > 255 {
		return 0, fmt.Errorf("%s %d out of range 0..255", what, n)
	}
	return uint8(n), nil
}

var tcpFlagNames = map[string]packet.TCPFlags{
	"fin": packet.FIN, "syn": packet.SYN, "rst": packet.RST, "psh": packet.PSH,
	"ack": packet.ACK, "urg": packet.URG, "ecn": packet.ECE, "ece": packet.ECE, "cwr": packet.CWR,
}

func parseFlagList(s string) (packet.TCPFlags, error) {
	parts := splitList(s)
	if len(parts) == 0 {
		return 0, fmt.Errorf("no TCP flags in %q", s)
	}
	var f packet.TCPFlags
	for _, p := range parts {
		v, ok := tcpFlagNames[strings.ToLower(p)]
		if !ok {
			return 0, fmt.Errorf("unknown TCP flag %q (want fin, syn, rst, psh, ack, urg, ece, cwr)", p)
		}
		f |= v
	}
	return f, nil
}

// parseTCPFlags compiles a tcp_flags expression into the set of flag bytes
// it matches (see the package doc for the syntax).
func parseTCPFlags(s string) (bits256, error) {
	expr, neg := splitNeg(s)
	var match func(f uint8) bool
	switch {
	case strings.HasPrefix(expr, "=="):
		want, err := parseFlagList(expr[2:])
		if err != nil {
			return bits256{}, err
		}
		match = func(f uint8) bool { return f == uint8(want) }
	case strings.Contains(expr, "/"):
		v, m, _ := strings.Cut(expr, "/")
		want, err := parseFlagList(v)
		if err != nil {
			return bits256{}, err
		}
		mask, err := parseFlagList(m)
		if err != nil {
			return bits256{}, err
		}
		if want&^mask != 0 {
			return bits256{}, fmt.Errorf("tcp_flags %q can never match: %v is not within the mask %v", s, want&^mask, mask)
		}
		match = func(f uint8) bool { return f&uint8(mask) == uint8(want) }
	default:
		any, err := parseFlagList(expr)
		if err != nil {
			return bits256{}, err
		}
		match = func(f uint8) bool { return f&uint8(any) != 0 }
	}
	var b bits256
	for f := 0; f < 256; f++ {
		if match(uint8(f)) != neg {
			b.set(uint8(f))
		}
	}
	return b, nil
}

// parseLogLevel accepts syslog names (as nft's "log level") and slog's.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "warn", "warning":
		return slog.LevelWarn, nil
	case "emerg", "alert", "crit", "err", "error":
		return slog.LevelError, nil
	case "notice", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, notice, warn, err, crit, alert, emerg)", s)
}

// RejectKind says what a reject sends.
type RejectKind uint8

// Reject kinds.
const (
	RejectNone     RejectKind = iota
	RejectTCPReset            // a TCP RST answering the segment
	RejectICMP                // an ICMP/ICMPv6 error (Verdict.ICMPType/ICMPCode)
)

func (k RejectKind) String() string {
	switch k {
	case RejectTCPReset:
		return "tcp-reset"
	case RejectICMP:
		return "icmp"
	}
	return "none"
}

// rejectSpec is a compiled reject_with.
type rejectSpec struct {
	auto   bool // TCP: RST, otherwise port unreachable
	tcp    bool // always RST
	t4, c4 uint8
	t6, c6 uint8
}

// rejectNames maps reject_with values to ICMP (type, code) for IPv4 and
// IPv6, as nft's icmpx names do for the inet family.
var rejectNames = map[string]rejectSpec{
	"port-unreachable": {t4: 3, c4: 3, t6: 1, c6: 4},
	"host-unreachable": {t4: 3, c4: 1, t6: 1, c6: 3},
	"addr-unreachable": {t4: 3, c4: 1, t6: 1, c6: 3},
	"net-unreachable":  {t4: 3, c4: 0, t6: 1, c6: 0},
	"no-route":         {t4: 3, c4: 0, t6: 1, c6: 0},
	"admin-prohibited": {t4: 3, c4: 13, t6: 1, c6: 1},
	"host-prohibited":  {t4: 3, c4: 10, t6: 1, c6: 1},
	"net-prohibited":   {t4: 3, c4: 9, t6: 1, c6: 1},
}

func parseReject(s string) (rejectSpec, error) {
	switch s {
	case "":
		r := rejectNames["port-unreachable"]
		r.auto = true
		return r, nil
	case "tcp-reset", "tcp reset", "tcp-rst":
		return rejectSpec{tcp: true}, nil
	}
	if r, ok := rejectNames[s]; ok {
		return r, nil
	}
	return rejectSpec{}, fmt.Errorf("unknown reject_with %q (want tcp-reset, port-unreachable, host-unreachable, net-unreachable, no-route, addr-unreachable, admin-prohibited, host-prohibited, net-prohibited)", s)
}

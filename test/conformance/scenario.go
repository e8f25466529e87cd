package conformance

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Side is the end a packet comes from.
type Side uint8

// The two ends. The client is on the router's first link, the server on
// its second; "original direction" for a connection the client opens.
const (
	Client Side = iota
	Server
)

func (s Side) String() string {
	if s == Client {
		return "client"
	}
	return "server"
}

// Other returns the opposite side.
func (s Side) Other() Side { return 1 - s }

// User-visible ct states as both runners report them. StateNone means the
// packet never reached connection tracking (the IP layer dropped it).
const (
	StateNew         = "new"
	StateEstablished = "established"
	StateRelated     = "related"
	StateInvalid     = "invalid"
	StateUntracked   = "untracked"
	StateNone        = "-"
)

var ctStates = []string{StateNew, StateEstablished, StateRelated, StateInvalid, StateUntracked}

// Packet is one packet of a scenario: its exact bytes (IP header first) and
// the side it enters the router from. The generator gives every packet a
// unique IPv4 ID or IPv6 flow label (Mark) so that captures can be matched
// to it.
type Packet struct {
	From  Side
	Bytes []byte
	Note  string // what it is, for the report ("client SYN", "RST below max ack")
	// Want, when set, is the state this packet is built to provoke in the
	// kernel ("invalid", "related", ...). It documents the scenario's
	// intent and is checked against the kernel: a scenario that no longer
	// exercises what it claims fails, whatever the router does.
	Want string
	// Mark is the packet's IPv4 ID or IPv6 flow label (set by Finish).
	Mark uint32
}

// Rule is one rule of the abstract rule set: all given matches must hold
// (empty or zero = any).
type Rule struct {
	States []string // ct states
	Proto  string   // "tcp", "udp", "icmp", "icmpv6"
	DPort  uint16   // needs Proto tcp or udp
	Action string   // "accept" or "drop"
}

// Match is a protocol and destination port, for notrack and helper
// assignment.
type Match struct {
	Proto string
	DPort uint16
}

// Ruleset is the abstract rule set of a scenario: the forward chain's
// ordered rules and policy, whether the FTP helper is attached (to new TCP
// connections to HelperPorts), and optional notrack matches.
type Ruleset struct {
	Rules       []Rule
	Policy      string // "accept" or "drop"
	HelperPorts []uint16
	Notrack     []Match
}

// Sysctls are the conntrack knobs a scenario sets (both runners start from
// the Linux defaults: checksum on, loose on, liberal off, ignore-invalid-rst
// off).
type Sysctls struct {
	NoChecksum       bool
	NoLoose          bool
	BeLiberal        bool
	IgnoreInvalidRST bool
}

// Scenario is a packet sequence with its rule set.
type Scenario struct {
	Name    string
	Section string // the section of the behavioural reference it covers ("2.6", "6.4", ...)
	Doc     string
	Rules   Ruleset
	Sysctls Sysctls
	Packets []Packet
}

// Addresses used by every scenario. The router's own addresses (.1) are on
// its devices; the client (.2 on link 1) and the server (.2 on link 2) are
// not configured anywhere: packets are injected and captured below the
// host stacks.
var (
	Client4 = netip.MustParseAddr("10.0.1.2")
	Server4 = netip.MustParseAddr("10.0.2.2")
	Router4 = [2]netip.Prefix{netip.MustParsePrefix("10.0.1.1/24"), netip.MustParsePrefix("10.0.2.1/24")}
	Client6 = netip.MustParseAddr("fd00:1::2")
	Server6 = netip.MustParseAddr("fd00:2::2")
	Router6 = [2]netip.Prefix{netip.MustParsePrefix("fd00:1::1/64"), netip.MustParsePrefix("fd00:2::1/64")}
)

// SideOf returns the side whose link holds addr.
func SideOf(addr netip.Addr) (Side, bool) {
	for i, p := range [...]netip.Prefix{Router4[0], Router4[1], Router6[0], Router6[1]} {
		if p.Contains(addr) {
			return Side(i % 2), true
		}
	}
	return 0, false
}

// Validate checks a scenario for mistakes that would make the comparison
// meaningless: unknown states or actions, ports without protocol, packets
// that do not go from one link to the other.
func (s *Scenario) Validate() error {
	if s.Name == "" || strings.ContainsAny(s.Name, " \t\n#") {
		return fmt.Errorf("scenario %q: name must be non-empty without spaces or '#'", s.Name)
	}
	if s.Section == "" {
		return fmt.Errorf("scenario %s: no section", s.Name)
	}
	if len(s.Packets) == 0 {
		return fmt.Errorf("scenario %s: no packets", s.Name)
	}
	if err := s.Rules.validate(); err != nil {
		return fmt.Errorf("scenario %s: %w", s.Name, err)
	}
	for i, p := range s.Packets {
		if p.Want != "" && !slices.Contains(ctStates, p.Want) && p.Want != StateNone {
			return fmt.Errorf("scenario %s packet %d: unknown Want state %q", s.Name, i, p.Want)
		}
		src, dst, ok := ipAddrs(p.Bytes)
		if !ok {
			return fmt.Errorf("scenario %s packet %d: no IP addresses", s.Name, i)
		}
		ss, ok1 := SideOf(src)
		ds, ok2 := SideOf(dst)
		if !ok1 || !ok2 || ss != p.From || ds != p.From.Other() {
			return fmt.Errorf("scenario %s packet %d: %v -> %v does not go from the %v link to the other", s.Name, i, src, dst, p.From)
		}
		if p.Mark == 0 {
			return fmt.Errorf("scenario %s packet %d: no mark (use Finish)", s.Name, i)
		}
	}
	return nil
}

func (r *Ruleset) validate() error {
	switch r.Policy {
	case "accept", "drop":
	default:
		return fmt.Errorf("policy %q (want accept or drop)", r.Policy)
	}
	for i, ru := range r.Rules {
		for _, st := range ru.States {
			if !slices.Contains(ctStates, st) {
				return fmt.Errorf("rule %d: unknown state %q", i, st)
			}
		}
		switch ru.Proto {
		case "", "tcp", "udp", "icmp", "icmpv6":
		default:
			return fmt.Errorf("rule %d: unknown proto %q", i, ru.Proto)
		}
		if ru.DPort != 0 && ru.Proto != "tcp" && ru.Proto != "udp" {
			return fmt.Errorf("rule %d: dport needs proto tcp or udp", i)
		}
		if ru.Action != "accept" && ru.Action != "drop" {
			return fmt.Errorf("rule %d: action %q (want accept or drop)", i, ru.Action)
		}
	}
	for i, m := range r.Notrack {
		if (m.Proto != "tcp" && m.Proto != "udp") || m.DPort == 0 {
			return fmt.Errorf("notrack %d: needs proto tcp or udp and a port", i)
		}
	}
	return nil
}

// ipAddrs returns the source and destination address of an IPv4 or IPv6
// packet (only the fixed header is needed).
func ipAddrs(b []byte) (src, dst netip.Addr, ok bool) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])), true
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40])), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// markOf returns the packet's IPv4 ID or IPv6 flow label.
func markOf(b []byte) (uint32, bool) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return uint32(b[4])<<8 | uint32(b[5]), true
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return (uint32(b[1])&0xf)<<16 | uint32(b[2])<<8 | uint32(b[3]), true
	}
	return 0, false
}

// setMark writes mark into b's IPv4 ID or IPv6 flow label. The IPv4 header
// checksum is recomputed only when it was right (a deliberately broken one
// stays broken); the transport checksum covers neither field.
func setMark(b []byte, mark uint32) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		ihl := int(b[0]&0xf) * 4
		good := ihl >= 20 && ihl <= len(b) && ipv4HeaderSum(b[:ihl]) == 0xffff
		b[4], b[5] = byte(mark>>8), byte(mark)
		if good {
			b[10], b[11] = 0, 0
			c := ^ipv4HeaderSum(b[:ihl])
			b[10], b[11] = byte(c>>8), byte(c)
		}
		return
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		b[1] = b[1]&0xf0 | byte(mark>>16)&0xf
		b[2], b[3] = byte(mark>>8), byte(mark)
	}
}

func ipv4HeaderSum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// nft renders the rule set for the kernel runner's router namespace: a
// raw-priority chain for notrack, a chain after conntrack that attaches
// the FTP helper, a chain after conntrack that logs every packet's ct
// state (NFLOG group 1, prefix "S:<state>"), and the forward chain whose
// rules log their index before their verdict ("V:<i>", "V:policy").
func (r *Ruleset) nft(table string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	b.WriteString("\tct helper ftp-std { type \"ftp\" protocol tcp; l3proto inet; }\n")
	b.WriteString("\tchain raw { type filter hook prerouting priority raw; policy accept;\n")
	for _, m := range r.Notrack {
		fmt.Fprintf(&b, "\t\tmeta l4proto %s th dport %d notrack\n", m.Proto, m.DPort)
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain observe { type filter hook prerouting priority -150; policy accept;\n")
	for _, st := range ctStates {
		fmt.Fprintf(&b, "\t\tct state %s log prefix \"S:%s\" group 1\n", st, st)
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain helpers { type filter hook prerouting priority -140; policy accept;\n")
	for _, p := range r.HelperPorts {
		fmt.Fprintf(&b, "\t\tmeta l4proto tcp th dport %d ct helper set \"ftp-std\"\n", p)
	}
	b.WriteString("\t}\n")
	fmt.Fprintf(&b, "\tchain forward_filter { type filter hook forward priority filter; policy %s;\n", r.Policy)
	for i, ru := range r.Rules {
		b.WriteString("\t\t")
		if len(ru.States) > 0 {
			fmt.Fprintf(&b, "ct state { %s } ", strings.Join(ru.States, ", "))
		}
		if ru.Proto != "" {
			fmt.Fprintf(&b, "meta l4proto %s ", nftProto(ru.Proto))
		}
		if ru.DPort != 0 {
			fmt.Fprintf(&b, "th dport %d ", ru.DPort)
		}
		fmt.Fprintf(&b, "log prefix \"V:%d\" group 1 %s\n", i, ru.Action)
	}
	b.WriteString("\t\tlog prefix \"V:policy\" group 1\n")
	b.WriteString("\t}\n}\n")
	return b.String()
}

func nftProto(p string) string {
	if p == "icmpv6" {
		return "ipv6-icmp"
	}
	return p
}

// tomlRules renders the rule set as the router's prerouting and forward
// chains (TOML).
func (r *Ruleset) tomlRules() string {
	var b strings.Builder
	b.WriteString("[chains.prerouting]\npolicy = \"accept\"\n\n")
	for _, m := range r.Notrack {
		fmt.Fprintf(&b, "[[chains.prerouting.rules]]\nproto = %q\ndport = %d\naction = \"notrack\"\n\n", m.Proto, m.DPort)
	}
	for _, p := range r.HelperPorts {
		fmt.Fprintf(&b, "[[chains.prerouting.rules]]\nproto = \"tcp\"\ndport = %d\naction = \"helper\"\nhelper = \"ftp\"\n\n", p)
	}
	fmt.Fprintf(&b, "[chains.forward]\npolicy = %q\n\n", r.Policy)
	for _, ru := range r.Rules {
		b.WriteString("[[chains.forward.rules]]\n")
		if len(ru.States) > 0 {
			fmt.Fprintf(&b, "ct_state = [%s]\n", quoteList(ru.States))
		}
		if ru.Proto != "" {
			fmt.Fprintf(&b, "proto = %q\n", ru.Proto)
		}
		if ru.DPort != 0 {
			fmt.Fprintf(&b, "dport = %d\n", ru.DPort)
		}
		fmt.Fprintf(&b, "action = %q\n\n", ru.Action)
	}
	return b.String()
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// routerConfig renders the router's configuration for s, with its devices
// "lan0" and "wan0" in the namespaces at nsPath (client, server).
func routerConfig(nsPath [2]string, s *Scenario) string {
	var b strings.Builder
	b.WriteString("[router]\nworkers = 2\ncontrol_socket = \"\"\nlog_level = \"info\"\n\n")
	for i := range 2 {
		fmt.Fprintf(&b, "[[device]]\nname = %q\nnetns = %q\naddresses = [%q, %q]\noffload = false\n\n",
			devName[i], nsPath[i], Router4[i].String(), Router6[i].String())
	}
	b.WriteString(s.Sysctls.toml())
	b.WriteString("[helpers.ftp]\nports = []\nloose = false\n\n")
	b.WriteString(s.Rules.tomlRules())
	return b.String()
}

// devName are the router's devices on the client and server links.
var devName = [2]string{"lan0", "wan0"}

// sysctlValues returns the kernel sysctls (net.netfilter.*) for s.
func (s Sysctls) sysctlValues() []string {
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	return []string{
		"net.netfilter.nf_conntrack_checksum=" + b(!s.NoChecksum),
		"net.netfilter.nf_conntrack_tcp_loose=" + b(!s.NoLoose),
		"net.netfilter.nf_conntrack_tcp_be_liberal=" + b(s.BeLiberal),
		"net.netfilter.nf_conntrack_tcp_ignore_invalid_rst=" + b(s.IgnoreInvalidRST),
	}
}

// toml returns the router's [conntrack] settings for s.
func (s Sysctls) toml() string {
	return fmt.Sprintf("[conntrack]\nchecksum = %v\ntcp_loose = %v\ntcp_be_liberal = %v\ntcp_ignore_invalid_rst = %v\n\n",
		!s.NoChecksum, !s.NoLoose, s.BeLiberal, s.IgnoreInvalidRST)
}

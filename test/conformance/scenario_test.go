package conformance

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tunrouter/router/config"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/pipeline"
)

// These tests need no privileges: they check the scenario catalogue, the
// rule set translations, the trace signature, the comparison and the
// deviations file.

func TestCatalogueValid(t *testing.T) {
	all := Catalogue()
	if len(all) < 60 {
		t.Errorf("%d scenarios, want at least 60", len(all))
	}
	names := map[string]bool{}
	marks := map[[2]uint32]string{}
	for _, s := range all {
		if err := s.Validate(); err != nil {
			t.Error(err)
		}
		if names[s.Name] {
			t.Errorf("duplicate scenario name %s", s.Name)
		}
		names[s.Name] = true
		for i, p := range s.Packets {
			fam := uint32(p.Bytes[0] >> 4)
			k := [2]uint32{fam, p.Mark}
			if prev, dup := marks[k]; dup {
				t.Errorf("%s #%d: mark %#x already used by %s", s.Name, i, p.Mark, prev)
			}
			marks[k] = fmt.Sprintf("%s #%d", s.Name, i)
			if m, _ := markOf(p.Bytes); m != p.Mark {
				t.Errorf("%s #%d: packet carries mark %#x, want %#x", s.Name, i, m, p.Mark)
			}
		}
	}
	// Every scenario has its IPv6 twin.
	for n := range names {
		if base, ok := strings.CutSuffix(n, "-v4"); ok && !names[base+"-v6"] {
			t.Errorf("%s has no IPv6 equivalent", n)
		}
	}
}

// TestCatalogueCoverage checks that every section of the behavioural
// reference that the router implements, and every case the issue lists,
// has a scenario.
func TestCatalogueCoverage(t *testing.T) {
	sections := map[string]int{}
	names := map[string]bool{}
	for _, s := range Catalogue() {
		sections[s.Section]++
		names[strings.TrimSuffix(strings.TrimSuffix(s.Name, "-v4"), "-v6")] = true
	}
	for _, sec := range []string{
		"1.1", "1.2", // state model: untracked, user-visible states
		"2.3", "2.4", "2.5", "2.6", "2.7", "2.8", // TCP
		"3.1", "3.2", "3.3", "3.4", // UDP, ICMP, ICMPv6, generic
		"4",                        // ICMP errors
		"5.2", "5.3", "5.5", "5.6", // expectations
		"6.1", "6.2", "6.3", "6.4", "6.5", // FTP helper
		"9.2", "9.3", "9.4", "9.5", "9.6", // selftests
	} {
		if sections[sec] == 0 {
			t.Errorf("no scenario for section %s", sec)
		}
	}
	for _, n := range []string{
		"tcp-handshake-data-close", "tcp-seq-above-window", "tcp-seq-below-window", "tcp-ack-above-sent",
		"tcp-ack-below-window", "tcp-rst-exact", "tcp-rst-inexact", "tcp-rst-out-of-window",
		"tcp-rst-below-maxack", "tcp-syn-on-established", "tcp-time-wait-reuse", "tcp-synack-retransmitted",
		"tcp-synack-stale", "tcp-simultaneous-open", "tcp-pickup-loose", "tcp-pickup-strict",
		"tcp-window-scaling", "tcp-impossible-flags", "tcp-bad-checksum", "tcp-truncated",
		"udp-new-reply", "icmp-echo", "icmp-error-known", "icmp-error-unknown",
		"icmp-error-about-error", "ftp-active", "ftp-pasv", "ftp-eprt", "ftp-epsv", "ftp-bounce",
		"ftp-split-command", "ftp-second-port", "ftp-expectation-reused", "ftp-wrong-direction",
		"ftp-no-helper", "ftp-non-standard-port",
	} {
		if !names[n] {
			t.Errorf("no scenario %s", n)
		}
	}
}

// TestImpossibleFlagsComplete checks that the flags scenario sends every
// combination of FIN, SYN, RST, ACK and URG the tracker must refuse, and
// nothing it allows.
func TestImpossibleFlagsComplete(t *testing.T) {
	const core = packet.FIN | packet.SYN | packet.RST | packet.ACK | packet.URG
	for _, s := range Catalogue() {
		if !strings.HasPrefix(s.Name, "tcp-impossible-flags") {
			continue
		}
		seen := map[packet.TCPFlags]bool{}
		for _, p := range s.Packets {
			if p.Want != StateInvalid {
				continue
			}
			f := pt.MustDecode(p.Bytes).TCPFlags & core
			if allowedFlags[f] {
				t.Errorf("%s: %v is an allowed combination", s.Name, f)
			}
			seen[f] = true
		}
		n := 0
		for f := packet.TCPFlags(0); f <= core; f++ {
			if f&^core != 0 || allowedFlags[f] {
				continue
			}
			n++
			if !seen[f] {
				t.Errorf("%s: %v never sent", s.Name, f)
			}
		}
		if n != 23 {
			t.Errorf("%d impossible combinations, want 23", n)
		}
	}
}

func TestRulesetNft(t *testing.T) {
	r := Ruleset{Policy: "drop", HelperPorts: []uint16{2121}, Notrack: []Match{{Proto: "udp", DPort: 5353}},
		Rules: []Rule{
			{States: []string{StateEstablished, StateRelated}, Action: "accept"},
			{States: []string{StateNew}, Proto: "icmpv6", Action: "accept"},
			{Proto: "tcp", DPort: 21, Action: "drop"},
		}}
	got := r.nft("conf")
	for _, want := range []string{
		"meta l4proto udp th dport 5353 notrack",
		`meta l4proto tcp th dport 2121 ct helper set "ftp-std"`,
		"type filter hook forward priority filter; policy drop;",
		`ct state { established, related } log prefix "V:0" group 1 accept`,
		`ct state { new } meta l4proto ipv6-icmp log prefix "V:1" group 1 accept`,
		`meta l4proto tcp th dport 21 log prefix "V:2" group 1 drop`,
		`log prefix "V:policy" group 1`,
		`ct state untracked log prefix "S:untracked" group 1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("nft rule set lacks %q:\n%s", want, got)
		}
	}
}

// TestRouterConfigLoads feeds every scenario's router configuration to
// the router's own configuration loader and checks that the rule set
// arrives as written: same chains, policies, rules and conntrack knobs.
func TestRouterConfigLoads(t *testing.T) {
	for _, s := range Catalogue() {
		text := routerConfig([2]string{"/run/netns/c", "/run/netns/s"}, s)
		cfg, err := config.Parse(s.Name+".toml", []byte(text))
		if err != nil {
			t.Errorf("%s: %v\n%s", s.Name, err, text)
			continue
		}
		fwd, pre := chainSpec(cfg.Filter, filter.Forward), chainSpec(cfg.Filter, filter.Prerouting)
		if fwd.Policy != s.Rules.Policy {
			t.Errorf("%s: forward policy %v, want %s", s.Name, fwd.Policy, s.Rules.Policy)
		}
		if len(fwd.Rules) != len(s.Rules.Rules) {
			t.Errorf("%s: %d forward rules, want %d", s.Name, len(fwd.Rules), len(s.Rules.Rules))
		}
		for i, r := range s.Rules.Rules {
			if i >= len(fwd.Rules) {
				break
			}
			got := fwd.Rules[i]
			if got.Action != r.Action || !slices.Equal(got.CtState, r.States) {
				t.Errorf("%s rule %d: %+v, want %+v", s.Name, i, got, r)
			}
		}
		if want := len(s.Rules.Notrack) + len(s.Rules.HelperPorts); len(pre.Rules) != want {
			t.Errorf("%s: %d prerouting rules, want %d", s.Name, len(pre.Rules), want)
		}
		ct := cfg.Conntrack
		if ct.Checksum == s.Sysctls.NoChecksum || ct.TCP.Loose == s.Sysctls.NoLoose ||
			ct.TCP.BeLiberal != s.Sysctls.BeLiberal || ct.TCP.IgnoreInvalidRST != s.Sysctls.IgnoreInvalidRST {
			t.Errorf("%s: conntrack config %+v does not follow %+v", s.Name, ct, s.Sysctls)
		}
		if len(cfg.FTP.Ports) != 0 {
			t.Errorf("%s: helper ports %v synthesized; only the prerouting rules may attach it", s.Name, cfg.FTP.Ports)
		}
	}
}

func chainSpec(s filter.Spec, c filter.Chain) filter.ChainSpec {
	for _, cs := range s.Chains {
		if cs.Chain == c {
			return cs
		}
	}
	return filter.ChainSpec{}
}

// TestPacketSig checks that the signature the router runner expects for a
// packet is what the daemon's trace writer prints for it.
func TestPacketSig(t *testing.T) {
	ports := []pipeline.Port{{Name: devName[0]}, {Name: devName[1]}}
	n := 0
	for _, s := range Catalogue() {
		for i, p := range s.Packets {
			var parsed packet.Parsed
			parsed.Decode(p.Bytes)
			rec := pipeline.TraceRecord{In: int(p.From), Out: -1, Packet: &parsed, Rule: -1, Verdict: "accept"}
			var l traceLine
			if err := json.Unmarshal(rec.AppendJSON(nil, ports), &l); err != nil {
				t.Fatalf("%s #%d: %v", s.Name, i, err)
			}
			if got, want := l.sig(), packetSig(p.From, p.Bytes); got != want {
				t.Errorf("%s #%d: trace says %+v, runner expects %+v", s.Name, i, got, want)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no packets")
	}
}

func TestMarks(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		src, dst := "10.0.1.2:1", "10.0.2.2:2"
		if v6 {
			src, dst = "[fd00:1::2]:1", "[fd00:2::2]:2"
		}
		b := pt.UDP(src, dst, pt.UDPOpts{Payload: []byte("x")})
		orig := pt.Clone(b)
		setMark(b, 0xabcd)
		if m, ok := markOf(b); !ok || m != 0xabcd {
			t.Errorf("v6=%v: mark %#x %v", v6, m, ok)
		}
		pt.MustDecode(b) // transport checksum still valid
		if !v6 && ipv4HeaderSum(b[:20]) != 0xffff {
			t.Errorf("IPv4 header checksum broken by setMark")
		}
		if !bytesEqualAfterIP(b, orig, v6) {
			t.Errorf("v6=%v: setMark changed the transport bytes", v6)
		}
		// A bad IPv4 header checksum stays bad.
		if !v6 {
			bad := pt.BadIPChecksum(orig)
			setMark(bad, 7)
			if ipv4HeaderSum(bad[:20]) == 0xffff {
				t.Error("setMark repaired a deliberately bad header checksum")
			}
		}
		// payloadSame ignores the TTL but nothing in the payload.
		ttl := pt.SetTTL(b, 7)
		if !payloadSame(b, ttl) {
			t.Errorf("v6=%v: a TTL change counts as a modification", v6)
		}
		mod := pt.Clone(b)
		mod[len(mod)-1] ^= 1
		if payloadSame(b, mod) {
			t.Errorf("v6=%v: a payload change is not noticed", v6)
		}
	}
}

func bytesEqualAfterIP(a, b []byte, v6 bool) bool {
	h := 20
	if v6 {
		h = 40
	}
	return string(a[h:]) == string(b[h:])
}

func TestParseDeviations(t *testing.T) {
	good := `# Deviations

Prose before the first entry is ignored.

## tcp-x-v4 #3
- kernel: dropped invalid
- router: delivered established
- why: because the kernel
  does something we do not want.

## udp-y-v6 #0
- kernel: delivered new
- router: dropped new
- why: reasons.
`
	ds, err := ParseDeviations(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Scenario != "tcp-x-v4" || ds[0].Packet != 3 || ds[0].Kernel != "dropped invalid" ||
		ds[0].Router != "delivered established" || ds[0].Why != "because the kernel does something we do not want." ||
		ds[1].key() != "udp-y-v6 #0" {
		t.Errorf("parsed %+v", ds)
	}
	for name, bad := range map[string]string{
		"no why":        "## a #1\n- kernel: dropped new\n- router: delivered new\n",
		"no router":     "## a #1\n- kernel: dropped new\n- why: x\n",
		"no kernel":     "## a #1\n- router: dropped new\n- why: x\n",
		"same":          "## a #1\n- kernel: dropped new\n- router: dropped new\n- why: x\n",
		"bad outcome":   "## a #1\n- kernel: lost new\n- router: dropped new\n- why: x\n",
		"bad state":     "## a #1\n- kernel: dropped fresh\n- router: dropped new\n- why: x\n",
		"bad heading":   "## a packet 1\n- kernel: dropped new\n- router: delivered new\n- why: x\n",
		"duplicate":     "## a #1\n- kernel: dropped new\n- router: delivered new\n- why: x\n## a #1\n- kernel: dropped new\n- router: delivered new\n- why: x\n",
		"negative":      "## a #-1\n- kernel: dropped new\n- router: delivered new\n- why: x\n",
		"empty why":     "## a #1\n- kernel: dropped new\n- router: delivered new\n- why:\n",
		"ends at title": "## a #1\n- kernel: dropped new\n- router: delivered new\n# next\n- why: x\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseDeviations(strings.NewReader(bad)); err == nil {
				t.Errorf("accepted:\n%s", bad)
			}
		})
	}
}

func TestRepositoryDeviationsFile(t *testing.T) {
	ds, err := LoadDeviations("../../docs/conformance-deviations.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*Scenario{}
	for _, s := range Catalogue() {
		names[s.Name] = s
	}
	for _, d := range ds {
		s := names[d.Scenario]
		if s == nil {
			t.Errorf("line %d: unknown scenario %s", d.Line, d.Scenario)
		} else if d.Packet >= len(s.Packets) {
			t.Errorf("line %d: %s has %d packets", d.Line, d.Scenario, len(s.Packets))
		}
	}
}

func TestCompare(t *testing.T) {
	s := &Scenario{Name: "s", Packets: []Packet{{Note: "a"}, {Note: "b", Want: StateInvalid}, {Note: "c"}}}
	ok := []Outcome{{Delivered: true, State: StateNew}, {State: StateInvalid}, {Delivered: true, State: StateEstablished}}
	diff := []Outcome{{Delivered: true, State: StateNew}, {State: StateInvalid}, {Delivered: false, State: StateEstablished}}
	dev := Deviation{Scenario: "s", Packet: 2, Kernel: "delivered established", Router: "dropped established", Why: "x"}

	t.Run("agree", func(t *testing.T) {
		r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{ok}, nil)
		if r.Failed() || r.Summary() != "1 scenarios, 3 packets, 3 agree" {
			t.Errorf("failed=%v %q", r.Failed(), r.Summary())
		}
	})
	t.Run("undocumented", func(t *testing.T) {
		r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{diff}, nil)
		var b strings.Builder
		r.Report(&b)
		if !r.Failed() || r.Agree != 2 || !strings.Contains(b.String(), "dropped established") {
			t.Errorf("failed=%v agree=%d report:\n%s", r.Failed(), r.Agree, b.String())
		}
	})
	t.Run("state differs", func(t *testing.T) {
		st := slices.Clone(ok)
		st[0].State = StateEstablished
		if r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{st}, nil); !r.Failed() {
			t.Error("a state difference passes")
		}
	})
	t.Run("documented", func(t *testing.T) {
		r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{diff}, []Deviation{dev})
		if r.Failed() || len(r.Diffs) != 1 || r.Diffs[0].Documented == nil {
			t.Errorf("failed=%v diffs=%+v", r.Failed(), r.Diffs)
		}
	})
	t.Run("documented differently", func(t *testing.T) {
		d := dev
		d.Router = "dropped invalid"
		if r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{diff}, []Deviation{d}); !r.Failed() {
			t.Error("an entry with other outcomes excuses the difference")
		}
	})
	t.Run("stale entry", func(t *testing.T) {
		r := Compare([]*Scenario{s}, [][]Outcome{ok}, [][]Outcome{ok}, []Deviation{dev})
		if !r.Failed() || len(r.Unused) != 1 {
			t.Errorf("failed=%v unused=%v", r.Failed(), r.Unused)
		}
	})
	t.Run("intent", func(t *testing.T) {
		k := slices.Clone(ok)
		k[1].State = StateEstablished
		r := Compare([]*Scenario{s}, [][]Outcome{k}, [][]Outcome{k}, nil)
		if !r.Failed() || len(r.Intent) != 1 {
			t.Errorf("failed=%v intent=%v", r.Failed(), r.Intent)
		}
	})
}

package filter

import (
	"errors"
	"github.com/tunrouter/router/filter/filtertest"
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		path string // Error.Path() of the first error
		msg  string // substring of its message
	}{
		{"port out of range", fwd(RuleSpec{DPort: l("22", "70000"), Action: "accept"}),
			"chains.forward.rules[0].dport[1]", "port 70000 out of range 0..65535"},
		{"port not a number", fwd(RuleSpec{SPort: l("ssh"), Action: "accept"}),
			"chains.forward.rules[0].sport[0]", `invalid port "ssh"`},
		{"reversed port range", fwd(RuleSpec{DPort: l("90-80"), Action: "accept"}),
			"chains.forward.rules[0].dport[0]", "reversed"},
		{"bad prefix", fwd(RuleSpec{SAddr: l("10.0.0.0/33"), Action: "accept"}),
			"chains.forward.rules[0].saddr[0]", `invalid prefix "10.0.0.0/33"`},
		{"host bits", fwd(RuleSpec{DAddr: l("10.1.2.3/16"), Action: "accept"}),
			"chains.forward.rules[0].daddr[0]", "did you mean 10.1.0.0/16?"},
		{"bad address", fwd(RuleSpec{SAddr: l("10.0.0.256"), Action: "accept"}),
			"chains.forward.rules[0].saddr[0]", `invalid address or prefix "10.0.0.256"`},
		{"mixed negation", fwd(RuleSpec{SAddr: l("!10.0.0.0/8", "192.168.0.0/16"), Action: "accept"}),
			"chains.forward.rules[0].saddr[1]", "mixes negated and plain"},
		{"unknown state", fwd(RuleSpec{CtState: l("established", "estabished"), Action: "accept"}),
			"chains.forward.rules[0].ct_state[1]", `unknown ct state "estabished"`},
		{"unknown state in comma string", fwd(RuleSpec{CtState: l("established,bogus"), Action: "accept"}),
			"chains.forward.rules[0].ct_state[0]", `unknown ct state "bogus"`},
		{"unknown reason", fwd(RuleSpec{CtReason: l("tcp: seq above windw"), Action: "drop"}),
			"chains.forward.rules[0].ct_reason[0]", `did you mean "tcp: seq above window"?`},
		{"unknown status", fwd(RuleSpec{CtStatus: l("asured"), Action: "drop"}),
			"chains.forward.rules[0].ct_status[0]", `unknown ct status "asured"`},
		{"unknown direction", fwd(RuleSpec{CtDirection: "forward", Action: "drop"}),
			"chains.forward.rules[0].ct_direction", "unknown ct direction"},
		{"unknown helper match", fwd(RuleSpec{CtHelper: "sip", Action: "drop"}),
			"chains.forward.rules[0].ct_helper", `unknown helper "sip" (known: ftp)`},
		{"unknown proto", fwd(RuleSpec{Proto: l("tcpp"), Action: "drop"}),
			"chains.forward.rules[0].proto[0]", `unknown protocol "tcpp"`},
		{"proto number too big", fwd(RuleSpec{Proto: l("256"), Action: "drop"}),
			"chains.forward.rules[0].proto[0]", "unknown protocol"},
		{"proto without ports", fwd(RuleSpec{Proto: l("tcp", "icmp"), DPort: l("53"), Action: "accept"}),
			"chains.forward.rules[0].proto[1]", "proto icmp conflicts with dport"},
		{"icmp type with tcp", fwd(RuleSpec{Proto: l("tcp"), ICMPType: l("echo-request"), Action: "accept"}),
			"chains.forward.rules[0].proto[0]", "conflicts with icmp_type"},
		{"icmp and icmpv6", fwd(RuleSpec{ICMPType: l("echo-request"), ICMPv6Type: l("echo-request"), Action: "accept"}),
			"chains.forward.rules[0].icmpv6_type", "both icmp and icmpv6"},
		{"icmp type family conflict", fwd(RuleSpec{Family: l("ip6"), ICMPType: l("echo-request"), Action: "accept"}),
			"chains.forward.rules[0].icmp_type", "family excludes them"},
		{"unknown icmp type", fwd(RuleSpec{ICMPType: l("echo-requets"), Action: "accept"}),
			"chains.forward.rules[0].icmp_type[0]", `unknown icmp type "echo-requets"`},
		{"icmp code out of range", fwd(RuleSpec{ICMPCode: l("300"), Action: "accept"}),
			"chains.forward.rules[0].icmp_code[0]", "icmp code 300 out of range 0..255"},
		{"bad tcp flag", fwd(RuleSpec{TCPFlags: "syn,fin,foo", Action: "accept"}),
			"chains.forward.rules[0].tcp_flags", `unknown TCP flag "foo"`},
		{"tcp flags outside mask", fwd(RuleSpec{TCPFlags: "syn / ack", Action: "accept"}),
			"chains.forward.rules[0].tcp_flags", "can never match"},
		{"tcp flags with udp", fwd(RuleSpec{Proto: l("udp"), TCPFlags: "syn", Action: "accept"}),
			"chains.forward.rules[0].proto[0]", "conflicts with tcp_flags"},
		{"family conflicts with addresses", fwd(RuleSpec{Family: l("ip6"), SAddr: l("10.0.0.0/8"), Action: "accept"}),
			"chains.forward.rules[0].saddr", "only IPv4 entries, but the rule's family is IPv6"},
		{"saddr v4 daddr v6", fwd(RuleSpec{SAddr: l("10.0.0.0/8"), DAddr: l("fd00::/8"), Action: "accept"}),
			"chains.forward.rules[0].daddr", "only IPv6 entries"},
		{"unknown family", fwd(RuleSpec{Family: l("ipx"), Action: "accept"}),
			"chains.forward.rules[0].family[0]", `unknown family "ipx"`},
		{"unknown interface", fwd(RuleSpec{IIf: l("lan0", "lan1"), Action: "accept"}),
			"chains.forward.rules[0].iif[1]", `unknown interface "lan1" (did you mean "lan0"?)`},
		{"oif in input", Spec{Chains: []ChainSpec{{Chain: Input, Rules: []RuleSpec{{OIf: l("lan0"), Action: "accept"}}}}},
			"chains.input.rules[0].oif", "not known in the input chain"},
		{"oif in prerouting", Spec{Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{{OIf: l("lan0"), Action: "accept"}}}}},
			"chains.prerouting.rules[0].oif", "not known in prerouting"},
		{"iif in output", Spec{Chains: []ChainSpec{{Chain: Output, Rules: []RuleSpec{{IIf: l("lan0"), Action: "accept"}}}}},
			"chains.output.rules[0].iif", "not known in the output chain"},
		{"ct_state in prerouting", Spec{Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{{CtState: l("new"), Action: "drop"}}}}},
			"chains.prerouting.rules[0].ct_state", "prerouting runs before it"},
		{"notrack in forward", fwd(RuleSpec{Action: "notrack"}),
			"chains.forward.rules[0].action", "only valid in the prerouting chain"},
		{"helper action in input", Spec{Chains: []ChainSpec{{Chain: Input, Rules: []RuleSpec{{Action: "helper", Helper: "ftp"}}}}},
			"chains.input.rules[0].action", "only valid in the prerouting chain"},
		{"reject in prerouting", Spec{Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{{Action: "reject"}}}}},
			"chains.prerouting.rules[0].action", "not available in prerouting"},
		{"helper without name", Spec{Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{{Action: "helper"}}}}},
			"chains.prerouting.rules[0].helper", "needs a helper name"},
		{"unknown helper", Spec{Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{{Action: "helper", Helper: "irc"}}}}},
			"chains.prerouting.rules[0].helper", `unknown helper "irc" (known: ftp)`},
		{"helper with accept", fwd(RuleSpec{Action: "accept", Helper: "ftp"}),
			"chains.forward.rules[0].helper", `only valid with action = "helper"`},
		{"reject_with with drop", fwd(RuleSpec{Action: "drop", RejectWith: "tcp-reset"}),
			"chains.forward.rules[0].reject_with", `only valid with action = "reject"`},
		{"tcp-reset without tcp", fwd(RuleSpec{Action: "reject", RejectWith: "tcp-reset"}),
			"chains.forward.rules[0].reject_with", `needs proto = "tcp"`},
		{"tcp-reset with tcp and udp", fwd(RuleSpec{Proto: l("tcp", "udp"), Action: "reject", RejectWith: "tcp-reset"}),
			"chains.forward.rules[0].reject_with", `needs proto = "tcp"`},
		{"unknown reject_with", fwd(RuleSpec{Action: "reject", RejectWith: "go-away"}),
			"chains.forward.rules[0].reject_with", `unknown reject_with "go-away"`},
		{"missing action", fwd(RuleSpec{Proto: l("tcp")}),
			"chains.forward.rules[0].action", "missing action"},
		{"unknown action", fwd(RuleSpec{Action: "allow"}),
			"chains.forward.rules[0].action", `unknown action "allow"`},
		{"bad log level", fwd(RuleSpec{Action: "drop", Log: true, LogLevel: "loud"}),
			"chains.forward.rules[0].log_level", `unknown log level "loud"`},
		{"log prefix control char", fwd(RuleSpec{Action: "drop", LogPrefix: "a\tb"}),
			"chains.forward.rules[0].log_prefix", "control character"},
		{"bad policy", Spec{Chains: []ChainSpec{{Chain: Forward, Policy: "reject"}}},
			"chains.forward.policy", `unknown policy "reject"`},
		{"chain twice", Spec{Chains: []ChainSpec{{Chain: Forward}, {Chain: Forward}}},
			"chains.forward", "defined twice"},
		{"unknown set", fwd(RuleSpec{SAddr: l("@lna"), Action: "accept"}),
			"chains.forward.rules[0].saddr[0]", `unknown set @lna (did you mean "lan"?)`},
		{"port set as address", fwd(RuleSpec{SAddr: l("@web"), Action: "accept"}),
			"chains.forward.rules[0].saddr[0]", "set @web holds ports, but saddr needs addresses"},
		{"address set as port", fwd(RuleSpec{DPort: l("@lan"), Action: "accept"}),
			"chains.forward.rules[0].dport[0]", "set @lan holds addresses, but dport needs ports"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.Interfaces = testIfaces
			spec.Helpers = []string{"ftp"}
			spec.Sets = append(spec.Sets, SetSpec{Name: "lan", Elems: l("10.0.0.0/8")}, SetSpec{Name: "web", Elems: l("80", "443")})
			rs, _, err := Compile(spec)
			if err == nil || rs != nil {
				t.Fatalf("Compile succeeded, want an error at %s", tc.path)
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %v is not Errors", err)
			}
			if errs[0].Path() != tc.path || !strings.Contains(errs[0].Msg, tc.msg) {
				t.Fatalf("first error %q\nwant path %s and message containing %q (all: %v)", errs[0].Error(), tc.path, tc.msg, err)
			}
		})
	}
}

func TestCompileReportsEveryError(t *testing.T) {
	_, _, err := Compile(Spec{Chains: []ChainSpec{
		{Chain: Forward, Policy: "maybe", Rules: []RuleSpec{
			{DPort: l("1", "99999"), Action: "accept"},
			{Action: "accept"},
			{SAddr: l("nope"), Action: "jump"},
		}},
	}})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	var paths []string
	for _, e := range errs {
		paths = append(paths, e.Path())
	}
	want := []string{"chains.forward.policy", "chains.forward.rules[0].dport[1]", "chains.forward.rules[2].saddr[0]", "chains.forward.rules[2].action"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("paths %q, want %q", paths, want)
	}
	if !strings.Contains(err.Error(), "\n") {
		t.Fatalf("Errors.Error() should list one error per line: %q", err.Error())
	}
}

func TestSetErrors(t *testing.T) {
	cases := []struct {
		name string
		sets []SetSpec
		path string
		msg  string
	}{
		{"mixed kinds", []SetSpec{{Name: "m", Elems: l("10.0.0.0/8", "80")}}, "sets.m[1]", "mixes addresses and ports"},
		{"bad element", []SetSpec{{Name: "b", Elems: l("10.0.0.0/8", "10.0.0.0/99")}}, "sets.b[1]", "invalid prefix"},
		{"port out of range", []SetSpec{{Name: "p", Elems: l("80", "65536")}}, "sets.p[1]", "port 65536 out of range 0..65535"},
		{"negated element", []SetSpec{{Name: "n", Elems: l("!10.0.0.0/8")}}, "sets.n[0]", "cannot be negated"},
		{"unknown reference", []SetSpec{{Name: "r", Elems: l("@nothing")}}, "sets.r[0]", "unknown set @nothing"},
		{"cycle", []SetSpec{{Name: "a", Elems: l("@b")}, {Name: "b", Elems: l("@a")}}, "sets.b[0]", "refers to itself"},
		{"bad name", []SetSpec{{Name: "a b"}}, "sets.a b", "invalid set name"},
		{"duplicate", []SetSpec{{Name: "d"}, {Name: "d"}}, "sets.d", "defined twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Compile(Spec{Sets: tc.sets})
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("err = %v", err)
			}
			if errs[0].Path() != tc.path || !strings.Contains(errs[0].Msg, tc.msg) {
				t.Fatalf("first error %q, want %s: ...%s...", errs[0], tc.path, tc.msg)
			}
		})
	}
}

func TestSetReferences(t *testing.T) {
	rs := mustCompile(t, Spec{
		Sets: []SetSpec{
			{Name: "all", Elems: l("@lan", "@dmz", "2001:db8::/32")},
			{Name: "lan", Elems: l("10.1.0.0/16")},
			{Name: "dmz", Elems: l("10.3.0.0/16", "10.3.0.0/24")},
		},
		Chains: []ChainSpec{{Chain: Forward, Policy: "drop", Rules: []RuleSpec{{SAddr: l("@all"), Action: "accept"}}}},
	})
	for _, tc := range []struct {
		pkt  []byte
		want Action
	}{
		{tcpSyn4, Accept}, // 10.1.0.5
		{synPkt("10.3.0.200:1", "10.9.9.9:2"), Accept},
		{synPkt("10.2.0.1:1", "10.9.9.9:2"), Drop},
		{synPkt("[2001:db8::1]:1", "[2001:db8::2]:2"), Accept},
	} {
		if v := rs.Eval(Forward, pk(tc.pkt, 2), 0); v.Action != tc.want {
			t.Errorf("%v: got %v, want %v", filtertest.Decode(tc.pkt).SrcAddr(), v.Action, tc.want)
		}
	}
}

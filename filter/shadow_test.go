package filter

import (
	"fmt"
	"strings"
	"testing"
)

func TestShadowWarnings(t *testing.T) {
	type w struct{ rule, by int }
	cases := []struct {
		name  string
		rules []RuleSpec
		want  []w // by -1: contradicts itself
	}{
		{"state subset", []RuleSpec{
			{CtState: l("established", "related"), Action: "accept"},
			{CtState: l("established"), Proto: l("tcp"), Action: "accept"},
		}, []w{{1, 0}}},
		{"state not subset", []RuleSpec{
			{CtState: l("established"), Action: "accept"},
			{CtState: l("established", "related"), Action: "drop"},
		}, nil},
		{"narrower prefix after wider", []RuleSpec{
			{SAddr: l("10.0.0.0/8"), Action: "drop"},
			{SAddr: l("10.1.0.0/16"), DPort: l("22"), Action: "accept"},
		}, []w{{1, 0}}},
		{"wider prefix after narrower", []RuleSpec{
			{SAddr: l("10.1.0.0/16"), Action: "drop"},
			{SAddr: l("10.0.0.0/8"), Action: "accept"},
		}, nil},
		{"set covers literal list", []RuleSpec{
			{SAddr: l("@lan"), Action: "accept"},
			{SAddr: l("10.1.2.0/24", "fd00:1:2::/64"), Action: "drop"},
		}, []w{{1, 0}}},
		{"negated covers disjoint", []RuleSpec{
			{SAddr: l("!10.0.0.0/8"), Action: "drop"},
			{SAddr: l("192.168.0.0/16"), Action: "accept"},
			{SAddr: l("10.1.0.0/16"), Action: "accept"},
		}, []w{{1, 0}}},
		{"negated v4 does not cover v6", []RuleSpec{
			{SAddr: l("!10.0.0.0/8"), Action: "drop"},
			{SAddr: l("fd00::/8"), Action: "accept"},
		}, nil},
		{"both negated", []RuleSpec{
			{DAddr: l("!10.0.0.0/8"), Action: "drop"},
			{DAddr: l("!10.1.0.0/16"), Proto: l("udp"), Action: "accept"},
		}, nil},
		{"both negated, covered", []RuleSpec{
			{DAddr: l("!10.1.0.0/16"), Action: "drop"},
			{DAddr: l("!10.0.0.0/8"), Proto: l("udp"), Action: "accept"},
		}, []w{{1, 0}}},
		{"port range covers port", []RuleSpec{
			{DPort: l("1-1024"), Action: "accept"},
			{Proto: l("tcp"), DPort: l("22"), Action: "drop"},
		}, []w{{1, 0}}},
		{"tcp port does not cover any-protocol port", []RuleSpec{
			{Proto: l("tcp"), DPort: l("22"), Action: "accept"},
			{DPort: l("22"), Action: "drop"},
		}, nil},
		{"negated port covers disjoint ports", []RuleSpec{
			{DPort: l("!22"), Action: "drop"},
			{DPort: l("80", "443"), Action: "accept"},
		}, []w{{1, 0}}},
		{"flags any-of covers syn-only", []RuleSpec{
			{TCPFlags: "syn", Action: "drop"},
			{TCPFlags: "syn / syn,ack,rst,fin", DPort: l("80"), Action: "accept"},
		}, []w{{1, 0}}},
		{"syn-only does not cover any-of", []RuleSpec{
			{TCPFlags: "syn / syn,ack,rst,fin", Action: "drop"},
			{TCPFlags: "syn", Action: "accept"},
		}, nil},
		{"icmp types", []RuleSpec{
			{ICMPType: l("echo-request", "echo-reply"), Action: "accept"},
			{ICMPType: l("echo-request"), SAddr: l("10.0.0.0/8"), Action: "drop"},
			{ICMPv6Type: l("echo-request"), Action: "drop"},
		}, []w{{1, 0}}},
		{"interfaces", []RuleSpec{
			{IIf: l("!wan0"), Action: "accept"},
			{IIf: l("lan0", "dmz0"), Action: "drop"},
			{IIf: l("wan0"), Action: "drop"},
		}, []w{{1, 0}}},
		{"unconditional drop shadows everything after it", []RuleSpec{
			{Proto: l("tcp"), Action: "accept"},
			{Action: "drop"},
			{Proto: l("udp"), Action: "accept"},
			{CtState: l("invalid"), Action: "continue"},
		}, []w{{2, 1}, {3, 1}}},
		{"continue and statements do not shadow", []RuleSpec{
			{Action: "continue", Log: true},
			{Action: "counter"},
			{Proto: l("tcp"), Action: "accept"},
		}, nil},
		{"reject shadows like drop", []RuleSpec{
			{Proto: l("udp"), Action: "reject"},
			{Proto: l("udp"), DPort: l("53"), Action: "accept"},
		}, []w{{1, 0}}},
		{"direction and status", []RuleSpec{
			{CtDirection: "reply", Action: "accept"},
			{CtDirection: "reply", CtStatus: l("assured"), Action: "drop"},
			{CtStatus: l("assured", "expected"), Action: "accept"},
			{CtStatus: l("assured"), CtDirection: "original", Action: "drop"},
		}, []w{{1, 0}, {3, 2}}},
		{"reasons", []RuleSpec{
			{CtReason: l("tcp: seq above window", "tcp: ack above sent data"), Action: "drop"},
			{CtReason: l("tcp: seq above window"), Action: "accept"},
			{CtState: l("invalid"), Action: "accept"},
		}, []w{{1, 0}}},
		{"contradiction: direction on invalid", []RuleSpec{
			{CtState: l("invalid"), CtDirection: "original", Action: "drop"},
		}, []w{{0, -1}}},
		{"contradiction: reason on new", []RuleSpec{
			{CtState: l("new"), CtReason: l("tcp: invalid flags"), Action: "drop"},
		}, []w{{0, -1}}},
		{"contradiction: empty set", []RuleSpec{
			{SAddr: l("@empty"), Action: "drop"},
			{DPort: l("@none"), Action: "drop"},
		}, []w{{0, -1}, {1, -1}}},
		{"a rule that never matches shadows nothing", []RuleSpec{
			{SAddr: l("@empty"), Action: "drop"},
			{SAddr: l("@empty"), Action: "drop"},
		}, []w{{0, -1}, {1, -1}}},
		{"family", []RuleSpec{
			{Family: l("ip6"), Action: "drop"},
			{SAddr: l("fd00::/8"), Action: "accept"},
			{SAddr: l("10.0.0.0/8"), Action: "accept"},
		}, []w{{1, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := fwd(tc.rules...)
			spec.Interfaces = testIfaces
			spec.Helpers = []string{"ftp"}
			spec.Sets = []SetSpec{{Name: "lan", Elems: l("10.0.0.0/8", "fd00::/8")}, {Name: "empty"}, {Name: "none"}}
			_, warns, err := Compile(spec)
			if err != nil {
				t.Fatal(err)
			}
			var got []w
			for _, x := range warns {
				got = append(got, w{x.Rule, x.ShadowedBy})
				if x.Chain != Forward || !strings.Contains(x.Msg, "can never match") {
					t.Errorf("warning %v", x)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("warnings %v, want %v (%v)", got, tc.want, warns)
			}
		})
	}
}

func TestWarningText(t *testing.T) {
	_, warns, err := Compile(fwd(RuleSpec{Action: "accept"}, RuleSpec{Proto: l("tcp"), Action: "drop"}))
	if err != nil || len(warns) != 1 {
		t.Fatalf("warns %v err %v", warns, err)
	}
	want := "chains.forward.rules[1]: rule can never match: it comes after an unconditional accept rule (rule 0)"
	if warns[0].String() != want {
		t.Fatalf("got %q\nwant %q", warns[0].String(), want)
	}
}

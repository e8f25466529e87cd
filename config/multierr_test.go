package config

import (
	"errors"
	"strings"
	"testing"
)

// TestErrorsInsideATableDoNotHideItsOtherErrors: an unknown key inside a rule, a wrong type
// elsewhere and semantic errors in the same chain are all reported, each
// at its own position (a decoding error must not hide the checks of the
// table it is in).
func TestErrorsInsideATableDoNotHideItsOtherErrors(t *testing.T) {
	src := `[router]
workers = "x"
[[device]]
name = "a"
mtu = "big"
[chains.forward]
policy = "maybe"
[[chains.forward.rules]]
ct_state = "nope"
dport = 70000
actoin = "drop"
`
	_, err := Parse("f.toml", []byte(src))
	var el ErrorList
	if !errors.As(err, &el) {
		t.Fatalf("error %v is not an ErrorList", err)
	}
	want := []string{
		`f.toml:2:1: key "router.workers"`,
		`f.toml:5:1: key "device[0].mtu"`,
		`f.toml:7:1: key "chains.forward.policy"`,
		`f.toml:8:1: key "chains.forward.rules[0].action": missing action`,
		`f.toml:9:1: key "chains.forward.rules[0].ct_state"`,
		`f.toml:10:1: key "chains.forward.rules[0].dport"`,
		`f.toml:11:1: key "chains.forward.rules[0].actoin": unknown key "actoin" (did you mean "action"?)`,
	}
	if len(el) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(el), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(el[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, el[i].Error(), w)
		}
	}
}

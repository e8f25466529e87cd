package conformance

import (
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
)

func TestKernelOnly(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	k := newKernelRunner(t)
	for _, s := range Catalogue() {
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		out := k.Run(s)
		for i, o := range out {
			mark := ""
			if w := s.Packets[i].Want; w != "" && w != o.State {
				mark = "  <<<<<< WANT " + w
			}
			t.Logf("%s #%d %-40s %-22s reason=%q %s%s", s.Name, i, s.Packets[i].Note, o.Short(), o.Reason, o.Detail, mark)
		}
	}
}

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
			t.Logf("%s #%d %-22s %-28s reason=%q %s", s.Name, i, s.Packets[i].Note, o.Short(), o.Reason, o.Detail)
		}
	}
}

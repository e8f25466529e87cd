package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// Environment knobs (all optional):
//
//	CONFORMANCE_ROUTER=/path/router  use this router binary instead of building ./cmd/router
//	CONFORMANCE_RUN=REGEXP           only the scenarios whose names match (deviation
//	                                 entries of the others are not checked)
//	CONFORMANCE_VERBOSE=1            log every packet's outcome on both sides
const (
	envRouter  = "CONFORMANCE_ROUTER"
	envRun     = "CONFORMANCE_RUN"
	envVerbose = "CONFORMANCE_VERBOSE"
)

// TestConformance plays every scenario through the Linux kernel and
// through the router and fails on any difference in delivery or ct state
// that docs/conformance-deviations.md does not document. It needs root
// (skips otherwise, or fails with REQUIRE_E2E=1), nft and conntrack.
func TestConformance(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	for _, tool := range []string{"nft", "conntrack", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			tundevtest.SkipOrFail(t, "needs %s: %v", tool, err)
		}
	}
	scenarios := Catalogue()
	for _, s := range scenarios {
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	devs, err := LoadDeviations(filepath.Join(moduleRoot(t), "docs", "conformance-deviations.md"))
	if err != nil {
		t.Fatal(err)
	}
	if pat := os.Getenv(envRun); pat != "" {
		re, err := regexp.Compile(pat)
		if err != nil {
			t.Fatalf("%s: %v", envRun, err)
		}
		var sel []*Scenario
		for _, s := range scenarios {
			if re.MatchString(s.Name) {
				sel = append(sel, s)
			}
		}
		scenarios = sel
		var keep []Deviation
		for _, d := range devs {
			if re.MatchString(d.Scenario) {
				keep = append(keep, d)
			}
		}
		devs = keep
	}
	bin := os.Getenv(envRouter)
	if bin == "" {
		if bin, err = routertest.Build(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	k := newKernelRunner(t)
	r := newRouterRunner(t, bin)
	verbose := os.Getenv(envVerbose) == "1"
	kout := make([][]Outcome, len(scenarios))
	rout := make([][]Outcome, len(scenarios))
	for i, s := range scenarios {
		kout[i] = k.Run(s)
		rout[i], err = r.Run(s)
		if err != nil {
			t.Fatalf("router, scenario %s: %v", s.Name, err)
		}
		if verbose {
			for j, p := range s.Packets {
				t.Logf("%s #%d %-45s kernel %-22s router %-22s | %s | %s", s.Name, j, p.Note,
					kout[i][j].Short(), rout[i][j].Short(), kout[i][j].Reason, rout[i][j].Reason)
			}
		}
	}
	res := Compare(scenarios, kout, rout, devs)
	var b strings.Builder
	res.Report(&b)
	if b.Len() > 0 {
		t.Log("\n" + b.String())
	}
	summary := res.Summary()
	fmt.Printf("conformance: %s (%.1f s)\n", summary, time.Since(start).Seconds())
	if res.Failed() {
		t.Errorf("conformance failed (see the report above): %s", summary)
	}
}

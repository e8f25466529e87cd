//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// routerBin is the router binary built by TestMain (not built when the
// tests cannot run: not root).
var routerBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Writing to a closed stdout (go test ... | head) must not kill the
	// test binary before its cleanups ran: with SIGPIPE handled, the
	// write fails instead.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	sweepStale()
	if os.Geteuid() != 0 {
		// Every test skips (or fails, with REQUIRE_E2E=1) at its
		// privilege check: nothing to build for.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", tempPrefix("bin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if routerBin, err = routertest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// tempPrefix names this process's temporary directories ("e2e-KIND-PID-"),
// so that sweepStale can tell the leftovers of a dead run.
func tempPrefix(kind string) string {
	return fmt.Sprintf("e2e-%s-%d-", kind, os.Getpid())
}

// tempDir creates a temporary directory with a short path (t.TempDir's
// carry the test's name; a Unix socket path must fit in 108 bytes, and
// vsftpd needs every directory on the way world-searchable) and removes it
// when t ends.
func tempDir(t *testing.T, kind string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", tempPrefix(kind))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var (
	staleNetns = regexp.MustCompile(`^e2e-[cs]-(\d+)-\d+$`)
	staleTemp  = regexp.MustCompile(`^e2e-[a-z]+-(\d+)-\d+$`)
)

// sweepStale removes the namespaces and temporary directories of earlier
// runs of this package whose process is gone.
func sweepStale() { routertest.SweepStale(staleNetns, staleTemp) }

// toolPackages names the Debian package that provides each tool the tests
// run (scripts/e2e-prereqs.sh installs them all).
var toolPackages = map[string]string{
	"ip":     "iproute2",
	"ss":     "iproute2",
	"ping":   "iputils-ping",
	"curl":   "curl",
	"vsftpd": "vsftpd",
	"iperf3": "iperf3",
}

// lookTool finds a tool in PATH or in the sbin directories (vsftpd lives
// in /usr/sbin, which a non-login PATH may lack).
func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		cand := filepath.Join(dir, name)
		if st, serr := os.Stat(cand); serr == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	return "", err
}

// requireE2E skips t (fails it with REQUIRE_E2E=1) unless it runs as
// root with /dev/net/tun, iproute2 and every tool named; the message names
// every missing tool with its Debian package. It returns the tools' paths
// by name.
func requireE2E(t *testing.T, tools ...string) map[string]string {
	t.Helper()
	tundevtest.RequirePrivileges(t)
	paths := map[string]string{}
	var missing, pkgs []string
	for _, tool := range append([]string{"ip"}, tools...) {
		p, err := lookTool(tool)
		if err != nil {
			pkg := toolPackages[tool]
			if pkg == "" {
				pkg = tool
			}
			missing = append(missing, fmt.Sprintf("%s (package %s)", tool, pkg))
			if !slices.Contains(pkgs, pkg) {
				pkgs = append(pkgs, pkg)
			}
			continue
		}
		paths[tool] = p
	}
	if len(missing) > 0 {
		tundevtest.SkipOrFail(t, "needs %s: run scripts/e2e-prereqs.sh or apt-get install -y --no-install-recommends %s",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return paths
}

// TestPrerequisites checks every prerequisite of the package at once:
// with REQUIRE_E2E=1 a machine that lacks any fails here with the
// complete list of packages to install.
func TestPrerequisites(t *testing.T) {
	requireE2E(t, "ss", "ping", "curl", "vsftpd", "iperf3")
	if _, err := os.Stat(routerBin); err != nil {
		t.Fatalf("router binary: %v", err)
	}
}

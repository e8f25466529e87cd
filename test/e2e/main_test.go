//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
)

// routerBin is the router binary built by TestMain ("" if the build
// failed, which TestMain reports by exiting).
var routerBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	routerBin = filepath.Join(dir, "router")
	// The package directory is the working directory of a test binary run
	// by go test; the module around it holds cmd/router.
	cmd := exec.Command(goTool(), "build", "-o", routerBin, "github.com/tunrouter/router/cmd/router")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/router: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// goTool is the go command of the toolchain that built this test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

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

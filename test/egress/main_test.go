//go:build linux

package egress

import (
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"

	"github.com/tunrouter/router/test/routertest"
)

// routerBin is the router binary built by TestMain, in a directory every
// user may read (the router runs as the test user, and re-executes itself
// as its launcher).
var routerBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips (or fails with REQUIRE_E2E=1)
	}
	sweepStale()
	dir, err := os.MkdirTemp("", "egress-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "egress e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	if routerBin, err = routertest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "egress e2e:", err)
		return 1
	}
	os.Chmod(routerBin, 0o755)
	defer restoreTunMode()
	return m.Run()
}

// staleNetns matches the namespaces of this package's tests
// (tundevtest.NewNetns: PREFIX-PID-N).
var staleNetns = regexp.MustCompile(`^eg[hc]-(\d+)-\d+$`)

// sweepStale deletes the namespaces of earlier runs whose process is gone
// (killed before its cleanups ran) and that no process uses any more.
func sweepStale() { routertest.SweepStale(staleNetns, nil) }

// The mode /dev/net/tun had before a test made it usable by the test
// user (restored at the end of the run).
var (
	tunModeMu    sync.Mutex
	tunModeSaved os.FileMode
	tunModeSet   bool
)

const tunNode = "/dev/net/tun"

// setTunMode sets the permissions of /dev/net/tun, remembering the
// original ones the first time.
func setTunMode(t *testing.T, mode os.FileMode) {
	t.Helper()
	tunModeMu.Lock()
	defer tunModeMu.Unlock()
	fi, err := os.Stat(tunNode)
	if err != nil {
		t.Fatalf("%s: %v", tunNode, err)
	}
	if !tunModeSet {
		tunModeSaved, tunModeSet = fi.Mode().Perm(), true
	}
	if fi.Mode().Perm() != mode {
		if err := os.Chmod(tunNode, mode); err != nil {
			t.Fatalf("chmod %s: %v", tunNode, err)
		}
	}
}

// tunUsableByUsers makes /dev/net/tun usable inside user namespaces (mode
// 0666, most distributions' default).
func tunUsableByUsers(t *testing.T) {
	t.Helper()
	fi, err := os.Stat(tunNode)
	if err != nil {
		t.Fatalf("%s: %v", tunNode, err)
	}
	if fi.Mode().Perm()&0o006 != 0o006 {
		setTunMode(t, 0o666)
	}
}

func restoreTunMode() {
	tunModeMu.Lock()
	defer tunModeMu.Unlock()
	if tunModeSet {
		os.Chmod(tunNode, tunModeSaved)
	}
}

//go:build linux

// Package tundevtest has helpers for tests that need real TUN devices and
// network namespaces: a privilege gate that fails instead of skipping in CI,
// throw-away named namespaces, and running code inside a namespace.
package tundevtest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireE2EEnv is the environment variable that turns skips into
// failures: CI sets REQUIRE_E2E=1 so that a missing prerequisite can never
// pass silently.
const RequireE2EEnv = "REQUIRE_E2E"

// Required reports whether end-to-end prerequisites are mandatory.
func Required() bool { return os.Getenv(RequireE2EEnv) == "1" }

// SkipOrFail skips tb, or fails it when REQUIRE_E2E=1.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s (%s=1: end-to-end prerequisites are required)", msg, RequireE2EEnv)
	}
	tb.Skipf("%s (set %s=1 to make this a failure)", msg, RequireE2EEnv)
}

// RequirePrivileges skips (or, with REQUIRE_E2E=1, fails) tb unless the
// process is root with CAP_NET_ADMIN, /dev/net/tun exists and the ip(8)
// tool is available.
func RequirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "needs root (euid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		SkipOrFail(tb, "needs /dev/net/tun: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		SkipOrFail(tb, "needs ip(8) from iproute2: %v", err)
	}
}

var nsSeq atomic.Uint32

// NewNetns creates a fresh named network namespace (ip netns add) whose
// name starts with prefix and is unique to this process, deletes any stale
// namespace of the same name first, and deletes it again in tb.Cleanup. It
// returns the name and its path under /run/netns. The loopback interface is
// brought up.
func NewNetns(tb testing.TB, prefix string) (name, path string) {
	tb.Helper()
	name = fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nsSeq.Add(1))
	// A leftover from a crashed run with a reused pid would make "add"
	// fail; remove it (an error just means there was none).
	_ = exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		tb.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return name, "/run/netns/" + name
}

// InNetns runs fn on a locked OS thread inside the network namespace at
// path and returns fn's error. Sockets created by fn stay in that
// namespace after InNetns returns. If the thread cannot return to its
// original namespace it is discarded.
func InNetns(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return to original netns: %w (fn: %v)", err, ferr)
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// IP runs ip(8) with args inside the named namespace (ip -n name ...) and
// returns its trimmed output; it fails tb on error.
func IP(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	full := append([]string{"-n", ns}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// FDOpen reports whether fd is an open descriptor in this process.
func FDOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

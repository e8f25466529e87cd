package tundev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
	"golang.org/x/sys/unix"
)

func TestDeviceBusy(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	first := openTest(t, Config{Name: "busy0", Netns: nsPath, Queues: 2})
	tundevtest.IP(t, nsName, "tuntap", "add", "dev", "persist0", "mode", "tun")

	tests := []struct {
		name string
		cfg  Config
	}{
		{"tun-in-use", Config{Name: "busy0", Netns: nsPath}},
		{"tun-in-use-multiqueue", Config{Name: "busy0", Netns: nsPath, Queues: 2}},
		{"persistent-tun", Config{Name: "persist0", Netns: nsPath}},
		{"other-link-type", Config{Name: "lo", Netns: nsPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(tt.cfg)
			if err == nil {
				d.Close()
				t.Fatalf("Open(%q) succeeded on a name in use", tt.cfg.Name)
			}
			if !errors.Is(err, ErrDeviceBusy) || !errors.Is(err, syscall.EBUSY) {
				t.Errorf("error %v, want ErrDeviceBusy wrapping EBUSY", err)
			}
			if !strings.Contains(err.Error(), tt.cfg.Name) || !strings.Contains(err.Error(), nsPath) {
				t.Errorf("error %q does not name the device and namespace", err)
			}
		})
	}
	// The failed attempts neither took over nor harmed the first device.
	if m, err := first.MTU(); err != nil || m != DefaultMTU {
		t.Errorf("first device after failed opens: MTU %d, %v", m, err)
	}
	h := nsHandle(t, nsPath)
	if _, err := h.LinkByName("busy0"); err != nil {
		t.Errorf("busy0 vanished: %v", err)
	}
	first.Close()
	checkNoWatchers(t)
}

// TestNoNetns needs no privileges: the namespace is resolved before any TUN
// work.
func TestNoNetns(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, netns string
	}{
		{"missing-path", "/run/netns/tundev-no-such-namespace"},
		{"missing-name", "tundev-no-such-namespace"},
		{"regular-file", regular},
		{"other-namespace-type", "/proc/self/ns/uts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(Config{Name: "rt0", Netns: tt.netns})
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrNoNetns) {
				t.Errorf("error %v, want ErrNoNetns", err)
			}
			if !strings.Contains(err.Error(), netnsPath(tt.netns)) {
				t.Errorf("error %q does not name %s", err, netnsPath(tt.netns))
			}
		})
	}
}

// TestNoTUN points the package at a missing clone device; it needs no
// privileges.
func TestNoTUN(t *testing.T) {
	old := cloneDevice
	cloneDevice = filepath.Join(t.TempDir(), "no-tun")
	t.Cleanup(func() { cloneDevice = old })
	d, err := Open(Config{Name: "rt0"})
	if err == nil {
		d.Close()
		t.Fatal("Open succeeded without a clone device")
	}
	if !errors.Is(err, ErrNoTUN) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want ErrNoTUN wrapping ENOENT", err)
	}
	if !strings.Contains(err.Error(), "modprobe tun") {
		t.Errorf("error %q has no hint", err)
	}
}

// netnsIno returns the inode of the network namespace of task tid ("self"
// for the process).
func netnsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestThreadsStayHome opens and fails to open devices in another namespace
// many times and then checks that every thread of the process is back in
// the original namespace.
func TestThreadsStayHome(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	_, nsPath := tundevtest.NewNetns(t, "tundev")
	home := netnsIno(t, "/proc/self/ns/net")
	keep := openTest(t, Config{Name: "home0", Netns: nsPath})
	for i := 0; i < 20; i++ {
		cfg := Config{Name: fmt.Sprintf("home%d", i%3), Netns: nsPath, Queues: 1 + i%2}
		if d, err := Open(cfg); err == nil {
			d.Close()
		} else if !errors.Is(err, ErrDeviceBusy) {
			t.Fatalf("Open %d: %v", i, err)
		}
	}
	keep.Close()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		p := "/proc/self/task/" + task.Name() + "/ns/net"
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue // thread exited meanwhile
		}
		if st.Ino != home {
			t.Errorf("thread %s is in netns inode %d, not the original %d", task.Name(), st.Ino, home)
		}
	}
}

// helperEnv selects what TestHelperProcess does in a child process.
const helperEnv = "TUNDEV_TEST_HELPER"

// TestHelperProcess is not a test: it is the body of the child processes
// that TestPermission starts with fewer privileges.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "open":
		_, err := Open(Config{Name: "tdperm0"})
		fmt.Println("ERR:", err)
		fmt.Println("IS-PERMISSION:", errors.Is(err, ErrPermission))
		fmt.Println("IS-EPERM:", errors.Is(err, syscall.EPERM), "IS-EACCES:", errors.Is(err, syscall.EACCES))
	case "preflight":
		fmt.Print(Preflight(""))
	}
	os.Exit(0)
}

// TestPermission runs Open and Preflight in child processes that lack
// CAP_NET_ADMIN over the host namespace: root inside a fresh user
// namespace (TUNSETIFF fails with EPERM) and the nobody user (opening
// /dev/net/tun fails with EACCES).
func TestPermission(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	// The nobody user must be able to execute the test binary: copy it
	// into a world-readable directory.
	dir, err := os.MkdirTemp("", "tundev-perm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tundev.test")
	copyFile(t, os.Args[0], bin)

	tests := []struct {
		name      string
		attr      *syscall.SysProcAttr
		wantErrno string
		wantCheck string // the failing preflight line
	}{
		{"userns-root", &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}, "IS-EPERM: true", "FAIL tun-create"},
		{"nobody", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}, "IS-EACCES: true", "FAIL tun-node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func(mode string) string {
				cmd := exec.Command(bin, "-test.run=^TestHelperProcess$")
				cmd.Env = append(os.Environ(), helperEnv+"="+mode)
				cmd.SysProcAttr = tt.attr
				out, err := cmd.CombinedOutput()
				if err != nil {
					tundevtest.SkipOrFail(t, "cannot start a child process as %s: %v: %s", tt.name, err, out)
				}
				return string(out)
			}
			out := run("open")
			if !strings.Contains(out, "IS-PERMISSION: true") || !strings.Contains(out, tt.wantErrno) {
				t.Errorf("child Open: want ErrPermission with %s, got:\n%s", tt.wantErrno, out)
			}
			if !strings.Contains(out, "CAP_NET_ADMIN") {
				t.Errorf("child Open error has no CAP_NET_ADMIN hint:\n%s", out)
			}
			rep := run("preflight")
			if !strings.Contains(rep, tt.wantCheck) || !strings.Contains(rep, "cap_net_admin") {
				t.Errorf("child Preflight does not report %q with a hint:\n%s", tt.wantCheck, rep)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

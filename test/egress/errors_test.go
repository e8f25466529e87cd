//go:build linux

package egress

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
)

// TestLauncherOutsideUserNamespace: `router tun-launch` started without
// a user namespace (unprivileged in the host's) cannot create the device;
// the launcher and the router both say what to do instead.
func TestLauncherOutsideUserNamespace(t *testing.T) {
	tunUsableByUsers(t)
	w := newWorld(t)
	sock := filepath.Join(w.dir, "tun.sock")
	path := filepath.Join(w.dir, "router.toml")
	conf := w.routerConfig(fmt.Sprintf(`launcher_socket = "%s"
addresses = ["%s/24"]`, sock, clientAddr), "")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startProc(t, "router", w.asUser(routerBin, "run", "--config", path))
	if !routertest.WaitFor(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil || r.Exited() }) || r.Exited() {
		t.Fatalf("the router does not wait on its launcher socket:\n%s", r.Output())
	}
	out, err := w.asUser(routerBin, "tun-launch", "--socket", sock, "--", "true").CombinedOutput()
	if err == nil {
		t.Fatalf("tun-launch succeeded outside a user namespace:\n%s", out)
	}
	want := "unshare --user --map-root-user --net"
	if !strings.Contains(string(out), want) {
		t.Errorf("tun-launch's error does not say how to run it (%q):\n%s", want, out)
	}
	if !routertest.WaitFor(10*time.Second, r.Exited) {
		t.Fatal("the router still runs after its launcher failed")
	}
	if !strings.Contains(r.Output(), want) || r.Err() == nil {
		t.Errorf("the router's error (%v) does not relay the launcher's:\n%s", r.Err(), r.Output())
	}
}

// TestTUNNodeNotUsable: when /dev/net/tun is not usable by the user
// (mode 0600), the router says so and how to fix it.
func TestTUNNodeNotUsable(t *testing.T) {
	tunUsableByUsers(t)
	w := newWorld(t)
	c := w.unshareClient()
	setTunMode(t, 0o600)
	defer setTunMode(t, 0o666)
	path := filepath.Join(w.dir, "router.toml")
	conf := w.routerConfig(fmt.Sprintf(`netns = "%s"
addresses = ["%s/24"]`, c.netns, clientAddr), "")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := w.asUser(routerBin, "run", "--config", path).CombinedOutput()
	if err == nil {
		t.Fatalf("the router started without a usable /dev/net/tun:\n%s", out)
	}
	for _, want := range []string{"/dev/net/tun", "0600", "0666"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the error does not mention %q:\n%s", want, out)
		}
	}
}

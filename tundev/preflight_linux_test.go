package tundev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunrouter/router/tundev/tundevtest"
)

// fakeProc writes the files Preflight reads under a temporary /proc.
// A value of "" leaves the file out.
func fakeProc(t *testing.T, capEff, maxUserns, usernsClone, apparmor string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string) {
		if content == "" {
			return
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if capEff != "" {
		write("self/status", "Name:\ttest\nCapInh:\t0000000000000000\nCapEff:\t"+capEff+"\nCapBnd:\t000001ffffffffff\n")
	}
	write("sys/user/max_user_namespaces", maxUserns)
	write("sys/kernel/unprivileged_userns_clone", usernsClone)
	write("sys/kernel/apparmor_restrict_unprivileged_userns", apparmor)
	return dir
}

// TestPreflightChecks feeds Preflight fake /proc files and TUN node paths;
// it needs no privileges.
func TestPreflightChecks(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "tun")
	if err := os.WriteFile(regular, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name   string
		tun    string
		proc   [4]string // CapEff, max_user_namespaces, unprivileged_userns_clone, apparmor
		want   map[string]CheckStatus
		wantOK bool
	}{
		{
			name: "all-missing",
			tun:  missing,
			proc: [4]string{"0000000000000000", "0\n", "0\n", "1\n"},
			want: map[string]CheckStatus{
				"tun-node": CheckFail, "cap-net-admin": CheckWarn, "userns-max": CheckWarn,
				"userns-clone": CheckWarn, "userns-apparmor": CheckWarn,
			},
		},
		{
			name: "not-a-char-device",
			tun:  regular,
			proc: [4]string{"0000000000001000", "15000\n", "1\n", "0\n"},
			want: map[string]CheckStatus{
				"tun-node": CheckFail, "cap-net-admin": CheckOK, "userns-max": CheckOK, "userns-clone": CheckOK,
			},
		},
		{
			name: "upstream-kernel-no-clone-switch",
			tun:  missing,
			proc: [4]string{"000001ffffffffff", "15000\n", "", ""},
			want: map[string]CheckStatus{
				"cap-net-admin": CheckOK, "userns-max": CheckOK, "userns-clone": CheckSkipped,
			},
		},
		{
			name: "unreadable-proc",
			tun:  missing,
			proc: [4]string{"", "", "", ""},
			want: map[string]CheckStatus{"cap-net-admin": CheckWarn, "userns-max": CheckWarn, "userns-clone": CheckSkipped},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := fakeProc(t, tt.proc[0], tt.proc[1], tt.proc[2], tt.proc[3])
			r := preflight(preflightEnv{tunPath: tt.tun, procDir: proc, probe: true}, "")
			for name, want := range tt.want {
				c, ok := r.Find(name)
				if !ok {
					t.Errorf("check %s missing from report:\n%s", name, r)
					continue
				}
				if c.Status != want {
					t.Errorf("check %s = %v (%s), want %v", name, c.Status, c.Detail, want)
				}
				if c.Status != CheckOK && c.Status != CheckSkipped && c.Hint == "" {
					t.Errorf("check %s is %v without a hint", name, c.Status)
				}
			}
			if _, ok := r.Find("userns-apparmor"); ok != (tt.proc[3] != "" && tt.proc[3] != "0\n") {
				t.Errorf("userns-apparmor reported = %v with sysctl %q", ok, tt.proc[3])
			}
			// With no usable TUN node the probe is skipped, not failed twice.
			if c, _ := r.Find("tun-create"); c.Status != CheckSkipped {
				t.Errorf("tun-create = %v, want skipped after a failed tun-node", c.Status)
			}
			if r.OK() {
				t.Errorf("OK() with a failing tun-node:\n%s", r)
			}
			if !strings.Contains(r.String(), "FAIL tun-node") {
				t.Errorf("String() lacks the failing line:\n%s", r)
			}
		})
	}
}

func TestPreflightHost(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	before := tundevtest.IP(t, nsName, "-o", "link", "show")

	r := Preflight(nsPath)
	if !r.OK() {
		t.Fatalf("Preflight as root failed:\n%s", r)
	}
	for _, name := range []string{"tun-node", "cap-net-admin", "netns", "tun-create"} {
		c, ok := r.Find(name)
		if !ok {
			t.Errorf("check %s missing:\n%s", name, r)
			continue
		}
		want := CheckOK
		if name == "tun-create" && !kernelAtLeast(t, 6, 2) {
			want = CheckWarn // no USO
		}
		if c.Status != want {
			t.Errorf("check %s = %v (%s), want %v", name, c.Status, c.Detail, want)
		}
	}
	// The probe device was created in the namespace and is gone again.
	if c, _ := r.Find("tun-create"); !strings.Contains(c.Detail, "tun") {
		t.Errorf("tun-create detail %q does not name the probe device", c.Detail)
	}
	if after := tundevtest.IP(t, nsName, "-o", "link", "show"); after != before {
		t.Errorf("probe left links behind in %s:\nbefore: %s\nafter:  %s", nsName, before, after)
	}

	bad := Preflight("/run/netns/tundev-no-such-namespace")
	if c, _ := bad.Find("netns"); c.Status != CheckFail || bad.OK() {
		t.Errorf("missing namespace: netns check %v, OK()=%v", c.Status, bad.OK())
	}
	if c, _ := bad.Find("tun-create"); c.Status != CheckSkipped {
		t.Errorf("missing namespace: tun-create %v, want skipped", c.Status)
	}
}

// TestPreflightProbeName checks that the probe really runs inside
// the namespace given: it sees a link created there only.
func TestPreflightProbeName(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	nsName, nsPath := tundevtest.NewNetns(t, "tundev")
	// Occupy tun0 in the namespace: the kernel must then pick tun1 for
	// the probe, which proves the probe ran there and not in ours.
	tundevtest.IP(t, nsName, "tuntap", "add", "dev", "tun0", "mode", "tun")
	r := Preflight(nsPath)
	c, _ := r.Find("tun-create")
	if c.Status == CheckFail || !strings.Contains(c.Detail, "tun1") {
		t.Errorf("probe in %s: %v %q, want it to create tun1 next to the existing tun0", nsName, c.Status, c.Detail)
	}
}

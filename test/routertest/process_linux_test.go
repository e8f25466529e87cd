package routertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcessStopAndWaitRunning(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	tests := []struct {
		name       string
		script     string
		grace      time.Duration
		wantStop   string // "" for nil, else part of Stop's error
		wantSignal syscall.Signal
	}{
		{"stops on SIGTERM", `echo "router running"; exec sleep 30`, 5 * time.Second, "", syscall.SIGTERM},
		{"killed when it ignores SIGTERM", `trap "" TERM; sleep 30 & echo "child $!"; echo "router running"; wait; sleep 30`, 200 * time.Millisecond, "killed", syscall.SIGKILL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start("sh", exec.Command("sh", "-c", tc.script), syscall.SIGKILL)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WaitRunning("", 5*time.Second); err != nil {
				t.Fatalf("WaitRunning: %v (output %q)", err, p.Output())
			}
			err = p.Stop(tc.grace)
			if tc.wantStop == "" && err != nil || tc.wantStop != "" && (err == nil || !strings.Contains(err.Error(), tc.wantStop)) {
				t.Fatalf("Stop: %v, want %q", err, tc.wantStop)
			}
			var ee *exec.ExitError
			if !errors.As(p.Err(), &ee) {
				t.Fatalf("Err %v, want an exit by signal", p.Err())
			}
			if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != tc.wantSignal {
				t.Fatalf("exit %v, want signal %v", ee, tc.wantSignal)
			}
			if err := p.Stop(tc.grace); !errors.Is(err, ErrExitedBefore) {
				t.Fatalf("second Stop: %v, want ErrExitedBefore", err)
			}
			// The rest of the group ends with its leader: the background
			// sleep is gone or a zombie.
			if i := strings.Index(p.Output(), "child "); i < 0 && strings.Contains(tc.script, "child") {
				t.Fatalf("no child pid in the output %q", p.Output())
			} else if i >= 0 {
				var child int
				fmt.Sscanf(p.Output()[i:], "child %d", &child)
				if !WaitFor(time.Second, func() bool {
					stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
					return err != nil || strings.Contains(string(stat), ") Z ")
				}) {
					t.Fatalf("the background child %d of the group still runs after Stop", child)
				}
			}
		})
	}
}

func TestWaitRunningFails(t *testing.T) {
	t.Run("exits during start", func(t *testing.T) {
		p, err := Start("sh", exec.Command("sh", "-c", "echo starting; exit 3"), syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitRunning("", 5*time.Second); err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("WaitRunning: %v, want an exit during start with status 3", err)
		}
	})
	t.Run("socket not answering", func(t *testing.T) {
		p, err := Start("sh", exec.Command("sh", "-c", `echo "router running"; exec sleep 30`), syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop(time.Second)
		sock := t.TempDir() + "/ctl.sock"
		if err := p.WaitRunning(sock, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not answering") {
			t.Fatalf("WaitRunning: %v, want the control socket not answering", err)
		}
	})
}

func TestWaitFor(t *testing.T) {
	n := 0
	if !WaitFor(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("WaitFor returned before or long after cond held (%d calls)", n)
	}
	if WaitFor(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("WaitFor reported a condition that never held")
	}
}

package routertest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
)

// SweepStale removes what earlier runs of a test package left behind when
// they were killed before their cleanups ran (a -timeout panic, SIGKILL):
// the network namespaces (as root) and the directories in os.TempDir()
// whose names netns and temp match (either may be nil), when the process
// whose id the first submatch is no longer exists. Namespaces that still
// hold processes are left alone.
func SweepStale(netns, temp *regexp.Regexp) {
	dead := func(name string, re *regexp.Regexp) bool {
		if re == nil {
			return false
		}
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, err := strconv.Atoi(m[1])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	if os.Geteuid() == 0 {
		if ents, err := os.ReadDir("/run/netns"); err == nil {
			for _, e := range ents {
				if !dead(e.Name(), netns) {
					continue
				}
				if pids, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err != nil || len(bytes.TrimSpace(pids)) > 0 {
					continue
				}
				exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			if e.IsDir() && dead(e.Name(), temp) {
				os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
			}
		}
	}
}

package routertest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for a child process writing into it
// while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a background process started by Start: the leader of its
// own process group, so that stopping it also ends the children it forked
// (vsftpd's sessions), with its standard output and error collected.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	out  SyncBuffer
	done chan struct{}
	err  error
}

// Start starts cmd as a new process group with its output collected.
// deathSig is the signal the process gets when the test process dies
// before stopping it: SIGTERM lets a router remove its devices, SIGKILL
// suits everything else.
func Start(name string, cmd *exec.Cmd, deathSig syscall.Signal) (*Process, error) {
	p := &Process{Name: name, Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// StartT is Start that fails tb if the process cannot start, and stops
// the process (Stop with grace) when tb ends, logging its output if tb
// failed. It suits helper processes (deathSig SIGKILL).
func StartT(tb testing.TB, name string, cmd *exec.Cmd, grace time.Duration) *Process {
	tb.Helper()
	p, err := Start(name, cmd, syscall.SIGKILL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		p.Stop(grace)
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Output returns the process's standard output and error so far.
func (p *Process) Output() string { return p.out.String() }

// Pid is the process's id (and its process group's).
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil: status 0) once it has exited.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// ErrExitedBefore is Stop's error for a process that had exited already.
var ErrExitedBefore = errors.New("exited before it was stopped")

// Stop ends the process group: SIGTERM, then SIGKILL if the process has
// not exited after grace; then whatever the leader left in its group is
// killed. The error is ErrExitedBefore when the process had exited before
// Stop, and says so when it had to be killed; Err then gives the exit
// status.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.Pid() // Setpgid: the group id is the leader's pid
	defer syscall.Kill(-pgid, syscall.SIGKILL)
	if p.Exited() {
		return ErrExitedBefore
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("still running %v after SIGTERM; killed", grace)
	}
}

// routerRunning is what the router logs when its pipeline runs.
const routerRunning = "router running"

// WaitRunning waits until the router process logs that it runs and, if
// sock is not "", its control socket accepts a connection. It fails when
// the process exits first or timeout passes.
func (p *Process) WaitRunning(sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		answering := sock == ""
		if !answering {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				answering = true
			}
		}
		if answering && strings.Contains(p.Output(), routerRunning) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited during start: %v", p.err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			if !answering {
				return fmt.Errorf("control socket %s not answering after %v", sock, timeout)
			}
			return fmt.Errorf("not running after %v", timeout)
		}
	}
}

// WriteConfig writes a configuration file through a temporary file and a
// rename, so that a router reloading it never reads half a file.
func WriteConfig(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WaitFor polls cond every 20 ms until it holds (true) or timeout passes
// (false).
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

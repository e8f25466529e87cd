package daemon

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/pipeline"
)

func clockGettime(ts *syscall.Timespec) error {
	var u unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &u); err != nil {
		return err
	}
	ts.Sec, ts.Nsec = u.Sec, u.Nsec
	return nil
}

// traceWriter writes one JSON line per traced packet. Workers call Trace
// concurrently; a mutex serialises them (tracing is a debugging aid, off
// by default). Lines are flushed at least every 100 ms.
type traceWriter struct {
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	buf   []byte
	ports []pipeline.Port
	stop  chan struct{}
	done  chan struct{}
}

func newTraceWriter(path string, ports []pipeline.Port) (*traceWriter, error) {
	var f *os.File
	if path == "-" {
		f = os.Stderr
	} else {
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("trace file: %w", err)
		}
	}
	t := &traceWriter{f: f, w: bufio.NewWriterSize(f, 64<<10), ports: ports,
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				t.mu.Lock()
				t.w.Flush()
				t.mu.Unlock()
			}
		}
	}()
	return t, nil
}

func (t *traceWriter) Trace(w int, r *pipeline.TraceRecord) {
	t.mu.Lock()
	t.buf = r.AppendJSON(t.buf[:0], t.ports)
	t.buf = append(t.buf, '\n')
	t.w.Write(t.buf)
	t.mu.Unlock()
}

func (t *traceWriter) Close() {
	close(t.stop)
	<-t.done
	t.mu.Lock()
	t.w.Flush()
	if t.f != os.Stderr {
		t.f.Close()
	}
	t.mu.Unlock()
}

// RuleView is the JSON form of one rule with its counters.
type RuleView struct {
	Chain   string `json:"chain"`
	Index   int    `json:"index"`
	Comment string `json:"comment,omitempty"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func rulesView(rs *filter.Ruleset) any {
	out := []RuleView{}
	for _, c := range rs.Counters() {
		out = append(out, RuleView{Chain: c.Chain.String(), Index: c.Rule, Comment: c.Comment, Packets: c.Packets, Bytes: c.Bytes})
	}
	return out
}

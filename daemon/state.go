package daemon

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/pipeline"
)

// stateHeader starts a state file.
type stateHeader struct {
	Magic   string
	Version int
	Saved   time.Time // wall clock: remaining timeouts are reduced by the downtime
	Entries int
}

const (
	stateMagic   = "tunrouter-conntrack-state"
	stateVersion = 1
)

// saveState writes every connection to path (atomically: a temporary
// file renamed into place). The pipeline must be stopped.
func saveState(path string, p *pipeline.Pipeline) (int, error) {
	var snaps []conntrack.Snapshot
	p.Export(func(s *conntrack.Snapshot) bool {
		c := *s
		c.HelperState = append([]byte(nil), s.HelperState...)
		snaps = append(snaps, c)
		return true
	})
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 256<<10)
	enc := gob.NewEncoder(w)
	if err := enc.Encode(stateHeader{Magic: stateMagic, Version: stateVersion, Saved: time.Now(), Entries: len(snaps)}); err != nil {
		tmp.Close()
		return 0, err
	}
	for i := range snaps {
		if err := enc.Encode(&snaps[i]); err != nil {
			tmp.Close()
			return 0, err
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return 0, err
	}
	return len(snaps), os.Rename(tmp.Name(), path)
}

// loadState reads a state file. Connections whose remaining lifetime ran
// out while the router was down are left out. A missing file is no error
// (first start).
func loadState(path string, maxEntries int) ([]conntrack.Snapshot, time.Duration, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	dec := gob.NewDecoder(bufio.NewReaderSize(f, 256<<10))
	var h stateHeader
	if err := dec.Decode(&h); err != nil {
		return nil, 0, fmt.Errorf("state file %s: %w", path, err)
	}
	if h.Magic != stateMagic || h.Version != stateVersion {
		return nil, 0, fmt.Errorf("state file %s: not a state file of this version (%q v%d)", path, h.Magic, h.Version)
	}
	down := time.Since(h.Saved)
	if down < 0 {
		down = 0
	}
	var out []conntrack.Snapshot
	for i := 0; i < h.Entries; i++ {
		var s conntrack.Snapshot
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return out, down, fmt.Errorf("state file %s: entry %d: %w", path, i, err)
		}
		s.Remaining -= down
		s.Age += down
		if s.Remaining <= 0 || (maxEntries > 0 && len(out) >= maxEntries) {
			continue
		}
		out = append(out, s)
	}
	return out, down, nil
}

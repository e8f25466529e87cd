package routertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// TraceRecord is one line of the router's trace file: a
// pipeline.TraceRecord in the JSON form its AppendJSON writes.
type TraceRecord struct {
	Time     int64   `json:"t"`
	Worker   int     `json:"worker"`
	In       *string `json:"in"`  // the input device; nil for none
	Out      *string `json:"out"` // the output device; nil for none
	Family   int     `json:"family"`
	Proto    string  `json:"proto"`
	Src      string  `json:"src"`
	Dst      string  `json:"dst"`
	Len      int     `json:"len"`
	IPID     uint32  `json:"ipid"`
	Sport    uint16  `json:"sport"`
	Dport    uint16  `json:"dport"`
	ICMPType int     `json:"icmp_type"`
	ICMPCode int     `json:"icmp_code"`
	ICMPID   int     `json:"icmp_id"`
	Flags    string  `json:"flags"`
	Seq      uint32  `json:"seq"`
	Ack      uint32  `json:"ack"`
	Win      uint16  `json:"win"`
	Payload  int     `json:"payload"`
	Ct       string  `json:"ct"`
	State    string  `json:"state"`
	Reason   string  `json:"reason"`
	Status   string  `json:"status"`
	TCPState string  `json:"tcp_state"`
	Chain    string  `json:"chain"`
	Rule     int     `json:"rule"`
	Verdict  string  `json:"verdict"`
	Why      string  `json:"why"`
}

// InDev is the input device's name, "" for none.
func (x TraceRecord) InDev() string { return strOr(x.In) }

// OutDev is the output device's name, "" for none.
func (x TraceRecord) OutDev() string { return strOr(x.Out) }

func strOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// HasFlag reports whether the TCP flags (like "SYN|ACK") include f.
func (x TraceRecord) HasFlag(f string) bool {
	for _, g := range strings.Split(x.Flags, "|") {
		if g == f {
			return true
		}
	}
	return false
}

// TraceFile reads a trace file while the router appends to it.
type TraceFile struct {
	Path string
	off  int64 // bytes parsed so far
}

// Read returns the records of the whole lines appended since the last
// call; a line still being written is left for the next one. A line that
// is not a JSON record is skipped and reported in the error, which comes
// with the records of the other lines.
func (f *TraceFile) Read() ([]TraceRecord, error) {
	file, err := os.Open(f.Path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if _, err := file.Seek(f.off, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(file)
	if err != nil {
		return nil, err
	}
	var recs []TraceRecord
	var errs []error
	for line := range bytes.Lines(data) {
		if !bytes.HasSuffix(line, []byte("\n")) {
			break
		}
		f.off += int64(len(line))
		var x TraceRecord
		if err := json.Unmarshal(line, &x); err != nil {
			errs = append(errs, fmt.Errorf("trace line %q: %v", line, err))
			continue
		}
		recs = append(recs, x)
	}
	return recs, errors.Join(errs...)
}

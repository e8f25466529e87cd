// Package control serves the router's control socket: HTTP over a Unix
// socket (so file permissions decide who may use it) with JSON bodies,
// used by `router ct` (listing, events, statistics, deletion, flushing, like
// conntrack-tools' -L, -E, -S, -D, -F) and `router rules`.
//
// Endpoints:
//
//	GET    /v1/conntrack            entries; filters: proto, src, dst, sport, dport, state, status
//	GET    /v1/conntrack/stats      per-worker and total counters, INVALID by reason
//	GET    /v1/conntrack/events     a stream of events, one JSON object per line
//	DELETE /v1/conntrack?id=N       delete one entry; DELETE with filters deletes the matches
//	POST   /v1/conntrack/flush      delete every entry (and expectation)
//	GET    /v1/expect               pending expectations
//	GET    /v1/rules                the rules with their counters
//	GET    /v1/pipeline             device and drop counters
//	POST   /v1/reload               reload the configuration (like SIGHUP)
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/pipeline"
)

// Backend is what the server needs from the daemon.
type Backend struct {
	Pipeline *pipeline.Pipeline
	Events   *EventHub // may be nil: no event stream
	Reload   func() error
	Rules    func() any // the rule set with counters, as JSON-able value
	// Devices returns the kernel's counters of the devices, by name (may be
	// nil): where the pipeline's backpressure ends, packets the kernel
	// dropped because the router did not read them in time.
	Devices func() any
	Logger  *slog.Logger
}

// Server is a running control socket.
type Server struct {
	b    Backend
	ln   net.Listener
	srv  *http.Server
	path string
}

// Listen creates the socket (mode 0660, its directory 0750 if created) and
// serves it in the background.
func Listen(path string, b Backend) (*Server, error) {
	if b.Logger == nil {
		b.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// A stale socket from a crashed run is removed; a live one is an error.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another router is listening there", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(path, 0o660)
	s := &Server{b: b, ln: ln, path: path}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/conntrack", s.list)
	mux.HandleFunc("DELETE /v1/conntrack", s.delete)
	mux.HandleFunc("POST /v1/conntrack/flush", s.flush)
	mux.HandleFunc("GET /v1/conntrack/stats", s.stats)
	mux.HandleFunc("GET /v1/conntrack/events", s.events)
	mux.HandleFunc("GET /v1/expect", s.expect)
	mux.HandleFunc("GET /v1/rules", s.rules)
	mux.HandleFunc("GET /v1/pipeline", s.pipelineStats)
	mux.HandleFunc("POST /v1/reload", s.reload)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.srv.Close()
	os.Remove(s.path)
	return err
}

// Entry is the JSON form of a connection entry.
type Entry struct {
	ID       string    `json:"id"`
	Proto    string    `json:"proto"`
	ProtoNum uint8     `json:"protonum"`
	Family   uint8     `json:"family"`
	State    string    `json:"tcp_state,omitempty"`
	Timeout  int64     `json:"timeout"`
	Orig     Tuple     `json:"orig"`
	Reply    Tuple     `json:"reply"`
	Status   []string  `json:"status"`
	Packets  [2]uint64 `json:"packets"`
	Bytes    [2]uint64 `json:"bytes"`
	Helper   string    `json:"helper,omitempty"`
	Master   string    `json:"master,omitempty"`
	Line     string    `json:"line"` // conntrack -L format
}

// Tuple is the JSON form of a flow key.
type Tuple struct {
	Src   string  `json:"src"`
	Dst   string  `json:"dst"`
	Sport uint16  `json:"sport,omitempty"`
	Dport uint16  `json:"dport,omitempty"`
	Type  *uint8  `json:"type,omitempty"`
	Code  *uint8  `json:"code,omitempty"`
	ID    *uint16 `json:"id,omitempty"`
}

func tupleOf(k packet.FlowKey) Tuple {
	t := Tuple{Src: k.SrcAddr().String(), Dst: k.DstAddr().String()}
	switch {
	case k.Proto.IsICMP():
		ty, co, id := k.ICMPType(), k.ICMPCode(), k.ICMPID()
		t.Type, t.Code, t.ID = &ty, &co, &id
	case k.HasPorts():
		t.Sport, t.Dport = k.SrcPort, k.DstPort
	}
	return t
}

// EntryOf converts an EntryInfo.
func EntryOf(info *conntrack.EntryInfo) Entry {
	e := Entry{
		ID:       strconv.FormatUint(uint64(info.ID), 10),
		Proto:    info.Orig.Proto.String(),
		ProtoNum: uint8(info.Orig.Proto),
		Family:   info.Orig.Family,
		Timeout:  int64(info.Timeout / time.Second),
		Orig:     tupleOf(info.Orig),
		Reply:    tupleOf(info.Reply),
		Packets:  info.Packets,
		Bytes:    info.Bytes,
		Helper:   info.Helper,
		Line:     string(info.Format(nil)),
	}
	if info.Orig.Proto == packet.TCP {
		e.State = info.TCPState.String()
	}
	if s := info.Status.String(); s != "" {
		e.Status = strings.Split(s, ",")
	}
	if info.Master != 0 {
		e.Master = strconv.FormatUint(uint64(info.Master), 10)
	}
	return e
}

// Filter selects entries (conntrack's -p, -s, -d, --sport, --dport,
// --state, --status options).
type Filter struct {
	Proto        packet.Proto
	HasProto     bool
	Src, Dst     netip.Prefix
	Sport, Dport int // -1: any
	TCPState     conntrack.TCPState
	HasState     bool
	Status       conntrack.Status
	Family       uint8
}

// ParseFilter reads a filter from query parameters.
func ParseFilter(q map[string][]string) (Filter, error) {
	f := Filter{Sport: -1, Dport: -1}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if v := get("proto"); v != "" {
		p, ok := packet.ProtoByName(v)
		if !ok {
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return f, fmt.Errorf("unknown protocol %q", v)
			}
			p = packet.Proto(n)
		}
		f.Proto, f.HasProto = p, true
	}
	for _, x := range []struct {
		key string
		dst *netip.Prefix
	}{{"src", &f.Src}, {"dst", &f.Dst}} {
		v := get(x.key)
		if v == "" {
			continue
		}
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return f, fmt.Errorf("%s: %v", x.key, err)
			}
			*x.dst = p.Masked()
		} else {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return f, fmt.Errorf("%s: %v", x.key, err)
			}
			*x.dst = netip.PrefixFrom(a, a.BitLen())
		}
	}
	for _, x := range []struct {
		key string
		dst *int
	}{{"sport", &f.Sport}, {"dport", &f.Dport}} {
		if v := get(x.key); v != "" {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return f, fmt.Errorf("%s: bad port %q", x.key, v)
			}
			*x.dst = int(n)
		}
	}
	if v := get("state"); v != "" {
		found := false
		for s := conntrack.TCPNone; s <= conntrack.TCPSynSent2; s++ {
			if strings.EqualFold(s.String(), v) {
				f.TCPState, f.HasState, found = s, true, true
			}
		}
		if !found {
			return f, fmt.Errorf("unknown TCP state %q", v)
		}
	}
	if v := get("status"); v != "" {
		for _, n := range strings.Split(v, ",") {
			st, ok := conntrack.ParseStatus(strings.ToLower(strings.TrimSpace(n)))
			if !ok {
				return f, fmt.Errorf("unknown status %q", n)
			}
			f.Status |= st
		}
	}
	if v := get("family"); v != "" {
		switch v {
		case "4", "ipv4", "ip":
			f.Family = 4
		case "6", "ipv6", "ip6":
			f.Family = 6
		default:
			return f, fmt.Errorf("unknown family %q", v)
		}
	}
	return f, nil
}

// Match reports whether an entry passes the filter (on either tuple for
// addresses, as conntrack does for the original tuple).
func (f *Filter) Match(info *conntrack.EntryInfo) bool {
	k := &info.Orig
	if f.HasProto && k.Proto != f.Proto {
		return false
	}
	if f.Family != 0 && k.Family != f.Family {
		return false
	}
	if f.Src.IsValid() && !f.Src.Contains(k.SrcAddr()) {
		return false
	}
	if f.Dst.IsValid() && !f.Dst.Contains(k.DstAddr()) {
		return false
	}
	if f.Sport >= 0 && (!k.HasPorts() || int(k.SrcPort) != f.Sport) {
		return false
	}
	if f.Dport >= 0 && (!k.HasPorts() || int(k.DstPort) != f.Dport) {
		return false
	}
	if f.HasState && (k.Proto != packet.TCP || info.TCPState != f.TCPState) {
		return false
	}
	if f.Status != 0 && info.Status&f.Status != f.Status {
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	var out []Entry
	var mu sync.Mutex
	s.b.Pipeline.DoAll(func(_ int, t *conntrack.Table, now int64) {
		t.List(now, func(info *conntrack.EntryInfo) bool {
			if f.Match(info) {
				mu.Lock()
				out = append(out, EntryOf(info))
				mu.Unlock()
			}
			return true
		})
	})
	if out == nil {
		out = []Entry{}
	}
	writeJSON(w, out)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if v := q.Get("id"); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("bad id %q", v))
			return
		}
		deleted := false
		s.b.Pipeline.DoAll(func(_ int, t *conntrack.Table, _ int64) {
			if t.Delete(conntrack.ConnID(id)) {
				deleted = true
			}
		})
		if !deleted {
			httpError(w, http.StatusNotFound, errors.New("no such connection"))
			return
		}
		writeJSON(w, map[string]int{"deleted": 1})
		return
	}
	f, err := ParseFilter(q)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	if len(q) == 0 {
		httpError(w, http.StatusBadRequest, errors.New("delete needs an id or a filter; use flush to delete everything"))
		return
	}
	n := 0
	s.b.Pipeline.DoAll(func(_ int, t *conntrack.Table, now int64) {
		n += t.DeleteMatching(now, f.Match)
	})
	writeJSON(w, map[string]int{"deleted": n})
}

func (s *Server) flush(w http.ResponseWriter, r *http.Request) {
	n := 0
	s.b.Pipeline.DoAll(func(_ int, t *conntrack.Table, _ int64) { n += t.Flush() })
	x := s.b.Pipeline.Expectations().Delete(func(conntrack.Expectation) bool { return true })
	writeJSON(w, map[string]int{"deleted": n, "expectations_deleted": x})
}

// StatsReply is the JSON form of conntrack -S.
type StatsReply struct {
	Workers []WorkerCT            `json:"workers"`
	Total   WorkerCT              `json:"total"`
	Invalid map[string]uint64     `json:"invalid_by_reason"`
	Expect  conntrack.ExpectStats `json:"expectations"`
}

// WorkerCT is one table's counters.
type WorkerCT struct {
	Worker     int    `json:"worker"`
	Entries    int    `json:"entries"`
	Found      uint64 `json:"found"`
	Miss       uint64 `json:"miss"`
	Insert     uint64 `json:"insert"`
	Invalid    uint64 `json:"invalid"`
	Ignore     uint64 `json:"ignore"`
	Drop       uint64 `json:"drop"`
	EarlyDrop  uint64 `json:"early_drop"`
	Expected   uint64 `json:"expected"`
	HelperDrop uint64 `json:"helper_drop"`
	Untracked  uint64 `json:"untracked"`
}

func workerCT(i int, s *conntrack.Stats) WorkerCT {
	return WorkerCT{Worker: i, Entries: s.Entries, Found: s.Found, Miss: s.Miss, Insert: s.Insert,
		Invalid: s.Invalid, Ignore: s.Ignore, Drop: s.Drop, EarlyDrop: s.EarlyDrop,
		Expected: s.Expected, HelperDrop: s.HelperDrop, Untracked: s.Untracked}
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st := s.b.Pipeline.Stats()
	rep := StatsReply{Invalid: map[string]uint64{}, Expect: st.Expect}
	for i := range st.PerTable {
		rep.Workers = append(rep.Workers, workerCT(i, &st.PerTable[i]))
	}
	rep.Total = workerCT(-1, &st.Conntrack)
	for r, n := range st.Conntrack.InvalidBy {
		if n != 0 {
			rep.Invalid[conntrack.Reason(r).String()] = n
		}
	}
	writeJSON(w, rep)
}

func (s *Server) expect(w http.ResponseWriter, r *http.Request) {
	now := s.b.Pipeline.Now()
	type exp struct {
		Tuple       Tuple  `json:"tuple"`
		Proto       string `json:"proto"`
		SrcAny      bool   `json:"src_any"`
		SportAny    bool   `json:"sport_any"`
		Master      string `json:"master"`
		MasterTuple Tuple  `json:"master_tuple"`
		Helper      string `json:"helper"`
		Timeout     int64  `json:"timeout"`
	}
	out := []exp{}
	s.b.Pipeline.Expectations().List(func(x conntrack.Expectation) bool {
		out = append(out, exp{Tuple: tupleOf(x.Tuple), Proto: x.Tuple.Proto.String(), SrcAny: x.SrcAddrWild,
			SportAny: x.SrcPortWild, Master: strconv.FormatUint(uint64(x.Master), 10),
			MasterTuple: tupleOf(x.MasterTuple), Helper: x.Helper,
			Timeout: max(0, (x.Expires-now)/int64(time.Second))})
		return true
	})
	writeJSON(w, out)
}

func (s *Server) rules(w http.ResponseWriter, r *http.Request) {
	if s.b.Rules == nil {
		httpError(w, http.StatusNotFound, errors.New("no rules"))
		return
	}
	writeJSON(w, s.b.Rules())
}

func (s *Server) pipelineStats(w http.ResponseWriter, r *http.Request) {
	st := s.b.Pipeline.Stats()
	drops := map[string]uint64{}
	for i, n := range st.Drops() {
		if n != 0 {
			drops[pipeline.DropReason(i).String()] = n
		}
	}
	out := map[string]any{"workers": st.Workers, "readers": st.Readers, "drops": drops}
	if s.b.Devices != nil {
		out["devices"] = s.b.Devices()
	}
	writeJSON(w, out)
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.b.Reload == nil {
		httpError(w, http.StatusNotImplemented, errors.New("reload not available"))
		return
	}
	if err := s.b.Reload(); err != nil {
		httpError(w, http.StatusUnprocessableEntity, err)
		return
	}
	writeJSON(w, map[string]string{"status": "reloaded"})
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if s.b.Events == nil {
		httpError(w, http.StatusNotImplemented, errors.New("events not enabled"))
		return
	}
	fl, _ := w.(http.Flusher)
	ch, cancel := s.b.Events.Subscribe(1024)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if enc.Encode(ev) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

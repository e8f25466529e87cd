package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/pipeline"
	"github.com/tunrouter/router/pipeline/pipelinetest"
)

type rig struct {
	p        *pipeline.Pipeline
	lan, wan *pipelinetest.MemDev
	hub      *EventHub
	srv      *Server
	hc       *http.Client
	reloads  int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	lan, wan := pipelinetest.NewMemDev(16), pipelinetest.NewMemDev(16)
	routes, err := pipeline.NewRoutes([]pipeline.Route{
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Dev: 0},
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Dev: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	rs, _, err := filter.Compile(filter.Spec{Interfaces: []string{"lan", "wan"}, Workers: 2,
		Chains: []filter.ChainSpec{{Chain: filter.Forward, Policy: "accept", Rules: []filter.RuleSpec{
			{CtState: []string{"invalid"}, Action: "drop", Comment: "invalid"},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	hub := NewEventHub()
	p, err := pipeline.New(pipeline.Config{
		Ports:  []pipeline.Port{{Name: "lan", Queues: []pipeline.Device{lan}}, {Name: "wan", Queues: []pipeline.Device{wan}}},
		Routes: routes, Workers: 2, Conntrack: conntrack.DefaultConfig(), Rules: rs, Events: hub,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	r := &rig{p: p, lan: lan, wan: wan, hub: hub}
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	r.srv, err = Listen(sock, Backend{Pipeline: p, Events: hub,
		Reload: func() error {
			r.reloads++
			if r.reloads > 1 {
				return errors.New("config.toml:3:1: broken")
			}
			return nil
		},
		Rules:   func() any { return p.Rules().Counters() },
		Devices: func() any { return map[string]map[string]int{"lan": {"kernel_dropped_unread": 7}} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	r.hc = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return r
}

func (r *rig) req(t *testing.T, method, path string, q url.Values, out any) int {
	t.Helper()
	u := "http://x" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, _ := http.NewRequest(method, u, nil)
	resp, err := r.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decoding: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// udp sends a UDP packet from the LAN and waits for it on the WAN.
func (r *rig) udp(t *testing.T, sport, dport int) {
	t.Helper()
	r.lan.Send(pt.UDP4("10.1.0.5:"+strconv.Itoa(sport), "10.2.0.9:"+strconv.Itoa(dport), []byte("x")))
	if r.wan.Recv(2*time.Second) == nil {
		t.Fatal("packet not forwarded")
	}
}

func TestListFilterDeleteFlush(t *testing.T) {
	r := newRig(t)
	for i := 0; i < 6; i++ {
		r.udp(t, 5000+i, 53+i%2)
	}
	r.lan.Send(pt.TCP4("10.1.0.5:40000", "10.2.0.9:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 100}))
	if r.wan.Recv(2*time.Second) == nil {
		t.Fatal("SYN not forwarded")
	}
	var all []Entry
	if code := r.req(t, "GET", "/v1/conntrack", nil, &all); code != 200 || len(all) != 7 {
		t.Fatalf("list: %d, %d entries, want 7", code, len(all))
	}
	var dns []Entry
	r.req(t, "GET", "/v1/conntrack", url.Values{"proto": {"udp"}, "dport": {"53"}}, &dns)
	if len(dns) != 3 {
		t.Fatalf("udp dport 53: %d entries, want 3", len(dns))
	}
	for _, e := range dns {
		if e.Proto != "udp" || e.Orig.Dport != 53 || !strings.Contains(e.Line, "dport=53") {
			t.Fatalf("filtered entry %+v", e)
		}
	}
	var syn []Entry
	r.req(t, "GET", "/v1/conntrack", url.Values{"state": {"syn_sent"}}, &syn)
	if len(syn) != 1 || syn[0].State != "SYN_SENT" || len(syn[0].Status) != 1 || syn[0].Status[0] != "confirmed" {
		t.Fatalf("state filter: %+v", syn)
	}
	var bad map[string]string
	if code := r.req(t, "GET", "/v1/conntrack", url.Values{"proto": {"nope"}}, &bad); code != 400 || bad["error"] == "" {
		t.Fatalf("bad filter: %d %v", code, bad)
	}
	// Delete one by id, then by filter.
	var res map[string]int
	if code := r.req(t, "DELETE", "/v1/conntrack", url.Values{"id": {syn[0].ID}}, &res); code != 200 || res["deleted"] != 1 {
		t.Fatalf("delete by id: %d %v", code, res)
	}
	if code := r.req(t, "DELETE", "/v1/conntrack", url.Values{"id": {syn[0].ID}}, nil); code != 404 {
		t.Fatalf("deleting twice: %d, want 404", code)
	}
	r.req(t, "DELETE", "/v1/conntrack", url.Values{"dport": {"54"}}, &res)
	if res["deleted"] != 3 {
		t.Fatalf("delete by filter deleted %d, want 3", res["deleted"])
	}
	if code := r.req(t, "DELETE", "/v1/conntrack", nil, nil); code != 400 {
		t.Fatalf("delete without id or filter: %d, want 400", code)
	}
	r.req(t, "POST", "/v1/conntrack/flush", nil, &res)
	if res["deleted"] != 3 {
		t.Fatalf("flush deleted %d, want 3", res["deleted"])
	}
	r.req(t, "GET", "/v1/conntrack", nil, &all)
	if len(all) != 0 {
		t.Fatalf("%d entries after flush", len(all))
	}
}

func TestStatsCountInvalidByReason(t *testing.T) {
	r := newRig(t)
	r.lan.Send(pt.TCP4("10.1.0.5:1", "10.2.0.9:80", pt.TCPOpts{Flags: packet.SYN | packet.FIN, Seq: 1, Win: 1}))
	r.lan.Send(pt.BadL4Checksum(pt.UDP4("10.1.0.5:2", "10.2.0.9:53", []byte("x"))))
	r.udp(t, 3, 53)
	var st StatsReply
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r.req(t, "GET", "/v1/conntrack/stats", nil, &st)
		if st.Total.Invalid == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.Total.Invalid != 2 || st.Invalid["tcp: invalid flags"] != 1 || st.Invalid["udp: bad checksum"] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if len(st.Workers) != 2 || st.Total.Entries != 1 {
		t.Fatalf("workers %d entries %d", len(st.Workers), st.Total.Entries)
	}
	var pipe map[string]any
	r.req(t, "GET", "/v1/pipeline", nil, &pipe)
	if d, _ := pipe["drops"].(map[string]any); d["rule"] != float64(2) {
		t.Fatalf("pipeline drops %v, want rule=2", pipe["drops"])
	}
	if d, _ := pipe["devices"].(map[string]any); d["lan"].(map[string]any)["kernel_dropped_unread"] != float64(7) {
		t.Fatalf("device counters %v", pipe["devices"])
	}
}

func TestEventsStream(t *testing.T) {
	r := newRig(t)
	resp, err := r.hc.Get("http://x/v1/conntrack/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Wait until the subscription is registered, then make a connection.
	for i := 0; r.hub.n.Load() == 0 && i < 200; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	r.udp(t, 7000, 7001)
	r.wan.Send(pt.UDP4("10.2.0.9:7001", "10.1.0.5:7000", []byte("y")))
	if r.lan.Recv(2*time.Second) == nil {
		t.Fatal("reply not forwarded")
	}
	sc := bufio.NewScanner(resp.Body)
	var types []string
	for len(types) < 2 && sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Entry.Orig.Sport != 7000 {
			t.Fatalf("event for another flow: %+v", ev)
		}
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "NEW,UPDATE" {
		t.Fatalf("events %v, want NEW,UPDATE", types)
	}
}

func TestEventHubWithoutSubscribersDoesNothing(t *testing.T) {
	h := NewEventHub()
	info := &conntrack.EntryInfo{Orig: pt.Key(packet.UDP, "10.0.0.1:1", "10.0.0.2:2")}
	if n := testing.AllocsPerRun(100, func() { h.Event(conntrack.EventNew, info) }); n != 0 {
		t.Fatalf("%v allocations per event without subscribers", n)
	}
	ch, cancel := h.Subscribe(1)
	h.Event(conntrack.EventNew, info)
	h.Event(conntrack.EventNew, info) // buffer full: lost
	if ev := <-ch; ev.Type != "NEW" {
		t.Fatalf("event %+v", ev)
	}
	if h.Lost() != 1 {
		t.Fatalf("lost %d, want 1", h.Lost())
	}
	cancel()
	cancel()
	if h.n.Load() != 0 {
		t.Fatal("subscriber not removed")
	}
}

func TestReloadAndRules(t *testing.T) {
	r := newRig(t)
	var ok map[string]string
	if code := r.req(t, "POST", "/v1/reload", nil, &ok); code != 200 || ok["status"] != "reloaded" {
		t.Fatalf("reload: %d %v", code, ok)
	}
	var e map[string]string
	if code := r.req(t, "POST", "/v1/reload", nil, &e); code != 422 || !strings.Contains(e["error"], "config.toml:3:1") {
		t.Fatalf("failed reload: %d %v", code, e)
	}
	var rules []map[string]any
	r.req(t, "GET", "/v1/rules", nil, &rules)
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	r := newRig(t)
	if _, err := Listen(r.srv.path, Backend{Pipeline: r.p}); err == nil || !strings.Contains(err.Error(), "another router") {
		t.Fatalf("second Listen: %v", err)
	}
}

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter(url.Values{"proto": {"tcp"}, "src": {"10.0.0.0/8"}, "dst": {"192.0.2.1"},
		"sport": {"1"}, "dport": {"2"}, "state": {"established"}, "status": {"assured,seen-reply"}, "family": {"ipv4"}})
	if err != nil {
		t.Fatal(err)
	}
	info := &conntrack.EntryInfo{Orig: pt.Key(packet.TCP, "10.9.9.9:1", "192.0.2.1:2"), TCPState: conntrack.TCPEstablished,
		Status: conntrack.StatusAssured | conntrack.StatusSeenReply | conntrack.StatusConfirmed}
	if !f.Match(info) {
		t.Fatal("filter does not match its entry")
	}
	for name, mut := range map[string]func(i *conntrack.EntryInfo){
		"proto":  func(i *conntrack.EntryInfo) { i.Orig.Proto = packet.UDP },
		"src":    func(i *conntrack.EntryInfo) { i.Orig = pt.Key(packet.TCP, "11.0.0.1:1", "192.0.2.1:2") },
		"dport":  func(i *conntrack.EntryInfo) { i.Orig.DstPort = 3 },
		"state":  func(i *conntrack.EntryInfo) { i.TCPState = conntrack.TCPTimeWait },
		"status": func(i *conntrack.EntryInfo) { i.Status &^= conntrack.StatusAssured },
	} {
		c := *info
		mut(&c)
		if f.Match(&c) {
			t.Errorf("filter matches an entry with another %s", name)
		}
	}
	for _, bad := range []url.Values{{"proto": {"x"}}, {"src": {"1.2.3"}}, {"sport": {"70000"}},
		{"state": {"OPEN"}}, {"status": {"shiny"}}, {"family": {"7"}}} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("ParseFilter(%v) accepted", bad)
		}
	}
}

//go:build linux

package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
)

// iperfResult is the part of iperf3's -J output the test reads.
type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Bytes         uint64  `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         uint64  `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// TestIperf3: a 5-second iperf3 TCP run from the LAN host to a server on
// the Internet side completes through the router with a throughput above
// zero, and the router's conntrack entries account for at least the bytes
// iperf3 received.
func TestIperf3(t *testing.T) {
	tools := requireE2E(t, "iperf3", "ss")
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	const port = 5201
	srv := startProc(t, r.server, tools["iperf3"], "-s", "-1", "-p", strconv.Itoa(port))
	listening := routertest.WaitFor(5*time.Second, func() bool {
		out, _, err := r.server.run(5*time.Second, tools["ss"], "-Hltn", "sport = :"+strconv.Itoa(port))
		return err == nil && strings.TrimSpace(out) != ""
	})
	if !listening {
		t.Fatalf("iperf3 server not listening after 5 s (exited: %v):\n%s", srv.Exited(), srv.Output())
	}
	out, errOut, err := r.client.run(30*time.Second, tools["iperf3"], "-c", serverV4, "-p", strconv.Itoa(port), "-t", "5", "-J")
	var res iperfResult
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		t.Fatalf("iperf3 client: %v (json: %v)\n%s%s", err, jerr, out, errOut)
	}
	if err != nil || res.Error != "" {
		t.Fatalf("iperf3 client: %v: %s\n%s", err, res.Error, errOut)
	}
	recv := res.End.SumReceived
	t.Logf("iperf3 through the router: %.1f Mbit/s received (%d bytes in %.1f s), %d retransmits",
		recv.BitsPerSecond/1e6, recv.Bytes, recv.Seconds, res.End.SumSent.Retransmits)
	if recv.BitsPerSecond <= 0 || recv.Bytes == 0 {
		t.Fatalf("iperf3 received %d bytes at %.0f bit/s, want more than zero", recv.Bytes, recv.BitsPerSecond)
	}
	if recv.Seconds < 4.5 {
		t.Errorf("iperf3 measured %.1f s, want the whole 5 s run", recv.Seconds)
	}
	var fromClient uint64
	for _, e := range r.entries(t, "-p", "tcp", "-s", clientV4, "--dport", strconv.Itoa(port)) {
		fromClient += e.Bytes[0]
	}
	if fromClient < recv.Bytes {
		t.Errorf("conntrack counted %d bytes from the client to port %d, less than the %d iperf3 received", fromClient, port, recv.Bytes)
	}
	stats := r.mustCtl(t, "stats")
	var st struct {
		Drops map[string]uint64 `json:"drops"`
	}
	if err := json.Unmarshal([]byte(stats), &st); err != nil {
		t.Fatalf("router stats: %v\n%s", err, stats)
	}
	t.Logf("router drops during the run: %v", st.Drops)
}

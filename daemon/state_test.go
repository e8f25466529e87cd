package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
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

func testPipeline(t *testing.T) (*pipeline.Pipeline, *pipelinetest.MemDev, *pipelinetest.MemDev) {
	t.Helper()
	lan, wan := pipelinetest.NewMemDev(8), pipelinetest.NewMemDev(8)
	routes, _ := pipeline.NewRoutes([]pipeline.Route{
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Dev: 0}, {Prefix: netip.MustParsePrefix("10.2.0.0/16"), Dev: 1}})
	rs, _, err := filter.Compile(filter.Spec{Interfaces: []string{"lan", "wan"}, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Ports: []pipeline.Port{{Name: "lan", Queues: []pipeline.Device{lan}},
		{Name: "wan", Queues: []pipeline.Device{wan}}}, Routes: routes, Workers: 2, Conntrack: conntrack.DefaultConfig(), Rules: rs})
	if err != nil {
		t.Fatal(err)
	}
	return p, lan, wan
}

func TestStateFileRoundTrip(t *testing.T) {
	p, lan, wan := testPipeline(t)
	p.Start()
	lan.Send(pt.TCP4("10.1.0.5:4000", "10.2.0.9:80", pt.TCPOpts{Flags: packet.SYN, Seq: 1, Win: 1000}))
	wan.Recv(2 * time.Second)
	wan.Send(pt.TCP4("10.2.0.9:80", "10.1.0.5:4000", pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 9, Ack: 2, Win: 1000}))
	lan.Recv(2 * time.Second)
	p.Close()

	path := filepath.Join(t.TempDir(), "sub", "state")
	n, err := saveState(path, p)
	if err != nil || n != 1 {
		t.Fatalf("saved %d: %v", n, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %v %v", fi, err)
	}
	snaps, down, err := loadState(path, 0)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("loaded %d: %v", len(snaps), err)
	}
	s := snaps[0]
	if s.TCP.State != conntrack.TCPSynRecv || s.Status&conntrack.StatusSeenReply == 0 || down < 0 {
		t.Fatalf("snapshot %+v", s)
	}
	if s.Remaining > 60*time.Second-down || s.Remaining < 50*time.Second {
		t.Fatalf("remaining %v after %v down, want about 60 s (SYN_RECV)", s.Remaining, down)
	}
	q, _, _ := testPipeline(t)
	if k, err := q.Restore(snaps); k != 1 || err != nil {
		t.Fatalf("restore: %d %v", k, err)
	}

	// A limit keeps the first entries only; garbage is an error; no file
	// is a first start.
	if s, _, _ := loadState(path, 0); len(s) != 1 {
		t.Fatal("reload")
	}
	os.WriteFile(path, []byte("not gob"), 0o600)
	if _, _, err := loadState(path, 0); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("garbage: %v", err)
	}
	if s, _, err := loadState(filepath.Join(t.TempDir(), "none"), 0); s != nil || err != nil {
		t.Fatalf("missing file: %v %v", s, err)
	}
}

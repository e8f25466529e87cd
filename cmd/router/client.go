package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/tunrouter/router/config"
	"github.com/tunrouter/router/control"
)

// defaultSocket is where the example configuration puts the control socket.
const defaultSocket = config.DefaultControlSocket

// client talks HTTP to the control socket.
type client struct {
	path string
	hc   *http.Client
}

func newClient(path string) *client {
	return &client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *client) do(method, path string, q url.Values) (*http.Response, error) {
	u := "http://router" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("cannot reach the router's control socket %s: %v (is the router running? use --socket)", c.path, oe.Err)
		}
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return nil, errors.New(e.Error)
	}
	return resp, nil
}

func (c *client) getJSON(path string, q url.Values, v any) error {
	resp, err := c.do("GET", path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// cmdCT implements the conntrack-tools-like interface.
func cmdCT(args []string) int {
	fs := flag.NewFlagSet("ct", flag.ContinueOnError)
	sock := fs.String("socket", defaultSocket, "control socket")
	list := fs.Bool("L", false, "list connections (or expectations: -L expect)")
	events := fs.Bool("E", false, "show events as they happen")
	stats := fs.Bool("S", false, "show statistics")
	del := fs.Bool("D", false, "delete connections (by --id or by filter)")
	flush := fs.Bool("F", false, "flush the table")
	out := fs.String("o", "", "output format: json")
	id := fs.String("id", "", "connection id (with -D)")
	proto := fs.String("p", "", "protocol filter")
	src := fs.String("s", "", "original source address or prefix")
	dst := fs.String("d", "", "original destination address or prefix")
	sport := fs.String("sport", "", "original source port")
	dport := fs.String("dport", "", "original destination port")
	state := fs.String("state", "", "TCP state (ESTABLISHED, TIME_WAIT, ...)")
	status := fs.String("status", "", "status bits (assured,seen-reply,expected)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := newClient(*sock)
	q := url.Values{}
	for k, v := range map[string]string{"proto": *proto, "src": *src, "dst": *dst, "sport": *sport,
		"dport": *dport, "state": *state, "status": *status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var err error
	switch {
	case *list && fs.Arg(0) == "expect":
		err = ctExpect(c, *out)
	case *list:
		err = ctList(c, q, *out)
	case *events:
		err = ctEvents(c, *out)
	case *stats:
		err = ctStats(c, *out)
	case *del:
		if *id != "" {
			q = url.Values{"id": {*id}}
		}
		if len(q) == 0 {
			err = errors.New("-D needs --id or a filter (-p, -s, -d, --sport, --dport, --state, --status); -F flushes everything")
			break
		}
		err = ctDelete(c, q)
	case *flush:
		err = ctFlush(c)
	default:
		fmt.Fprintln(os.Stderr, "router ct: one of -L, -E, -S, -D, -F is required")
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "router ct:", err)
		return 1
	}
	return 0
}

func ctList(c *client, q url.Values, out string) error {
	var entries []control.Entry
	if err := c.getJSON("/v1/conntrack", q, &entries); err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Line < entries[j].Line })
	if out == "json" {
		return printJSON(entries)
	}
	for _, e := range entries {
		fmt.Println(e.Line)
	}
	fmt.Fprintf(os.Stderr, "router ct: %d flow entries have been shown.\n", len(entries))
	return nil
}

func ctExpect(c *client, out string) error {
	var xs []map[string]any
	if err := c.getJSON("/v1/expect", nil, &xs); err != nil {
		return err
	}
	if out == "json" {
		return printJSON(xs)
	}
	for _, x := range xs {
		t := x["tuple"].(map[string]any)
		src := fmt.Sprint(t["src"])
		if x["src_any"] == true {
			src = "*"
		}
		sport := fmt.Sprint(t["sport"])
		if x["sport_any"] == true || t["sport"] == nil {
			sport = "*"
		}
		m := x["master_tuple"].(map[string]any)
		fmt.Printf("%v %s src=%s dst=%v sport=%s dport=%v master=%v (src=%v dst=%v sport=%v dport=%v) helper=%v\n",
			x["timeout"], x["proto"], src, t["dst"], sport, t["dport"], x["master"],
			m["src"], m["dst"], m["sport"], m["dport"], x["helper"])
	}
	fmt.Fprintf(os.Stderr, "router ct: %d expectations have been shown.\n", len(xs))
	return nil
}

func ctEvents(c *client, out string) error {
	resp, err := c.do("GET", "/v1/conntrack/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if out == "json" {
			fmt.Println(sc.Text())
			continue
		}
		var ev control.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue
		}
		fmt.Printf("%10s %s\n", "["+ev.Type+"]", ev.Entry.Line)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func ctStats(c *client, out string) error {
	var st control.StatsReply
	if err := c.getJSON("/v1/conntrack/stats", nil, &st); err != nil {
		return err
	}
	if out == "json" {
		return printJSON(st)
	}
	for _, w := range st.Workers {
		fmt.Printf("cpu=%-3d found=%d invalid=%d ignore=%d insert=%d insert_failed=0 drop=%d early_drop=%d error=0 search_restart=0 entries=%d expected=%d helper_drop=%d untracked=%d\n",
			w.Worker, w.Found, w.Invalid, w.Ignore, w.Insert, w.Drop, w.EarlyDrop, w.Entries, w.Expected, w.HelperDrop, w.Untracked)
	}
	reasons := make([]string, 0, len(st.Invalid))
	for r := range st.Invalid {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Printf("invalid reason=%q count=%d\n", r, st.Invalid[r])
	}
	e := st.Expect
	fmt.Printf("expect created=%d used=%d expired=%d evicted=%d removed=%d\n", e.Created, e.Used, e.Expired, e.Evicted, e.Removed)
	return nil
}

func ctDelete(c *client, q url.Values) error {
	resp, err := c.do("DELETE", "/v1/conntrack", q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r map[string]int
	json.NewDecoder(resp.Body).Decode(&r)
	fmt.Fprintf(os.Stderr, "router ct: %d flow entries have been deleted.\n", r["deleted"])
	return nil
}

func ctFlush(c *client) error {
	resp, err := c.do("POST", "/v1/conntrack/flush", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r map[string]int
	json.NewDecoder(resp.Body).Decode(&r)
	fmt.Fprintf(os.Stderr, "router ct: connection tracking table has been emptied (%d entries, %d expectations).\n",
		r["deleted"], r["expectations_deleted"])
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func socketFlag(name string, args []string) (*client, []string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sock := fs.String("socket", defaultSocket, "control socket")
	if err := fs.Parse(args); err != nil {
		return nil, nil, false
	}
	return newClient(*sock), fs.Args(), true
}

func cmdRules(args []string) int {
	c, _, ok := socketFlag("rules", args)
	if !ok {
		return 2
	}
	var rules []struct {
		Chain   string
		Index   int
		Comment string
		Packets uint64
		Bytes   uint64
	}
	if err := c.getJSON("/v1/rules", nil, &rules); err != nil {
		fmt.Fprintln(os.Stderr, "router rules:", err)
		return 1
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHAIN\tRULE\tPACKETS\tBYTES\tCOMMENT")
	for _, r := range rules {
		idx := fmt.Sprint(r.Index)
		if r.Index < 0 {
			idx = "policy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", r.Chain, idx, r.Packets, r.Bytes, r.Comment)
	}
	tw.Flush()
	return 0
}

func cmdStats(args []string) int {
	c, _, ok := socketFlag("stats", args)
	if !ok {
		return 2
	}
	var v map[string]any
	if err := c.getJSON("/v1/pipeline", nil, &v); err != nil {
		fmt.Fprintln(os.Stderr, "router stats:", err)
		return 1
	}
	printJSON(v)
	return 0
}

func cmdReload(args []string) int {
	c, _, ok := socketFlag("reload", args)
	if !ok {
		return 2
	}
	resp, err := c.do("POST", "/v1/reload", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "router reload:", err)
		return 1
	}
	resp.Body.Close()
	fmt.Println("reloaded")
	return 0
}

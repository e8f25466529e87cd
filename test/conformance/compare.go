package conformance

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Deviation is one documented, deliberate difference between the kernel
// and the router for one packet of one scenario.
type Deviation struct {
	Scenario string
	Packet   int
	Kernel   string // Outcome.Short() of the kernel: "dropped invalid"
	Router   string // Outcome.Short() of the router
	Why      string
	Line     int // where the entry starts in the file
}

func (d Deviation) key() string { return fmt.Sprintf("%s #%d", d.Scenario, d.Packet) }

// ParseDeviations reads the deviations file. Each entry is
//
//	## SCENARIO #PACKET
//	- kernel: delivered|dropped STATE
//	- router: delivered|dropped STATE
//	- why: the reason, on one or more lines
//
// Text before the first entry is free prose. Every entry needs all three
// fields (the kernel's behaviour, ours, and why); a malformed entry is an
// error.
func ParseDeviations(r io.Reader) ([]Deviation, error) {
	var out []Deviation
	var cur *Deviation
	var field *string
	flush := func() error {
		if cur == nil {
			return nil
		}
		cur.Why = strings.TrimSpace(cur.Why)
		switch {
		case cur.Kernel == "":
			return fmt.Errorf("line %d: %s: no '- kernel:' line", cur.Line, cur.key())
		case cur.Router == "":
			return fmt.Errorf("line %d: %s: no '- router:' line", cur.Line, cur.key())
		case cur.Why == "":
			return fmt.Errorf("line %d: %s: no '- why:' explanation", cur.Line, cur.key())
		case cur.Kernel == cur.Router:
			return fmt.Errorf("line %d: %s: kernel and router are the same (%s): not a deviation", cur.Line, cur.key(), cur.Kernel)
		}
		for _, v := range []string{cur.Kernel, cur.Router} {
			if err := checkShort(v); err != nil {
				return fmt.Errorf("line %d: %s: %w", cur.Line, cur.key(), err)
			}
		}
		out = append(out, *cur)
		cur, field = nil, nil
		return nil
	}
	sc := bufio.NewScanner(r)
	n := 0
	seen := map[string]int{}
	for sc.Scan() {
		n++
		line := sc.Text()
		t := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "## "); ok {
			if err := flush(); err != nil {
				return nil, err
			}
			name, idx, ok := strings.Cut(strings.TrimSpace(rest), " #")
			i, err := strconv.Atoi(strings.TrimSpace(idx))
			if !ok || err != nil || i < 0 || strings.ContainsAny(name, " \t") {
				return nil, fmt.Errorf("line %d: heading %q: want '## SCENARIO #PACKET'", n, line)
			}
			cur = &Deviation{Scenario: name, Packet: i, Line: n}
			if prev, dup := seen[cur.key()]; dup {
				return nil, fmt.Errorf("line %d: %s already documented at line %d", n, cur.key(), prev)
			}
			seen[cur.key()] = n
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case strings.HasPrefix(t, "- kernel:"):
			cur.Kernel = strings.TrimSpace(strings.TrimPrefix(t, "- kernel:"))
			field = nil
		case strings.HasPrefix(t, "- router:"):
			cur.Router = strings.TrimSpace(strings.TrimPrefix(t, "- router:"))
			field = nil
		case strings.HasPrefix(t, "- why:"):
			cur.Why = strings.TrimSpace(strings.TrimPrefix(t, "- why:"))
			field = &cur.Why
		case strings.HasPrefix(line, "#"):
			// A higher-level heading ends the entry.
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			if field != nil && t != "" {
				*field += " " + t
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func checkShort(v string) error {
	d, st, ok := strings.Cut(v, " ")
	if !ok || (d != "delivered" && d != "dropped") {
		return fmt.Errorf("%q: want 'delivered STATE' or 'dropped STATE'", v)
	}
	for _, s := range append(ctStates, StateNone) {
		if st == s {
			return nil
		}
	}
	return fmt.Errorf("%q: unknown state %q", v, st)
}

// LoadDeviations parses the deviations file at path.
func LoadDeviations(path string) ([]Deviation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ds, err := ParseDeviations(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ds, nil
}

// Diff is one packet on which the runners disagree.
type Diff struct {
	Scenario string
	Packet   int
	Note     string
	Kernel   Outcome
	Router   Outcome
	// Documented is the deviation entry that explains it (nil: a failure).
	Documented *Deviation
}

// Result is a whole comparison.
type Result struct {
	Scenarios, Packets, Agree int
	Diffs                     []Diff
	// Unused are documented deviations that no longer happen (the file
	// must be kept honest: they fail too).
	Unused []Deviation
	// Intent are packets whose kernel state is not the one the scenario
	// was built to provoke (the scenario does not test what it says).
	Intent []string
}

// Failed reports whether the comparison fails.
func (r *Result) Failed() bool {
	if len(r.Unused) > 0 || len(r.Intent) > 0 {
		return true
	}
	for _, d := range r.Diffs {
		if d.Documented == nil {
			return true
		}
	}
	return false
}

// Summary is the one-line result: "N scenarios, N packets, N agree".
func (r *Result) Summary() string {
	s := fmt.Sprintf("%d scenarios, %d packets, %d agree", r.Scenarios, r.Packets, r.Agree)
	if n := len(r.Diffs); n > 0 {
		doc := 0
		for _, d := range r.Diffs {
			if d.Documented != nil {
				doc++
			}
		}
		s += fmt.Sprintf(" (%d differ: %d documented deviations, %d failures)", n, doc, n-doc)
	}
	return s
}

// Compare compares the outcomes of the kernel and the router per
// scenario (kernel[i] and router[i] are the outcomes of scenarios[i]).
func Compare(scenarios []*Scenario, kernel, router [][]Outcome, devs []Deviation) *Result {
	r := &Result{Scenarios: len(scenarios)}
	byKey := map[string]*Deviation{}
	used := map[string]bool{}
	for i := range devs {
		byKey[devs[i].key()] = &devs[i]
	}
	for si, s := range scenarios {
		for pi, p := range s.Packets {
			r.Packets++
			k, ro := kernel[si][pi], router[si][pi]
			if p.Want != "" && k.State != p.Want {
				r.Intent = append(r.Intent, fmt.Sprintf("%s #%d (%s): built to be %s, the kernel says %s",
					s.Name, pi, p.Note, p.Want, k.State))
			}
			if k.Short() == ro.Short() {
				r.Agree++
				continue
			}
			d := Diff{Scenario: s.Name, Packet: pi, Note: p.Note, Kernel: k, Router: ro}
			key := fmt.Sprintf("%s #%d", s.Name, pi)
			if dev := byKey[key]; dev != nil && dev.Kernel == k.Short() && dev.Router == ro.Short() {
				d.Documented = dev
				used[key] = true
			}
			r.Diffs = append(r.Diffs, d)
		}
	}
	for _, d := range devs {
		if !used[d.key()] {
			r.Unused = append(r.Unused, d)
		}
	}
	return r
}

// Report writes the table of differences and the problems.
func (r *Result) Report(w io.Writer) {
	if len(r.Diffs) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "scenario\t#\tpacket\tkernel\trouter\tkernel reason\trouter reason\tdocumented\trouter detail")
		for _, d := range r.Diffs {
			doc := "NO"
			if d.Documented != nil {
				doc = fmt.Sprintf("line %d", d.Documented.Line)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Scenario, d.Packet, d.Note,
				d.Kernel.Short(), d.Router.Short(), dash(d.Kernel.Reason), dash(d.Router.Reason), doc,
				joinNonEmpty("; ", d.Router.Detail, kdetail(d.Kernel)))
		}
		tw.Flush()
	}
	sort.Strings(r.Intent)
	for _, s := range r.Intent {
		fmt.Fprintln(w, "scenario intent not met:", s)
	}
	for _, d := range r.Unused {
		fmt.Fprintf(w, "documented deviation no longer happens (line %d): %s: kernel %s, router %s\n", d.Line, d.key(), d.Kernel, d.Router)
	}
}

func kdetail(o Outcome) string {
	if o.Detail == "" {
		return ""
	}
	return "kernel: " + o.Detail
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

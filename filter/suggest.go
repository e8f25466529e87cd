package filter

import (
	"fmt"
	"strings"

	"github.com/tunrouter/router/conntrack"
)

func reasonTexts() []string {
	var out []string
	for _, r := range conntrack.AllReasons() {
		out = append(out, r.String())
	}
	return out
}

func knownList(names []string) string {
	if len(names) == 0 {
		return " (no helpers are available)"
	}
	return " (known: " + strings.Join(names, ", ") + ")"
}

// suggest returns ` (did you mean "x"?)` for the known name closest to s,
// or "" when none is close.
func suggest(s string, known []string) string {
	if best := Closest(s, known); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// Closest returns the name in known that is a likely misspelling of s
// (at most 2 edits, or a fifth of its length for long names, and fewer
// than half its length), or "".
func Closest(s string, known []string) string {
	best, bestD := "", max(2, len(s)/5)+1
	for _, k := range known {
		d := editDistance(strings.ToLower(s), strings.ToLower(k))
		if d < bestD && 2*d <= len(s) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance (Levenshtein with
// transpositions), for suggestions only.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

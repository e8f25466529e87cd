package config

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// posDoc exercises every TOML construct the index must follow. Lines are
// numbered in the comments at their ends where a key is looked up.
const posDoc = `# top comment [not.a.table]
title = "x"                         # line 2
[a]                                 # line 3
b = 1                               # line 4
c.d = "dotted"                      # line 5
"quoted key" = 2                    # line 6
[a.e]                               # line 7
  f = [1, 2,                        # line 8
       3]                           # line 9
[[arr]]                             # line 10
name = "zero"                       # line 11
[[arr]]                             # line 12
name = "one"                        # line 13
  [arr.sub]                         # line 14
  k = true                          # line 15
  [[arr.list]]                      # line 16
  v = 1                             # line 17
  [[arr.list]]                      # line 18
  v = 2                             # line 19
[[arr]]                             # line 20
name = """multi                     # line 21
[[arr]] not a table, and "quotes" ""
name = 'x'"""                       # line 23
lit = '''a ' b''''                  # line 24
inline = { x = 1, y = { z = "}" }, w = [ { q = 1 }, { q = 2 } ] }   # line 25
tables = [ { n = 1 },               # line 26
           { n = 2, m = "a]b" } ]   # line 27
'key.with.dots' = 3                 # line 28
after = "#not a comment"            # line 29
`

func TestPosIndex(t *testing.T) {
	var tree map[string]any
	if _, err := toml.Decode(posDoc, &tree); err != nil {
		t.Fatalf("the test document must be valid TOML: %v", err)
	}
	x := newPosIndex([]byte(posDoc))
	cases := []struct {
		path string
		pos  Pos
	}{
		{"title", Pos{2, 1}},
		{"a", Pos{3, 1}},
		{"a.b", Pos{4, 1}},
		{"a.c", Pos{5, 1}},
		{"a.c.d", Pos{5, 1}},
		{`a."quoted key"`, Pos{6, 1}},
		{"a.e", Pos{7, 1}},
		{"a.e.f", Pos{8, 3}},
		{"a.e.f[0]", Pos{8, 8}},
		{"a.e.f[1]", Pos{8, 11}},
		{"a.e.f[2]", Pos{9, 8}},
		{"arr", Pos{10, 1}},
		{"arr[0]", Pos{10, 1}},
		{"arr[0].name", Pos{11, 1}},
		{"arr[1]", Pos{12, 1}},
		{"arr[1].name", Pos{13, 1}},
		{"arr[1].sub", Pos{14, 3}},
		{"arr[1].sub.k", Pos{15, 3}},
		{"arr[1].list[0]", Pos{16, 3}},
		{"arr[1].list[0].v", Pos{17, 3}},
		{"arr[1].list[1].v", Pos{19, 3}},
		{"arr[2]", Pos{20, 1}},
		{"arr[2].name", Pos{21, 1}},
		{"arr[2].lit", Pos{24, 1}},
		{"arr[2].inline", Pos{25, 1}},
		{"arr[2].inline.x", Pos{25, 12}},
		{"arr[2].inline.y.z", Pos{25, 25}},
		{"arr[2].inline.w[1]", Pos{25, 53}},
		{"arr[2].inline.w[1].q", Pos{25, 55}},
		{"arr[2].tables[1]", Pos{27, 12}},
		{"arr[2].tables[1].m", Pos{27, 21}},
		{`arr[2]."key.with.dots"`, Pos{28, 1}},
		{"arr[2].after", Pos{29, 1}},
		// Missing keys fall back to their nearest ancestor.
		{"arr[1].sub.missing", Pos{14, 3}},
		{"arr[2].tables[1].nothing[3]", Pos{27, 12}},
		{"nowhere.at.all", Pos{1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if got := x.lookup(tc.path); got != tc.pos {
				t.Fatalf("lookup(%s) = %v, want %v", tc.path, got, tc.pos)
			}
		})
	}
	// A fake table header inside the multi-line string must not have
	// counted as a fourth [[arr]].
	if _, ok := x.offsets["arr[3]"]; ok {
		t.Fatal("a [[arr]] inside a string was taken for a table")
	}
}

func TestParentPath(t *testing.T) {
	for in, want := range map[string]string{
		"a.b.c":         "a.b",
		"a.b[3]":        "a.b",
		"a[1]":          "a",
		`a."b.c"`:       "a",
		`a."b\".c"`:     "a",
		`"x"`:           "",
		"a":             "",
		"sets.lan[2]":   "sets.lan",
		"chains.f.r[0]": "chains.f.r",
	} {
		if got := parentPath(in); got != want {
			t.Errorf("parentPath(%s) = %q, want %q", in, got, want)
		}
	}
}

// FuzzPosIndex: the scanner never panics or loops, whatever the input
// (Parse only runs it on valid TOML, but it must be robust anyway).
func FuzzPosIndex(f *testing.F) {
	f.Add(posDoc)
	f.Add(`a = [ { b = "]" }, ''' x `)
	f.Add(`[[a.b]]` + "\n" + `"c\` + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		x := newPosIndex([]byte(s))
		for p := range x.offsets {
			if pos := x.lookup(p); pos.Line < 1 || pos.Col < 1 || pos.Line > strings.Count(s, "\n")+1 {
				t.Fatalf("%s at %v", p, pos)
			}
		}
	})
}

package config

import (
	"sort"
	"strconv"
	"strings"
)

// Why a scanner of our own: BurntSushi/toml (v1.6.0) reports positions for
// syntax errors (ParseError.Position), but its MetaData keeps key positions
// privately, keyed by the dotted key without array indexes, so the 4th
// [[chains.forward.rules]] table and the 1st share one entry. Semantic
// errors need the position of "chains.forward.rules[3].dport[1]", so this
// file indexes every key, table header and array element of a document
// that toml has already parsed successfully. It never fails: on input it
// does not understand it skips ahead, and every loop makes progress.

// Pos is a position in the file: line and column (in bytes), from 1.
type Pos struct{ Line, Col int }

// posIndex maps canonical key paths to byte offsets.
type posIndex struct {
	lineStarts []int
	offsets    map[string]int
}

// pathJoin appends a key to a path, quoting it when it is not bare.
func pathJoin(path, key string) string {
	k := key
	if !isBareKey(key) {
		k = strconv.Quote(key)
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

// pathIndex appends an array index to a path.
func pathIndex(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// newLineIndex returns an index that only converts offsets.
func newLineIndex(src []byte) *posIndex {
	x := &posIndex{lineStarts: []int{0}, offsets: map[string]int{}}
	for i, c := range src {
		if c == '\n' {
			x.lineStarts = append(x.lineStarts, i+1)
		}
	}
	return x
}

func newPosIndex(src []byte) *posIndex {
	x := newLineIndex(src)
	sc := &scanner{s: src, x: x, aot: map[string]int{}}
	sc.document()
	return x
}

// pos converts a byte offset into a line and column.
func (x *posIndex) pos(off int) Pos {
	line := sort.Search(len(x.lineStarts), func(i int) bool { return x.lineStarts[i] > off })
	if line == 0 {
		return Pos{1, 1}
	}
	return Pos{Line: line, Col: off - x.lineStarts[line-1] + 1}
}

// lookup returns the position of path, or of its nearest ancestor that is
// in the file (a missing key is reported where its table is).
func (x *posIndex) lookup(path string) Pos {
	for path != "" {
		if off, ok := x.offsets[path]; ok {
			return x.pos(off)
		}
		path = parentPath(path)
	}
	return Pos{1, 1}
}

// parentPath strips the last ".key" or "[i]" of a path (quoted keys may
// contain dots and brackets).
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i > 0 {
			return p[:i]
		}
		return ""
	}
	if strings.HasSuffix(p, `"`) {
		// A quoted last key: find its opening quote.
		for i := len(p) - 2; i >= 0; i-- {
			if p[i] == '"' && (i == 0 || p[i-1] != '\\') {
				if i == 0 {
					return ""
				}
				return strings.TrimSuffix(p[:i], ".")
			}
		}
		return ""
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

type scanner struct {
	s   []byte
	i   int
	x   *posIndex
	aot map[string]int // array-of-tables path -> number of tables so far
}

func (sc *scanner) set(path string, off int) {
	if _, ok := sc.x.offsets[path]; !ok {
		sc.x.offsets[path] = off
	}
}

func (sc *scanner) peek(n int) byte {
	if sc.i+n < len(sc.s) {
		return sc.s[sc.i+n]
	}
	return 0
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

// skipWS skips spaces and tabs (and a stray CR).
func (sc *scanner) skipWS() {
	for !sc.eof() && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t' || sc.s[sc.i] == '\r') {
		sc.i++
	}
}

// skipAll skips whitespace, newlines and comments.
func (sc *scanner) skipAll() {
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine moves past the next newline.
func (sc *scanner) skipLine() {
	for !sc.eof() && sc.s[sc.i] != '\n' {
		sc.i++
	}
	if !sc.eof() {
		sc.i++
	}
}

func (sc *scanner) document() {
	cur := ""
	for {
		sc.skipAll()
		if sc.eof() {
			return
		}
		start := sc.i
		if sc.s[sc.i] == '[' {
			arr := sc.peek(1) == '['
			if arr {
				sc.i += 2
			} else {
				sc.i++
			}
			parts := sc.keyParts()
			cur = sc.header(parts, arr, start)
			sc.skipLine()
			continue
		}
		parts := sc.keyParts()
		sc.skipWS()
		if len(parts) == 0 || sc.peek(0) != '=' {
			if sc.i == start {
				sc.i++
			}
			sc.skipLine()
			continue
		}
		sc.i++
		path := cur
		for _, p := range parts {
			path = pathJoin(path, p)
			sc.set(path, start)
		}
		sc.skipWS()
		sc.value(path)
		sc.skipWS()
		if sc.peek(0) == '#' || sc.peek(0) == '\n' {
			sc.skipLine()
		}
	}
}

// header resolves a table header to its canonical path, counting arrays
// of tables.
func (sc *scanner) header(parts []string, arr bool, start int) string {
	p := ""
	for j, part := range parts {
		p = pathJoin(p, part)
		if j == len(parts)-1 && arr {
			n := sc.aot[p]
			sc.aot[p] = n + 1
			sc.set(p, start)
			p = pathIndex(p, n)
			sc.set(p, start)
			return p
		}
		if j < len(parts)-1 {
			if n, ok := sc.aot[p]; ok && n > 0 {
				p = pathIndex(p, n-1)
			}
		}
		sc.set(p, start)
	}
	return p
}

// keyParts reads a (dotted) key and returns its parts.
func (sc *scanner) keyParts() []string {
	var parts []string
	for {
		sc.skipWS()
		if sc.eof() {
			return parts
		}
		var k string
		switch c := sc.s[sc.i]; {
		case c == '"':
			k = sc.basicString()
		case c == '\'':
			k = sc.literalString()
		case isBareChar(c):
			st := sc.i
			for !sc.eof() && isBareChar(sc.s[sc.i]) {
				sc.i++
			}
			k = string(sc.s[st:sc.i])
		default:
			return parts
		}
		parts = append(parts, k)
		sc.skipWS()
		if sc.peek(0) != '.' {
			return parts
		}
		sc.i++
	}
}

// basicString reads a single-line "..." string and returns its value.
func (sc *scanner) basicString() string {
	st := sc.i
	sc.i++
	for !sc.eof() {
		switch sc.s[sc.i] {
		case '\\':
			sc.i += 2
			continue
		case '"':
			sc.i++
			raw := string(sc.s[st:min(sc.i, len(sc.s))])
			if v, err := strconv.Unquote(raw); err == nil {
				return v
			}
			return raw[1 : len(raw)-1]
		case '\n':
			return string(sc.s[st+1 : sc.i])
		}
		sc.i++
	}
	return string(sc.s[min(st+1, len(sc.s)):])
}

func (sc *scanner) literalString() string {
	st := sc.i + 1
	sc.i++
	for !sc.eof() && sc.s[sc.i] != '\'' && sc.s[sc.i] != '\n' {
		sc.i++
	}
	v := string(sc.s[st:sc.i])
	if !sc.eof() && sc.s[sc.i] == '\'' {
		sc.i++
	}
	return v
}

// multiline skips a """ or ”' string (the opening quotes at sc.i).
func (sc *scanner) multiline(q byte) {
	sc.i += 3
	for !sc.eof() {
		c := sc.s[sc.i]
		if c == '\\' && q == '"' {
			sc.i += 2
			continue
		}
		if c == q && sc.peek(1) == q && sc.peek(2) == q {
			sc.i += 3
			// Up to two more quotes belong to the content.
			for n := 0; n < 2 && !sc.eof() && sc.s[sc.i] == q; n++ {
				sc.i++
			}
			return
		}
		sc.i++
	}
}

// value indexes the value at sc.i: inline tables and arrays recursively.
func (sc *scanner) value(path string) {
	if sc.eof() {
		return
	}
	switch c := sc.s[sc.i]; c {
	case '{':
		sc.i++
		for {
			sc.skipAll()
			if sc.eof() {
				return
			}
			switch sc.s[sc.i] {
			case '}':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			start := sc.i
			parts := sc.keyParts()
			sc.skipWS()
			if len(parts) == 0 || sc.peek(0) != '=' {
				if sc.i == start {
					sc.i++
				}
				continue
			}
			sc.i++
			p := path
			for _, part := range parts {
				p = pathJoin(p, part)
				sc.set(p, start)
			}
			sc.skipWS()
			sc.value(p)
		}
	case '[':
		sc.i++
		for n := 0; ; {
			sc.skipAll()
			if sc.eof() {
				return
			}
			switch sc.s[sc.i] {
			case ']':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			ep := pathIndex(path, n)
			sc.set(ep, sc.i)
			before := sc.i
			sc.value(ep)
			if sc.i == before {
				sc.i++
			}
			n++
		}
	case '"', '\'':
		if sc.peek(1) == c && sc.peek(2) == c {
			sc.multiline(c)
		} else if c == '"' {
			sc.basicString()
		} else {
			sc.literalString()
		}
	default:
		for !sc.eof() {
			switch sc.s[sc.i] {
			case ',', ']', '}', '\n', '#':
				return
			}
			sc.i++
		}
	}
}

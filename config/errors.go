package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a configuration file, with the position of the
// key it is about: "router.toml:12:1: key \"chains.forward.rules[3].dport\":
// port 70000 out of range 0..65535".
type Error struct {
	File string
	Line int // from 1
	Col  int // from 1, in bytes
	// Key is the key path ("chains.forward.rules[3].dport[1]"); empty for
	// syntax errors, which have no key yet.
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: key %q: %s", e.File, e.Line, e.Col, e.Key, e.Msg)
}

// ErrorList is every error found in a file, in file order. Load returns
// it (as an error) when the file is not valid.
type ErrorList []*Error

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Warning is a problem that does not stop the file from loading (a rule
// that can never match). It prints like an Error, with "warning: ".
type Warning struct {
	File      string
	Line, Col int
	Key       string
	Msg       string
}

func (w Warning) String() string {
	return fmt.Sprintf("%s:%d:%d: warning: key %q: %s", w.File, w.Line, w.Col, w.Key, w.Msg)
}

// collector gathers errors and warnings with their positions.
type collector struct {
	file  string
	idx   *posIndex
	errs  ErrorList
	warns []Warning
	// connected are the devices' networks (for route checks).
	connected []connNet
}

func (c *collector) errorf(key, format string, args ...any) {
	p := c.idx.lookup(key)
	c.errs = append(c.errs, &Error{File: c.file, Line: p.Line, Col: p.Col, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) warnf(key, format string, args ...any) {
	p := c.idx.lookup(key)
	c.warns = append(c.warns, Warning{File: c.file, Line: p.Line, Col: p.Col, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) sort() {
	sort.SliceStable(c.errs, func(i, j int) bool {
		a, b := c.errs[i], c.errs[j]
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	sort.SliceStable(c.warns, func(i, j int) bool {
		a, b := c.warns[i], c.warns[j]
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
}

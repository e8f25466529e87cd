package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"time"

	"github.com/tunrouter/router/filter"
)

// The file is parsed by BurntSushi/toml into a generic tree
// (map[string]any), then decoded here into the file structs below. Doing
// the typed decoding ourselves gives every error its exact key path
// ("chains.forward.rules[3].dport"), reports all of them rather than the
// first, and catches unknown keys as MetaData.Undecoded would, with the
// array index that MetaData's keys lack.

// decoder walks the tree.
type decoder struct {
	c *collector
}

// valueDecoder is implemented by field types that accept several TOML
// shapes (a string or a list, a duration as text or seconds).
type valueDecoder interface {
	decodeTOML(d *decoder, path string, v any)
}

var valueDecoderType = reflect.TypeFor[valueDecoder]()

// tomlType names a decoded TOML value's type for messages.
func tomlType(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", truncate(x, 40))
	case int64:
		return fmt.Sprintf("an integer (%d)", x)
	case float64:
		return fmt.Sprintf("a float (%v)", x)
	case bool:
		return fmt.Sprintf("a boolean (%v)", x)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date-time"
	}
	return fmt.Sprintf("a %T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// sortedKeys returns the keys of m in file order (then by name).
func (d *decoder) sortedKeys(path string, m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		pi, pj := d.c.idx.lookup(pathJoin(path, keys[i])), d.c.idx.lookup(pathJoin(path, keys[j]))
		if pi != pj {
			return pi.Line < pj.Line || pi.Line == pj.Line && pi.Col < pj.Col
		}
		return keys[i] < keys[j]
	})
	return keys
}

// decodeStruct decodes table m into the struct rv (fields tagged
// `toml:"name"`); unknown keys are errors.
func (d *decoder) decodeStruct(path string, v any, rv reflect.Value) {
	m, ok := v.(map[string]any)
	if !ok {
		d.c.errorf(path, "expected a table, got %s", tomlType(v))
		return
	}
	rt := rv.Type()
	fields := map[string]int{}
	var names []string
	for i := 0; i < rt.NumField(); i++ {
		tag := rt.Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	for _, k := range d.sortedKeys(path, m) {
		kp := pathJoin(path, k)
		i, ok := fields[k]
		if !ok {
			d.c.errorf(kp, "unknown key %q%s", k, suggestKey(k, names))
			continue
		}
		d.decodeValue(kp, m[k], rv.Field(i))
	}
}

func suggestKey(k string, names []string) string {
	if best := filter.Closest(k, names); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func (d *decoder) decodeValue(path string, v any, rv reflect.Value) {
	if rv.CanAddr() && rv.Addr().Type().Implements(valueDecoderType) {
		rv.Addr().Interface().(valueDecoder).decodeTOML(d, path, v)
		return
	}
	switch rv.Kind() {
	case reflect.Pointer:
		nv := reflect.New(rv.Type().Elem())
		n := len(d.c.errs)
		d.decodeValue(path, v, nv.Elem())
		if len(d.c.errs) == n || nv.Elem().Kind() == reflect.Struct {
			// A scalar that did not decode is left unset: its wrong type is
			// reported once, not again as an out-of-range zero. A table is
			// kept whatever its keys did, so that the checks of its other
			// keys still run and report.
			rv.Set(nv)
		}
	case reflect.Struct:
		d.decodeStruct(path, v, rv)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.c.errorf(path, "expected a string, got %s", tomlType(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.c.errorf(path, "expected true or false, got %s", tomlType(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			d.c.errorf(path, "expected an integer, got %s", tomlType(v))
			return
		}
		if rv.OverflowInt(n) {
			d.c.errorf(path, "%d is out of range", n)
			return
		}
		rv.SetInt(n)
	case reflect.Float64:
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				d.c.errorf(path, "expected a finite number, got %v", x)
				return
			}
			rv.SetFloat(x)
		case int64:
			rv.SetFloat(float64(x))
		default:
			d.c.errorf(path, "expected a number, got %s", tomlType(v))
		}
	case reflect.Slice:
		var elems []any
		switch x := v.(type) {
		case []any:
			elems = x
		case []map[string]any:
			for _, e := range x {
				elems = append(elems, e)
			}
		case map[string]any:
			d.c.errorf(path, "expected an array, got a table (write [[%s]] for each element)", stripIndexes(path))
			return
		default:
			d.c.errorf(path, "expected an array, got %s", tomlType(v))
			return
		}
		s := reflect.MakeSlice(rv.Type(), len(elems), len(elems))
		for i, e := range elems {
			d.decodeValue(pathIndex(path, i), e, s.Index(i))
		}
		rv.Set(s)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			d.c.errorf(path, "expected a table, got %s", tomlType(v))
			return
		}
		out := reflect.MakeMapWithSize(rv.Type(), len(m))
		for _, k := range d.sortedKeys(path, m) {
			ev := reflect.New(rv.Type().Elem()).Elem()
			d.decodeValue(pathJoin(path, k), m[k], ev)
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		rv.Set(out)
	default:
		d.c.errorf(path, "internal error: cannot decode into %s", rv.Type())
	}
}

// strList is a value given as one string or number, or as an array of
// them: `dport = 22`, `dport = "1024-65535"`, `dport = [22, "@web"]`.
type strList struct {
	Vals   []string
	IsList bool // written as an array (errors then name the element)
	Set    bool // present in the file
}

func (l *strList) decodeTOML(d *decoder, path string, v any) {
	l.Set = true
	one := func(p string, x any) (string, bool) {
		switch y := x.(type) {
		case string:
			return y, true
		case int64:
			return strconv.FormatInt(y, 10), true
		}
		d.c.errorf(p, "expected a string or an integer, got %s", tomlType(x))
		return "", false
	}
	switch x := v.(type) {
	case []any:
		l.IsList = true
		for i, e := range x {
			if s, ok := one(pathIndex(path, i), e); ok {
				l.Vals = append(l.Vals, s)
			} else {
				l.Vals = append(l.Vals, "")
			}
		}
	default:
		if s, ok := one(path, v); ok {
			l.Vals = []string{s}
		}
	}
}

// elemPath returns the path of element i as the file wrote it.
func (l *strList) elemPath(path string, i int) string {
	if l.IsList && i >= 0 {
		return pathIndex(path, i)
	}
	return path
}

// duration is a time span written in Go's syntax ("90s", "2m30s", "120h";
// there is no day unit) or as an integer number of seconds.
type duration struct {
	D   time.Duration
	Set bool
}

func (t *duration) decodeTOML(d *decoder, path string, v any) {
	t.Set = true
	switch x := v.(type) {
	case int64:
		if x > int64(math.MaxInt64/time.Second) || x < 0 {
			d.c.errorf(path, "%d seconds is out of range", x)
			return
		}
		t.D = time.Duration(x) * time.Second
	case string:
		dd, err := time.ParseDuration(x)
		if err != nil {
			d.c.errorf(path, "invalid duration %q (write \"30s\", \"5m\", \"120h\" or an integer number of seconds)", x)
			return
		}
		t.D = dd
	default:
		d.c.errorf(path, "expected a duration (\"30s\") or seconds, got %s", tomlType(v))
		return
	}
	if t.D <= 0 {
		d.c.errorf(path, "duration %v must be positive", t.D)
	}
}

// optPath builds a key path from parts for messages.
func optPath(parts ...string) string {
	p := ""
	for _, s := range parts {
		p = pathJoin(p, s)
	}
	return p
}

// stripIndexes turns "chains.forward.rules" or "a[1].b" into the dotted key
// a table header uses.
func stripIndexes(p string) string {
	var b []byte
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[':
			depth++
		case ']':
			depth--
		default:
			if depth == 0 {
				b = append(b, p[i])
			}
		}
	}
	return string(b)
}

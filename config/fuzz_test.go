package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

// FuzzLoad: any input either loads into a usable configuration or yields
// errors that all carry a position inside the file; it never panics.
func FuzzLoad(f *testing.F) {
	if b, err := os.ReadFile(examplePath); err == nil {
		f.Add(string(b))
	}
	f.Add(baseDevices)
	f.Add(baseDevices + "[[chains.forward.rules]]\ndport = [22, 70000]\naction = \"accept\"\n")
	f.Add(baseDevices + "[chains.input]\nrules = [ { action = \"drop\", saddr = \"!@x\" } ]\n[sets]\nx = [\"10.0.0.0/8\", \"@x\"]\n")
	f.Add("[[device]]\nname = \"a\"\n[[route]]\nto = \"::/0\"\ndevice = \"a\"\n[conntrack.timeouts]\nudp = \"1h\"\n")
	f.Add("a = [ { b = \"]\" }, ''' x ")
	f.Add("[router\n")
	syn := filtertest.TCP("10.1.0.7:1", "203.0.113.5:80", packet.SYN)
	f.Fuzz(func(t *testing.T, doc string) {
		lines := strings.Count(doc, "\n") + 1
		cfg, err := Parse("f.toml", []byte(doc))
		if err != nil {
			var el ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("error %v is not a non-empty ErrorList", err)
			}
			for _, e := range el {
				if e.Line < 1 || e.Col < 1 || e.Line > lines {
					t.Fatalf("error outside the file (%d lines): %v", lines, e)
				}
			}
			return
		}
		if cfg.Ruleset == nil || len(cfg.Devices) == 0 {
			t.Fatalf("loaded without a ruleset or devices")
		}
		for _, w := range cfg.Warnings {
			if w.Line < 1 || w.Col < 1 || w.Line > lines {
				t.Fatalf("warning outside the file: %v", w)
			}
		}
		// The loaded rules evaluate without trouble.
		for c := filter.Chain(0); c < filter.NumChains; c++ {
			cfg.Ruleset.Eval(c, &filter.Packet{P: filtertest.Decode(syn), Ct: conntrack.New, IIf: 0, OIf: 0}, 0)
		}
	})
}

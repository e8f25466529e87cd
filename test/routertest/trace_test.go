package routertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTraceFileRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.jsonl")
	f := &TraceFile{Path: path}
	if _, err := f.Read(); !os.IsNotExist(err) {
		t.Fatalf("Read of a missing file: %v, want not-exist", err)
	}
	appendTo := func(s string) {
		t.Helper()
		w, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		append  string
		want    []string // the records' verdicts
		wantErr string
	}{
		{"one line and a half", `{"in":"lan0","proto":"tcp","sport":1024,"dport":80,"flags":"SYN|ACK","verdict":"accept"}` + "\n" + `{"verdict":"dr`,
			[]string{"accept"}, ""},
		{"the rest of the half", `op"}` + "\n", []string{"drop"}, ""},
		{"nothing new", "", nil, ""},
		{"a bad line between good ones", `{"verdict":"a"}` + "\n" + "not json\n" + `{"verdict":"b"}` + "\n",
			[]string{"a", "b"}, `trace line "not json\n"`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			appendTo(st.append)
			recs, err := f.Read()
			if st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
				t.Fatalf("error %v, want %q", err, st.wantErr)
			}
			var got []string
			for _, r := range recs {
				got = append(got, r.Verdict)
			}
			if strings.Join(got, ",") != strings.Join(st.want, ",") {
				t.Fatalf("verdicts %q, want %q", got, st.want)
			}
		})
	}
}

func TestTraceRecordAccessors(t *testing.T) {
	in := "lan0"
	x := TraceRecord{In: &in, Flags: "SYN|ACK"}
	if x.InDev() != "lan0" || x.OutDev() != "" {
		t.Errorf("InDev %q OutDev %q, want lan0 and none", x.InDev(), x.OutDev())
	}
	for flag, want := range map[string]bool{"SYN": true, "ACK": true, "FIN": false, "SY": false} {
		if got := x.HasFlag(flag); got != want {
			t.Errorf("HasFlag(%q) = %v, want %v", flag, got, want)
		}
	}
}

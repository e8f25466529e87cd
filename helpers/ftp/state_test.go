package ftp

import (
	"testing"

	"github.com/tunrouter/router/conntrack"
)

func TestStateMarshalRoundTrip(t *testing.T) {
	h := New(Config{})
	st := &connState{}
	st.remember(conntrack.Original, 1000)
	st.remember(conntrack.Original, 1050)
	st.remember(conntrack.Reply, 0xfffffff0)
	b, err := h.MarshalState(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	g := got.(*connState)
	if *g != *st || !g.atLineStart(conntrack.Original, 1050) || !g.atLineStart(conntrack.Reply, 0xfffffff0) || g.atLineStart(conntrack.Reply, 1000) {
		t.Fatalf("round trip %+v != %+v", g, st)
	}
	if _, err := h.UnmarshalState(b[:3]); err == nil {
		t.Fatal("short state accepted")
	}
	b[0] = 9
	if _, err := h.UnmarshalState(b); err == nil {
		t.Fatal("impossible count accepted")
	}
	if _, err := h.MarshalState(42); err == nil {
		t.Fatal("foreign state marshalled")
	}
}

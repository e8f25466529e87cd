package filter

import (
	"net/netip"

	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func synPkt(src, dst string) []byte { return filtertest.TCP(src, dst, packet.SYN) }

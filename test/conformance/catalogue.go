package conformance

import (
	pt "github.com/tunrouter/router/packet/packettest"
)

// Rule sets used by many scenarios.
var (
	// dropInvalid makes INVALID visible as a drop and lets everything
	// else through.
	dropInvalid = Ruleset{Policy: "accept", Rules: []Rule{{States: []string{StateInvalid}, Action: "drop"}}}
)

// Catalogue returns every scenario, with marks assigned.
func Catalogue() []*Scenario {
	var all []*Scenario
	var mark uint32
	add := func(b *sb) { all = append(all, finish(b.s, &mark)) }
	for _, v6 := range []bool{false, true} {
		sfx := map[bool]string{false: "-v4", true: "-v6"}[v6]
		{
			b := newSB("tcp-handshake-data-close"+sfx, "2.5", v6, dropInvalid, "handshake, data both ways, FIN from both sides")
			c := b.tcp(40000, 80).handshake()
			c.exchange(Client, "GET / HTTP/1.0\r\n\r\n")
			c.exchange(Server, "HTTP/1.0 200 OK\r\n\r\nhello")
			c.send(Client, fFA, "", "client FIN", StateEstablished)
			c.send(Server, fFA, "", "server FIN", StateEstablished)
			c.ack(Client)
			add(b)
		}
		{
			b := newSB("tcp-bad-checksum"+sfx, "2.3", v6, dropInvalid, "a SYN with a wrong TCP checksum is INVALID")
			c := b.tcp(40001, 80)
			syn := c.seg(Client, pt.TCPOpts{Flags: fSYN, Seq: 1})
			b.add(Client, pt.BadL4Checksum(syn), "SYN, bad checksum", StateInvalid)
			add(b)
		}
	}
	return all
}

package ftp

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

type parseCase struct {
	name string
	in   string
	want Result
	addr string // expected address ("" for none)
	port uint16
	text string // expected matched text (in[Off:Off+Len]); "" = don't check
}

func runParseCases(t *testing.T, parse func([]byte) (Command, Result), cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, r := parse([]byte(tc.in))
			if r != tc.want {
				t.Fatalf("%q: result %v, want %v (cmd %+v)", tc.in, r, tc.want, cmd)
			}
			if r != Match {
				return
			}
			var want netip.Addr
			if tc.addr != "" {
				want = netip.MustParseAddr(tc.addr)
			}
			if cmd.Addr != want || cmd.Port != tc.port {
				t.Fatalf("%q: got %v port %d, want %v port %d", tc.in, cmd.Addr, cmd.Port, want, tc.port)
			}
			if cmd.Off < 0 || cmd.Len <= 0 || cmd.Off+cmd.Len > len(tc.in) {
				t.Fatalf("%q: match at %d+%d out of range", tc.in, cmd.Off, cmd.Len)
			}
			if tc.text != "" {
				if got := tc.in[cmd.Off : cmd.Off+cmd.Len]; got != tc.text {
					t.Fatalf("%q: matched text %q, want %q", tc.in, got, tc.text)
				}
			}
		})
	}
}

func TestParsePORT(t *testing.T) {
	runParseCases(t, ParsePORT, []parseCase{
		{"plain", "PORT 10,0,0,5,4,1\r\n", Match, "10.0.0.5", 1025, "10,0,0,5,4,1"},
		{"lowercase", "port 10,0,0,5,4,1\r\n", Match, "10.0.0.5", 1025, "10,0,0,5,4,1"},
		{"mixed case", "PoRt 10,0,0,5,4,1\r\n", Match, "10.0.0.5", 1025, ""},
		{"leading zeros", "PORT 010,000,000,005,004,001\r\n", Match, "10.0.0.5", 1025, "010,000,000,005,004,001"},
		{"octet over 255 spills left", "PORT 1,2,3,300,4,5\r\n", Match, "1.2.3.44", 1029, ""},
		{"first octet over 255 loses bits", "PORT 257,2,3,4,0,21\r\n", Match, "1.2.3.4", 21, ""},
		{"32-bit wrap", "PORT 4294967297,0,0,1,0,1\r\n", Match, "1.0.0.1", 1, ""},
		{"port byte over 255", "PORT 1,2,3,4,256,1\r\n", Match, "1.2.3.4", 1, ""},
		{"port low over 65535", "PORT 1,2,3,4,5,70000\r\n", Match, "1.2.3.4", 0x1570, ""},
		{"empty fields are zero", "PORT 1,,3,4,5,6\r\n", Match, "1.0.3.4", 1286, "1,,3,4,5,6"},
		{"all empty", "PORT ,,,,,\r\n", Match, "0.0.0.0", 0, ",,,,,"},
		{"port zero accepted", "PORT 1,2,3,4,0,0\r\n", Match, "1.2.3.4", 0, ""},
		{"anything before the space", "PORTABLE 1,2,3,4,5,6\r\n", Match, "1.2.3.4", 1286, ""},
		{"only the first command counts", "PORT 1,2,3,4,5,6\r\nPORT 9,9,9,9,9,9\r\n", Match, "1.2.3.4", 1286, "1,2,3,4,5,6"},
		{"bare CR end", "PORT 1,2,3,4,5,6\r", Match, "1.2.3.4", 1286, ""},
		{"space before CR", "PORT 1,2,3,4,5,6 \r\n", Partial, "", 0, ""},
		{"space after comma", "PORT 1, 2,3,4,5,6\r\n", Partial, "", 0, ""},
		{"two spaces", "PORT  1,2,3,4,5,6\r\n", Partial, "", 0, ""},
		{"tab", "PORT\t1,2,3,4,5,6\r\n", Partial, "", 0, ""},
		{"five numbers", "PORT 1,2,3,4,5\r\n", Partial, "", 0, ""},
		{"seven numbers", "PORT 1,2,3,4,5,6,7\r\n", Partial, "", 0, ""},
		{"trailing comma", "PORT 1,2,3,4,5,6,\r\n", Partial, "", 0, ""},
		{"LF without CR", "PORT 1,2,3,4,5,6\n", Partial, "", 0, ""},
		{"no terminator", "PORT 1,2,3,4,5,6", Partial, "", 0, ""},
		{"letter", "PORT 1,2,3,4,5,x\r\n", Partial, "", 0, ""},
		{"dots", "PORT 1.2.3.4,5,6\r\n", Partial, "", 0, ""},
		{"no space", "PORT\r\n", Partial, "", 0, ""},
		{"exactly the pattern", "PORT", Partial, "", 0, ""},
		{"prefix", "PO", Partial, "", 0, ""},
		{"lowercase prefix", "por", Partial, "", 0, ""},
		{"one letter", "P", Partial, "", 0, ""},
		{"empty", "", Partial, "", 0, ""},
		{"space only after pattern", "PORT ", Partial, "", 0, ""},
		{"other command", "USER anonymous\r\n", NoMatch, "", 0, ""},
		{"near miss", "POST 1,2,3,4,5,6\r\n", NoMatch, "", 0, ""},
		{"short non-prefix", "Q", NoMatch, "", 0, ""},
		{"leading space", " PORT 1,2,3,4,5,6\r\n", NoMatch, "", 0, ""},
		{"PASV is not parsed", "PASV\r\n", NoMatch, "", 0, ""},
		{"LPRT is not parsed", "LPRT 4,4,1,2,3,4,2,4,1\r\n", NoMatch, "", 0, ""},
	})
}

func TestParse227(t *testing.T) {
	runParseCases(t, Parse227, []parseCase{
		{"rfc 959", "227 Entering Passive Mode (192,168,1,2,19,137).\r\n", Match, "192.168.1.2", 5001, "192,168,1,2,19,137"},
		{"no parentheses", "227 Entering Passive Mode 192,168,1,2,19,137\r\n", Match, "192.168.1.2", 5001, "192,168,1,2,19,137"},
		{"equals sign", "227 =192,168,1,2,19,137\r\n", Match, "192.168.1.2", 5001, ""},
		{"digits right away", "227 10,0,0,1,4,1)\r\n", Match, "10.0.0.1", 1025, "10,0,0,1,4,1"},
		{"dot ends", "227 ok 10,0,0,1,4,1.\r\n", Match, "10.0.0.1", 1025, ""},
		{"empty field", "227 (10,,0,1,4,1)\r\n", Match, "10.0.0.1", 1025, ""},
		{"over 255", "227 (10,0,0,256,4,1)\r\n", Match, "10.0.1.0", 1025, ""},
		{"early digit", "227 Mode 2 (10,0,0,1,4,1)\r\n", Partial, "", 0, ""},
		{"no digit at all", "227 Entering Passive Mode\r\n", Partial, "", 0, ""},
		{"numbers to the end", "227 (10,0,0,1,4,1", Partial, "", 0, ""},
		{"five numbers", "227 (10,0,0,1,4)\r\n", Partial, "", 0, ""},
		{"seven numbers", "227 (10,0,0,1,4,1,7)\r\n", Partial, "", 0, ""},
		{"pattern only", "227 ", Partial, "", 0, ""},
		{"no space", "227", Partial, "", 0, ""},
		{"prefix", "22", Partial, "", 0, ""},
		{"multi-line form", "227-Entering Passive Mode (1,2,3,4,5,6)\r\n", NoMatch, "", 0, ""},
		{"other reply", "226 Transfer complete\r\n", NoMatch, "", 0, ""},
		{"229 is not 227", "229 Entering Extended Passive Mode (|||6446|)\r\n", NoMatch, "", 0, ""},
		{"command direction text", "PORT 1,2,3,4,5,6\r\n", NoMatch, "", 0, ""},
	})
}

func TestParseEPRT(t *testing.T) {
	v4 := func(b []byte) (Command, Result) { return ParseEPRT(b, 4) }
	v6 := func(b []byte) (Command, Result) { return ParseEPRT(b, 6) }
	t.Run("ipv4", func(t *testing.T) {
		runParseCases(t, v4, []parseCase{
			{"rfc 2428", "EPRT |1|132.235.1.2|6275|\r\n", Match, "132.235.1.2", 6275, "|1|132.235.1.2|6275|"},
			{"lowercase", "eprt |1|132.235.1.2|6275|\r\n", Match, "132.235.1.2", 6275, ""},
			{"other delimiter", "EPRT !1!10.0.0.5!1025!\r\n", Match, "10.0.0.5", 1025, "!1!10.0.0.5!1025!"},
			{"letter delimiter", "EPRT x1x10.0.0.5x1025x\r\n", Match, "10.0.0.5", 1025, ""},
			{"tilde delimiter", "EPRT ~1~10.0.0.5~1025~\r\n", Match, "10.0.0.5", 1025, ""},
			{"no terminator needed after", "EPRT |1|10.0.0.5|1025|", Match, "10.0.0.5", 1025, ""},
			{"octet over 255", "EPRT |1|1.2.3.300|12|\r\n", Match, "1.2.3.44", 12, ""},
			{"empty octet", "EPRT |1|1..3.4|12|\r\n", Match, "1.0.3.4", 12, ""},
			{"leading zeros", "EPRT |1|001.002.003.004|00012|\r\n", Match, "1.2.3.4", 12, ""},
			{"port 65535", "EPRT |1|1.2.3.4|65535|\r\n", Match, "1.2.3.4", 65535, ""},
			{"port wraps to 1", "EPRT |1|1.2.3.4|65537|\r\n", Match, "1.2.3.4", 1, ""},
			{"port wraps", "EPRT |1|1.2.3.4|70000|\r\n", Match, "1.2.3.4", 4464, ""},
			{"port 0", "EPRT |1|1.2.3.4|0|\r\n", Partial, "", 0, ""},
			{"port wraps to 0", "EPRT |1|1.2.3.4|65536|\r\n", Partial, "", 0, ""},
			{"empty port", "EPRT |1|1.2.3.4||\r\n", Partial, "", 0, ""},
			{"port letter", "EPRT |1|1.2.3.4|12a|\r\n", Partial, "", 0, ""},
			{"port without delimiter", "EPRT |1|1.2.3.4|12\r\n", Partial, "", 0, ""},
			{"three octets", "EPRT |1|1.2.3|12|\r\n", Partial, "", 0, ""},
			{"five octets", "EPRT |1|1.2.3.4.5|12|\r\n", Partial, "", 0, ""},
			{"mixed delimiters", "EPRT |1!1.2.3.4|12|\r\n", Partial, "", 0, ""},
			{"digit delimiter", "EPRT 212.3.4.5262\r\n", Partial, "", 0, ""},
			{"space delimiter", "EPRT  1 1.2.3.4 12 \r\n", Partial, "", 0, ""},
			{"DEL delimiter", "EPRT \x7f1\x7f1.2.3.4\x7f12\x7f\r\n", Partial, "", 0, ""},
			{"high byte delimiter", "EPRT \xff1\xff1.2.3.4\xff12\xff\r\n", Partial, "", 0, ""},
			{"protocol 2 on ipv4", "EPRT |2|::1|12|\r\n", Partial, "", 0, ""},
			{"protocol 3", "EPRT |3|1.2.3.4|12|\r\n", Partial, "", 0, ""},
			{"too short", "EPRT |1|", Partial, "", 0, ""},
			{"no space", "EPRT\r\n", Partial, "", 0, ""},
			{"prefix", "EP", Partial, "", 0, ""},
			{"epsv is not parsed", "EPSV\r\n", NoMatch, "", 0, ""},
			{"epsv all", "EPSV ALL\r\n", NoMatch, "", 0, ""},
		})
	})
	t.Run("ipv6", func(t *testing.T) {
		runParseCases(t, v6, []parseCase{
			{"rfc 2428", "EPRT |2|1080::8:800:200C:417A|5282|\r\n", Match, "1080::8:800:200c:417a", 5282, "|2|1080::8:800:200C:417A|5282|"},
			{"loopback", "EPRT |2|::1|2000|\r\n", Match, "::1", 2000, ""},
			{"full form", "EPRT |2|2001:db8:0:0:0:0:0:5|2000|\r\n", Match, "2001:db8::5", 2000, ""},
			{"embedded ipv4", "EPRT |2|::ffff:10.0.0.5|2000|\r\n", Match, "::ffff:10.0.0.5", 2000, ""},
			{"NUL ends the address", "EPRT |2|::1\x002000|\r\n", Match, "::1", 2000, ""},
			{"colon ends embedded ipv4", "EPRT |2|::1.2.3.4:2000|\r\n", Match, "::1.2.3.4", 2000, ""},
			{"protocol 1 on ipv6", "EPRT |1|10.0.0.5|2000|\r\n", Partial, "", 0, ""},
			{"zone", "EPRT |2|fe80::1%eth0|2000|\r\n", Partial, "", 0, ""},
			{"bad address", "EPRT |2|1:2|2000|\r\n", Partial, "", 0, ""},
			{"address to the end", "EPRT |2|::1", Partial, "", 0, ""},
			{"port 0", "EPRT |2|::1|0|\r\n", Partial, "", 0, ""},
		})
	})
}

func TestParse229(t *testing.T) {
	runParseCases(t, Parse229, []parseCase{
		{"rfc 2428", "229 Entering Extended Passive Mode (|||6446|)\r\n", Match, "", 6446, "|||6446|"},
		{"other delimiter", "229 ok (!!!6446!)\r\n", Match, "", 6446, "!!!6446!"},
		{"close paren not checked", "229 (|||6446|\r\n", Match, "", 6446, ""},
		{"port wraps to 1", "229 (|||65537|)\r\n", Match, "", 1, ""},
		{"port 0", "229 (|||0|)\r\n", Partial, "", 0, ""},
		{"port wraps to 0", "229 (|||65536|)\r\n", Partial, "", 0, ""},
		{"no paren", "229 Entering Extended Passive Mode |||6446|\r\n", Partial, "", 0, ""},
		{"no closing delimiter", "229 (|||6446)\r\n", Partial, "", 0, ""},
		{"two delimiters", "229 (||6446|)\r\n", Partial, "", 0, ""},
		{"mixed delimiters", "229 (|!|6446|)\r\n", Partial, "", 0, ""},
		{"digit delimiters", "229 (1116446|)\r\n", Partial, "", 0, ""},
		{"address given", "229 (|2|::1|6446|)\r\n", Partial, "", 0, ""},
		{"too short", "229 (|||", Partial, "", 0, ""},
		{"pattern only", "229 ", Partial, "", 0, ""},
		{"prefix", "229", Partial, "", 0, ""},
		{"other reply", "230 Logged in\r\n", NoMatch, "", 0, ""},
	})
}

// TestParseIPv6 checks the in6_pton-compatible parser on its own, with '|'
// as the delimiter.
func TestParseIPv6(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = rejected
		end  int    // expected end index (-1 = index of the first '|')
	}{
		{"::|", "::", -1},
		{"::1|", "::1", -1},
		{"1::|", "1::", -1},
		{"1:2:3:4:5:6:7:8|", "1:2:3:4:5:6:7:8", -1},
		{"1::8|", "1::8", -1},
		{"1:2:3:4:5:6:7::|", "1:2:3:4:5:6:7:0", -1},
		{"::2:3:4:5:6:7:8|", "0:2:3:4:5:6:7:8", -1},
		{"1:2:3:4:5:6::8|", "1:2:3:4:5:6:0:8", -1},
		{"1::3:4:5:6:7:8|", "1:0:3:4:5:6:7:8", -1},
		{"FE80::ABCD|", "fe80::abcd", -1},
		{"0:0:0:0:0:0:0:1|", "::1", -1},
		{"0001::|", "1::", -1},
		{"00000001::|", "1::", -1},
		{"0fff0::|", "fff0::", -1},
		{"::ffff:1.2.3.4|", "::ffff:1.2.3.4", -1},
		{"::1.2.3.4|", "::1.2.3.4", -1},
		{"1:2:3:4:5:6:1.2.3.4|", "1:2:3:4:5:6:102:304", -1},
		{"1:2:3:4:5::1.2.3.4|", "1:2:3:4:5:0:102:304", -1},
		{"::001.02.3.255|", "::1.2.3.255", -1},
		{"::1.2.3.4:99|", "::1.2.3.4", 9},
		{"::1\x00junk", "::1", 3},
		{"::1", "::1", 3}, // the end of the data also ends it
		{":|", "", 0},
		{":1|", "", 0},
		{"1:|", "", 0},
		{":::|", "", 0},
		{"1::2::3|", "", 0},
		{"1:2:3:4:5:6:7:8:9|", "", 0},
		{"1:2:3:4:5:6:7|", "", 0},
		{"1::2:3:4:5:6:7:8|", "", 0},
		{"::1:2:3:4:5:6:7:8|", "", 0},
		{"12345::|", "", 0},
		{"fe80::1%eth0|", "", 0},
		{"::1.2.3.256|", "", 0},
		{"::1.2.3|", "", 0},
		{"::1.2.3.4.5|", "", 0},
		{"::1..3.4|", "", 0},
		{"::1a.2.3.4|", "", 0},
		{"1:2:3:4:5:6:7:1.2.3.4|", "", 0},
		{"1:2:3:4:5:6::1.2.3.4|", "", 0},
		{"1.2.3.4|", "", 0},
		{"g::|", "", 0},
		{"|", "", 0},
		{" ::1|", "", 0},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			a, end, ok := parseIPv6([]byte(tt.in), '|')
			if tt.want == "" {
				if ok {
					t.Fatalf("accepted as %v", netip.AddrFrom16(a))
				}
				return
			}
			if !ok {
				t.Fatalf("rejected at %d", end)
			}
			if got, want := netip.AddrFrom16(a), netip.MustParseAddr(tt.want); got != want.Unmap() && got != netip.AddrFrom16(want.As16()) {
				t.Fatalf("got %v, want %v", got, want)
			}
			wantEnd := tt.end
			if wantEnd < 0 {
				wantEnd = strings.IndexByte(tt.in, '|')
			}
			if end != wantEnd {
				t.Fatalf("end %d, want %d", end, wantEnd)
			}
		})
	}
}

// TestParseIPv6VersusNetip documents where the kernel's IPv6 text parser
// and net/netip.ParseAddr disagree, which is why the helper does not use
// netip: each string is accepted by exactly one of them.
func TestParseIPv6VersusNetip(t *testing.T) {
	tests := []struct {
		in          string
		kernelTakes bool
		why         string
	}{
		{"fe80::1%eth0", false, "zones: netip accepts them, in6_pton has no zone syntax"},
		{"00001::", true, "in6_pton allows extra leading zeros in a group, netip at most 4 digits"},
		{"::ffff:01.2.3.4", true, "in6_pton allows leading zeros in embedded IPv4 octets, netip does not"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, end, ok := parseIPv6([]byte(tt.in+"|"), '|')
			ok = ok && end == len(tt.in)
			_, err := netip.ParseAddr(tt.in)
			if ok != tt.kernelTakes || (err == nil) == tt.kernelTakes {
				t.Fatalf("kernel parser %v, netip err %v: %s", ok, err, tt.why)
			}
		})
	}
}

// formatPORT formats a PORT command the way NAT would (decimal, no leading
// zeros).
func formatPORT(a netip.Addr, port uint16) string {
	b := a.As4()
	return fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d\r\n", b[0], b[1], b[2], b[3], port>>8, port&0xff)
}

func TestParseNoAllocs(t *testing.T) {
	lines := [][]byte{
		[]byte("PORT 10,0,0,5,4,1\r\n"),
		[]byte("EPRT |2|2001:db8::5|2000|\r\n"),
		[]byte("227 Entering Passive Mode (192,168,1,2,19,137).\r\n"),
		[]byte("229 Entering Extended Passive Mode (|||6446|)\r\n"),
	}
	var sink Command
	a := testing.AllocsPerRun(100, func() {
		for _, l := range lines {
			c1, _ := ParsePORT(l)
			c2, _ := ParseEPRT(l, 6)
			c3, _ := Parse227(l)
			c4, _ := Parse229(l)
			sink.Port += c1.Port + c2.Port + c3.Port + c4.Port
		}
	})
	if a != 0 {
		t.Fatalf("parsers allocate %v per run", a)
	}
}

func FuzzParsePORT(f *testing.F) {
	f.Add([]byte("PORT 10,0,0,5,4,1\r\n"), []byte{10, 0, 0, 5}, uint16(1025))
	f.Add([]byte("PORT 1,,3,4,5,6\r\n"), []byte{255, 255, 255, 255}, uint16(0))
	f.Add([]byte("port 4294967297,0,0,1,0,1\r\n"), []byte{0, 0, 0, 0}, uint16(65535))
	f.Fuzz(func(t *testing.T, raw []byte, a []byte, port uint16) {
		cmd, r := ParsePORT(raw)
		checkCommand(t, raw, cmd, r)
		if r == Match && !bytes.HasPrefix(bytes.ToUpper(raw), []byte("PORT")) {
			t.Fatalf("%q matched without the PORT prefix", raw)
		}
		// Round trip: a formatted command parses back to its values.
		var a4 [4]byte
		copy(a4[:], a)
		addr := netip.AddrFrom4(a4)
		line := formatPORT(addr, port)
		cmd, r = ParsePORT([]byte(line))
		if r != Match || cmd.Addr != addr || cmd.Port != port || line[cmd.Off+cmd.Len] != '\r' {
			t.Fatalf("%q parsed as %v %+v", line, r, cmd)
		}
		// The 227 parser reads the same numbers.
		reply := "227 Entering Passive Mode (" + line[5:len(line)-2] + ").\r\n"
		cmd, r = Parse227([]byte(reply))
		if r != Match || cmd.Addr != addr || cmd.Port != port {
			t.Fatalf("%q parsed as %v %+v", reply, r, cmd)
		}
	})
}

func FuzzParse227(f *testing.F) {
	f.Add([]byte("227 Entering Passive Mode (192,168,1,2,19,137).\r\n"))
	f.Add([]byte("227 Mode 2 (10,0,0,1,4,1)\r\n"))
	f.Add([]byte("227 "))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cmd, r := Parse227(raw)
		checkCommand(t, raw, cmd, r)
		if r == Match && !isDigit(raw[cmd.Off]) {
			t.Fatalf("%q: match does not start at a digit", raw)
		}
	})
}

func FuzzParseEPRT(f *testing.F) {
	f.Add([]byte("EPRT |1|132.235.1.2|6275|\r\n"), []byte{132, 235, 1, 2}, uint16(6275), byte('|'), false)
	f.Add([]byte("EPRT |2|1080::8:800:200C:417A|5282|\r\n"), []byte("\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), uint16(1), byte('!'), true)
	f.Add([]byte("EPRT |2|::1.2.3.4:99|"), []byte{}, uint16(0), byte('x'), true)
	f.Fuzz(func(t *testing.T, raw []byte, a []byte, port uint16, delim byte, v6 bool) {
		for _, fam := range []uint8{4, 6} {
			cmd, r := ParseEPRT(raw, fam)
			checkCommand(t, raw, cmd, r)
			if r == Match && (cmd.Port == 0 || cmd.Addr.Is4() != (fam == 4)) {
				t.Fatalf("%q family %d: %+v", raw, fam, cmd)
			}
		}
		// Round trip.
		if !isDelim(delim) || port == 0 {
			return
		}
		var addr netip.Addr
		var af, fam = "1", uint8(4)
		if v6 {
			var a16 [16]byte
			copy(a16[:], a)
			addr, af, fam = netip.AddrFrom16(a16), "2", 6
		} else {
			var a4 [4]byte
			copy(a4[:], a)
			addr = netip.AddrFrom4(a4)
		}
		text := addr.String()
		if strings.IndexByte(text, delim) >= 0 || (v6 && isHexLetter(delim)) {
			return // the delimiter cannot also appear in the address
		}
		d := string(delim)
		line := "EPRT " + d + af + d + text + d + strconv.Itoa(int(port)) + d + "\r\n"
		cmd, r := ParseEPRT([]byte(line), fam)
		if r != Match || cmd.Addr != addr || cmd.Port != port || cmd.Off != 5 || cmd.Off+cmd.Len != len(line)-2 {
			t.Fatalf("%q parsed as %v %+v", line, r, cmd)
		}
	})
}

func isHexLetter(c byte) bool { return ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F') }

func FuzzParse229(f *testing.F) {
	f.Add([]byte("229 Entering Extended Passive Mode (|||6446|)\r\n"), uint16(6446), byte('|'))
	f.Add([]byte("229 (|||65536|)"), uint16(1), byte('!'))
	f.Fuzz(func(t *testing.T, raw []byte, port uint16, delim byte) {
		cmd, r := Parse229(raw)
		checkCommand(t, raw, cmd, r)
		if r == Match && (cmd.Addr.IsValid() || cmd.Port == 0 || cmd.Len < 5) {
			t.Fatalf("%q: %+v", raw, cmd)
		}
		if !isDelim(delim) || port == 0 {
			return
		}
		d := string(delim)
		line := "229 Entering Extended Passive Mode (" + d + d + d + strconv.Itoa(int(port)) + d + ")\r\n"
		cmd, r = Parse229([]byte(line))
		if r != Match || cmd.Port != port || line[cmd.Off-1] != '(' || line[cmd.Off+cmd.Len] != ')' {
			t.Fatalf("%q parsed as %v %+v", line, r, cmd)
		}
	})
}

// FuzzParseIPv6 compares the kernel-compatible parser with net/netip on
// the texts both are meant to read: wherever netip accepts a plain IPv6
// address, so must the kernel parser, with the same value; wherever the
// kernel parser accepts a text up to the delimiter, netip must accept it
// too, unless the text uses one of the documented extensions (groups with
// more than four digits, leading zeros in an embedded IPv4 octet).
func FuzzParseIPv6(f *testing.F) {
	for _, s := range []string{"::", "::1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::ffff:1.2.3.4",
		"1:2:3:4:5::1.2.3.4", "00001::", "fe80::1%eth0", "::1.2.3.4:5", "1::2::3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, end, ok := parseIPv6([]byte(s), '|')
		if end < 0 || end > len(s) {
			t.Fatalf("%q: end %d out of range", s, end)
		}
		n, err := netip.ParseAddr(s)
		plain := err == nil && n.Is6() && n.Zone() == "" && !strings.ContainsAny(s, "|\x00")
		if plain {
			if !ok || end != len(s) || a != n.As16() {
				t.Fatalf("%q: netip reads %v, kernel parser %v ok=%v end=%d", s, n, netip.AddrFrom16(a), ok, end)
			}
			return
		}
		if ok && end == len(s) && !usesKernelExtension(s) {
			t.Fatalf("%q: kernel parser accepts %v, netip: %v", s, netip.AddrFrom16(a), err)
		}
	})
}

// usesKernelExtension reports whether s has a hex group longer than four
// digits or an embedded IPv4 octet with a leading zero.
func usesKernelExtension(s string) bool {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == '.' })
	dotted := strings.Contains(s, ".")
	for i, g := range fields {
		if len(g) > 4 {
			return true
		}
		if dotted && i >= len(fields)-4 && len(g) > 1 && g[0] == '0' {
			return true
		}
	}
	return false
}

// checkCommand verifies what every parser promises for any input.
func checkCommand(t *testing.T, raw []byte, cmd Command, r Result) {
	t.Helper()
	if r > Partial {
		t.Fatalf("%q: result %d", raw, r)
	}
	if r != Match {
		if cmd != (Command{}) {
			t.Fatalf("%q: %v with a command %+v", raw, r, cmd)
		}
		return
	}
	if cmd.Off < 0 || cmd.Len <= 0 || cmd.Off+cmd.Len > len(raw) {
		t.Fatalf("%q: match %d+%d out of range", raw, cmd.Off, cmd.Len)
	}
}

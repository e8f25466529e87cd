package egress

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
)

// resolvConf returns the nameservers of a resolv.conf file, port 53.
func resolvConf(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseResolvConf(bufio.NewScanner(f)), nil
}

func parseResolvConf(sc *bufio.Scanner) []netip.AddrPort {
	var out []netip.AddrPort
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil || a.Zone() != "" {
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
	}
	return out
}

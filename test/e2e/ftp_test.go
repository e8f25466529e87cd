//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/control"
	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// ftpFileSize is the size of the file the FTP tests download.
const ftpFileSize = 3 << 20

// ftpServer is vsftpd running in the server namespace, serving one random
// file to anonymous users over IPv4 and IPv6.
type ftpServer struct {
	proc *proc
	file string // name under the FTP root
	sum  string // its SHA-256
	log  string // vsftpd's log file (commands and transfers)
}

// startVsftpd runs vsftpd (dual stack, anonymous read-only, active and
// passive mode) in r's server namespace until t ends.
func startVsftpd(t *testing.T, r *router, bin string) *ftpServer {
	t.Helper()
	// vsftpd changes into the anonymous user's home before its anon_root.
	if u, err := user.Lookup("ftp"); err != nil {
		tundevtest.SkipOrFail(t, "vsftpd's anonymous user ftp is missing (%v): reinstall the vsftpd package, which creates it", err)
	} else if _, err := os.Stat(u.HomeDir); err != nil {
		tundevtest.SkipOrFail(t, "the home of vsftpd's anonymous user ftp is missing (%v): reinstall the vsftpd package, which creates it", err)
	}
	// vsftpd serves the root as an unprivileged user: the directories
	// must be reachable (0755) all the way down.
	dir := tempDir(t, "ftp")
	root, empty := filepath.Join(dir, "root"), filepath.Join(dir, "empty")
	for _, d := range []string{dir, root, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	s := &ftpServer{file: "data.bin", log: filepath.Join(dir, "vsftpd.log")}
	s.sum = randomFile(t, root, s.file, ftpFileSize)
	conf := filepath.Join(dir, "vsftpd.conf")
	text := strings.Join([]string{
		"listen=NO",
		"listen_ipv6=YES", // one socket for both families
		"listen_port=21",
		"background=NO",
		"anonymous_enable=YES",
		"no_anon_password=YES",
		"anon_root=" + root,
		"ftp_username=ftp", // Debian's vsftpd package creates this user
		"local_enable=NO",
		"write_enable=NO",
		"pasv_enable=YES",
		"port_enable=YES",
		"connect_from_port_20=NO",
		"connect_timeout=5", // active mode: give up a blocked data connection soon
		"seccomp_sandbox=NO",
		"secure_chroot_dir=" + empty,
		"xferlog_enable=YES",
		"log_ftp_protocol=YES",
		"dual_log_enable=NO",
		"vsftpd_log_file=" + s.log,
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startProc(t, r.server, bin, conf)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(s.log); err == nil {
				t.Logf("vsftpd log:\n%s", b)
			}
		}
	})
	// Ready when it greets a client (from inside its own namespace).
	var banner string
	ok := routertest.WaitFor(5*time.Second, func() bool {
		if s.proc.Exited() {
			return false
		}
		c, err := dialIn(r.server, "tcp", net.JoinHostPort(serverV4, "21"), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		banner, _ = bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "QUIT\r\n")
		return strings.HasPrefix(banner, "220")
	})
	if !ok {
		t.Fatalf("vsftpd not serving after 5 s (exited: %v, banner %q):\n%s", s.proc.Exited(), banner, s.proc.Output())
	}
	return s
}

// ftpMode is one way of opening the data connection.
type ftpMode struct {
	name   string
	fam    family
	args   []string // curl options that select it
	cmd    string   // the command curl must send (in its -v output)
	active bool     // the server opens the data connection
}

var ftpModes = []ftpMode{
	{"PORT", ipv4, []string{"-P", "-", "--disable-eprt"}, "PORT", true},
	{"EPRT", ipv4, []string{"-P", "-"}, "EPRT", true},
	{"PASV", ipv4, []string{"--disable-epsv"}, "PASV", false},
	{"EPSV", ipv4, nil, "EPSV", false},
	{"EPRT", ipv6, []string{"-P", "-"}, "EPRT", true},
	{"EPSV", ipv6, nil, "EPSV", false},
}

var (
	// > PORT 10,1,0,2,195,80
	rePORT = regexp.MustCompile(`(?m)^> PORT \d+,\d+,\d+,\d+,(\d+),(\d+)\s*$`)
	// > EPRT |1|10.1.0.2|50000|
	reEPRT = regexp.MustCompile(`(?m)^> EPRT \|[12]\|[^|]+\|(\d+)\|\s*$`)
	// < 227 Entering Passive Mode (198,51,100,2,156,64).
	re227 = regexp.MustCompile(`(?m)^< 227 .*\(\d+,\d+,\d+,\d+,(\d+),(\d+)\)`)
	// < 229 Entering Extended Passive Mode (|||40000|)
	re229 = regexp.MustCompile(`(?m)^< 229 .*\(\|\|\|(\d+)\|\)`)
)

// announcedPort finds the data port curl's -v output shows for mode m:
// the port of its PORT/EPRT command, or of the server's 227/229 reply.
func announcedPort(m ftpMode, verbose string) (int, error) {
	var re *regexp.Regexp
	switch m.cmd {
	case "PORT":
		re = rePORT
	case "EPRT":
		re = reEPRT
	case "PASV":
		re = re227
	case "EPSV":
		re = re229
	}
	sub := re.FindStringSubmatch(verbose)
	if sub == nil {
		return 0, fmt.Errorf("curl did not use %s (no match for %s in its -v output)", m.cmd, re)
	}
	p, _ := strconv.Atoi(sub[1])
	if len(sub) == 3 {
		lo, _ := strconv.Atoi(sub[2])
		p = p*256 + lo
	}
	return p, nil
}

// curlFTP downloads the FTP server's file with curl from the client
// namespace in mode m; it returns curl's error, its -v output and the
// downloaded file's path.
func curlFTP(t *testing.T, r *router, curl string, s *ftpServer, m ftpMode, extra ...string) (err error, verbose, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "download")
	url := fmt.Sprintf("ftp://%s/%s", net.JoinHostPort(m.fam.server, "21"), s.file)
	args := append([]string{curl, "-sS", "-v", "--max-time", "30", "-o", path}, m.args...)
	args = append(append(args, extra...), url)
	_, verbose, err = r.client.run(60*time.Second, args...)
	return err, verbose, path
}

// TestFTP: active and passive FTP with vsftpd and curl through the router
// under a strict rule set (new connections only to TCP 21 from the LAN;
// established and related accepted; everything else dropped). Every
// transfer is byte-identical, and its data connection is the one the
// PORT/EPRT command or 227/229 reply announced, tracked as EXPECTED with
// the FTP control connection as its master and accepted as RELATED. Data
// connections that nothing announced are dropped both ways.
func TestFTP(t *testing.T) {
	tools := requireE2E(t, "curl", "vsftpd")
	r := startRouter(t, routerConfig{Forward: strictRules, FTPPorts: []int{21}, Trace: true})
	s := startVsftpd(t, r, tools["vsftpd"])

	for _, m := range ftpModes {
		t.Run(m.fam.name+"/"+m.name, func(t *testing.T) {
			before := r.ctStats(t).Expect
			err, verbose, path := curlFTP(t, r, tools["curl"], s, m)
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, verbose)
			}
			if sum, n := fileSHA256(t, path); sum != s.sum || n != ftpFileSize {
				t.Fatalf("downloaded %d bytes, sha256 %s; want %d bytes, %s", n, sum, ftpFileSize, s.sum)
			}
			port, err := announcedPort(m, verbose)
			if err != nil {
				t.Fatalf("%v:\n%s", err, verbose)
			}
			// The data connection's original direction: from the server
			// in active mode, from the client in passive mode.
			src, dst := m.fam.client, m.fam.server
			if m.active {
				src, dst = dst, src
			}
			checkDataConn(t, r, src, dst, port)

			after := r.ctStats(t).Expect
			if c, u := after.Created-before.Created, after.Used-before.Used; c != 1 || u != 1 {
				t.Errorf("expectations: %d created, %d used by this transfer; want 1 and 1", c, u)
			}
		})
	}

	t.Run("unannounced data connections are dropped", func(t *testing.T) {
		// Listeners on both sides stand in for data ports that no PORT,
		// EPRT, 227 or 229 announced: only the router can keep a
		// connection from them.
		policyBefore := forwardPolicy(t, r)
		lnC := listenIn(t, r.client, "tcp", ":0")
		lnS := listenIn(t, r.server, "tcp", ":0")
		// The four attempts run in parallel: each waits out its timeout.
		t.Run("attempts", func(t *testing.T) {
			for _, f := range families {
				for _, c := range []struct {
					what     string
					from     netns
					to       string
					port     int
					src, dst string
				}{
					{"server to client", r.server, f.client, lnC.Addr().(*net.TCPAddr).Port, f.server, f.client},
					{"client to server", r.client, f.server, lnS.Addr().(*net.TCPAddr).Port, f.client, f.server},
				} {
					t.Run(f.name+"/"+c.what, func(t *testing.T) {
						t.Parallel()
						conn, err := dialIn(c.from, "tcp", net.JoinHostPort(c.to, strconv.Itoa(c.port)), 1500*time.Millisecond)
						if err == nil {
							conn.Close()
							t.Fatalf("connection to port %d got through the strict rule set", c.port)
						}
						if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
							t.Errorf("%v; want a timeout (dropped, not refused)", err)
						}
						recs := r.waitTrace(t, "the unannounced SYN", func(x traceRec) bool {
							return x.Proto == "tcp" && x.Src == c.src && x.Dst == c.dst && x.Dport == uint16(c.port) && x.Flags == "SYN"
						})
						for _, x := range recs {
							if x.Ct != "NEW" || x.Chain != "forward" || x.Rule != -1 || x.Verdict != "drop" {
								t.Errorf("SYN traced as ct %s, %s rule %d, verdict %q; want NEW dropped by the forward policy", x.Ct, x.Chain, x.Rule, x.Verdict)
							}
						}
					})
				}
			}
		})
		if after := forwardPolicy(t, r); after < policyBefore+4 {
			t.Errorf("forward policy counted %d packets, want at least the 4 SYNs", after-policyBefore)
		}
	})
}

// forwardPolicy returns the forward chain policy's packet counter.
func forwardPolicy(t *testing.T, r *router) uint64 {
	t.Helper()
	for _, row := range r.rules(t) {
		if row.Chain == "forward" && row.Rule == "policy" {
			return row.Packets
		}
	}
	t.Fatal("router rules: no forward policy line")
	return 0
}

// checkDataConn checks the FTP data connection src -> dst:port: one
// conntrack entry, EXPECTED, whose master is an FTP control connection
// (helper ftp, port 21, from the client); its SYN was RELATED and accepted
// by the established/related rule.
func checkDataConn(t *testing.T, r *router, src, dst string, port int) {
	t.Helper()
	all := r.entries(t, "-p", "tcp")
	var data []control.Entry
	for _, e := range all {
		if e.Orig.Src == src && e.Orig.Dst == dst && e.Orig.Dport == uint16(port) {
			data = append(data, e)
		}
	}
	if len(data) != 1 {
		t.Fatalf("conntrack has %d entries %s -> %s port %d, want the data connection:\n%s", len(data), src, dst, port, lines(all))
	}
	e := data[0]
	if !slices.Contains(e.Status, "expected") || e.Master == "" {
		t.Errorf("data connection %q: status %v, master %q; want expected with a master", e.Line, e.Status, e.Master)
	}
	// The file went from the server to the client.
	fromServer := e.Bytes[1]
	if e.Orig.Src != clientV4 && e.Orig.Src != clientV6 {
		fromServer = e.Bytes[0]
	}
	if fromServer < ftpFileSize {
		t.Errorf("data connection %q: %d bytes from the server, want >= %d", e.Line, fromServer, ftpFileSize)
	}
	var master *control.Entry
	for i := range all {
		if all[i].ID == e.Master {
			master = &all[i]
		}
	}
	switch {
	case master == nil:
		t.Errorf("data connection %q: master %s not in the table", e.Line, e.Master)
	case master.Helper != "ftp" || master.Orig.Dport != 21 || (master.Orig.Src != clientV4 && master.Orig.Src != clientV6):
		t.Errorf("data connection's master %q: helper %q, want the FTP control connection from the client to port 21", master.Line, master.Helper)
	}
	syn := r.waitTrace(t, "the data connection's SYN", func(x traceRec) bool {
		return x.Proto == "tcp" && x.Src == src && x.Dst == dst && x.Dport == uint16(port) && x.Flags == "SYN"
	})[0]
	if syn.Ct != "RELATED" || !strings.Contains(syn.Status, "expected") || syn.Chain != "forward" ||
		syn.Rule != ruleIdxEstablished || syn.Verdict != "accept" {
		t.Errorf("data connection's SYN traced as ct %s status %q, %s rule %d, verdict %q; want RELATED, expected, accepted by forward rule %d",
			syn.Ct, syn.Status, syn.Chain, syn.Rule, syn.Verdict, ruleIdxEstablished)
	}
}

func lines(es []control.Entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestFTPWithoutHelper: with no port attached to the FTP helper
// (helpers.ftp.ports = []), the strict rule set lets the control
// connection through but no data connection: active and passive transfers
// fail, no expectation is created, and the data connection's SYN meets
// the forward policy as NEW.
func TestFTPWithoutHelper(t *testing.T) {
	tools := requireE2E(t, "curl", "vsftpd")
	r := startRouter(t, routerConfig{Forward: strictRules, Trace: true})
	s := startVsftpd(t, r, tools["vsftpd"])
	for _, m := range []ftpMode{ftpModes[1], ftpModes[3]} { // EPRT, EPSV over IPv4
		t.Run(m.name, func(t *testing.T) {
			start := time.Now()
			err, verbose, path := curlFTP(t, r, tools["curl"], s, m, "--connect-timeout", "3")
			if err == nil {
				sum, _ := fileSHA256(t, path)
				t.Fatalf("curl succeeded without the FTP helper (sha256 match: %v):\n%s", sum == s.sum, verbose)
			}
			t.Logf("curl failed after %v as it should: %v", time.Since(start).Round(time.Millisecond), err)
			port, err := announcedPort(m, verbose)
			if err != nil {
				t.Fatalf("%v:\n%s", err, verbose)
			}
			src, dst := m.fam.client, m.fam.server
			if m.active {
				src, dst = dst, src
			}
			recs := r.waitTrace(t, "the data connection's SYN", func(x traceRec) bool {
				return x.Proto == "tcp" && x.Src == src && x.Dst == dst && x.Dport == uint16(port) && x.Flags == "SYN"
			})
			for _, x := range recs {
				if x.Ct != "NEW" || x.Rule != -1 || x.Verdict != "drop" {
					t.Errorf("data SYN traced as ct %s rule %d verdict %q; want NEW dropped by the policy", x.Ct, x.Rule, x.Verdict)
				}
			}
		})
	}
	st := r.ctStats(t)
	if st.Expect.Created != 0 {
		t.Errorf("%d expectations created without the helper, want 0", st.Expect.Created)
	}
	for _, e := range r.entries(t, "-p", "tcp", "--dport", "21") {
		if e.Helper != "" {
			t.Errorf("control connection %q has helper %q, want none", e.Line, e.Helper)
		}
	}
}

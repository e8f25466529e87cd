package inprocess

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ftpServer is a minimal FTP server on a netstack host: enough of RFC 959
// and RFC 2428 (USER, PASS, TYPE, PWD, PORT, EPRT, PASV, EPSV, RETR, STOR,
// QUIT) for transfers in every mode. Files live in memory. Unlike a real
// server it connects to whatever address PORT or EPRT names, so that the
// router, not the server, has to stop an FTP bounce.
type ftpServer struct {
	h    *host
	ln   listener
	addr netip.AddrPort
	// dialTimeout bounds opening a data connection (connecting in
	// active mode, waiting for the client in passive mode).
	dialTimeout time.Duration

	mu    sync.Mutex
	files map[string][]byte
	conns map[net.Conn]bool
	// log records, per data connection attempt, what the server did
	// ("dial 10.1.0.6:4000: i/o timeout", "accept ...").
	log []string

	wg sync.WaitGroup
}

// startFTPServer serves on addr until the test ends.
func startFTPServer(t testing.TB, h *host, addr netip.AddrPort) *ftpServer {
	t.Helper()
	s := &ftpServer{
		h:           h,
		ln:          listenTCP(t, h, addr),
		addr:        addr,
		dialTimeout: 2 * time.Second,
		files:       map[string][]byte{},
		conns:       map[net.Conn]bool{},
	}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.close)
	return s
}

func (s *ftpServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *ftpServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *ftpServer) put(name string, data []byte) {
	s.mu.Lock()
	s.files[name] = data
	s.mu.Unlock()
}

func (s *ftpServer) file(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.files[name]
	return b, ok
}

func (s *ftpServer) logf(format string, args ...any) {
	s.mu.Lock()
	s.log = append(s.log, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *ftpServer) logged() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// session is one control connection's state.
type session struct {
	s      *ftpServer
	c      net.Conn
	local  netip.AddrPort
	active netip.AddrPort // PORT/EPRT target, if any
	pasv   *listener      // PASV/EPSV listener, if any
}

func (s *ftpServer) serve(c net.Conn) {
	ss := &session{s: s, c: c, local: addrPortOf(c.LocalAddr())}
	defer ss.closePassive()
	r := bufio.NewReaderSize(c, 512)
	if !ss.reply("220 inprocess FTP server ready") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		var ok bool
		switch strings.ToUpper(verb) {
		case "USER":
			ok = ss.reply("331 Password required")
		case "PASS":
			ok = ss.reply("230 Logged in")
		case "TYPE":
			ok = ss.reply("200 Type set to " + arg)
		case "PWD":
			ok = ss.reply(`257 "/" is the current directory`)
		case "PORT", "EPRT":
			ap, err := parseActiveArg(strings.ToUpper(verb), arg)
			if err != nil {
				ok = ss.reply("501 " + err.Error())
				break
			}
			ss.closePassive()
			ss.active = ap
			ok = ss.reply("200 " + strings.ToUpper(verb) + " command successful")
		case "PASV":
			if !ss.local.Addr().Is4() {
				ok = ss.reply("522 Use EPSV")
				break
			}
			port, err := ss.openPassive()
			if err != nil {
				ok = ss.reply("425 " + err.Error())
				break
			}
			a := ss.local.Addr().As4()
			ok = ss.reply(fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).", a[0], a[1], a[2], a[3], port>>8, port&0xff))
		case "EPSV":
			port, err := ss.openPassive()
			if err != nil {
				ok = ss.reply("425 " + err.Error())
				break
			}
			ok = ss.reply(fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", port))
		case "RETR":
			data, found := s.file(arg)
			if !found {
				ok = ss.reply("550 No such file")
				break
			}
			dc, err := ss.openData()
			if err != nil {
				ok = ss.reply("425 Can't open data connection")
				break
			}
			ss.reply(fmt.Sprintf("150 Opening BINARY mode data connection for %s (%d bytes)", arg, len(data)))
			_, err = dc.Write(data)
			dc.Close()
			if err != nil {
				ok = ss.reply("426 Transfer aborted")
				break
			}
			ok = ss.reply("226 Transfer complete")
		case "STOR":
			dc, err := ss.openData()
			if err != nil {
				ok = ss.reply("425 Can't open data connection")
				break
			}
			ss.reply("150 Ok to send data")
			data, err := io.ReadAll(dc)
			dc.Close()
			if err != nil {
				ok = ss.reply("426 Transfer aborted")
				break
			}
			s.put(arg, data)
			ok = ss.reply("226 Transfer complete")
		case "QUIT":
			ss.reply("221 Goodbye")
			return
		default:
			ok = ss.reply("502 Command not implemented")
		}
		if !ok {
			return
		}
	}
}

// reply sends one reply line (in one write, so in one segment).
func (ss *session) reply(line string) bool {
	_, err := io.WriteString(ss.c, line+"\r\n")
	return err == nil
}

func (ss *session) openPassive() (uint16, error) {
	ss.closePassive()
	ln, err := ss.s.h.net.ListenTCPAddrPort(netip.AddrPortFrom(ss.local.Addr(), 0))
	if err != nil {
		return 0, err
	}
	l := listener{ln}
	ss.pasv = &l
	ss.active = netip.AddrPort{}
	return addrPortOf(ln.Addr()).Port(), nil
}

func (ss *session) closePassive() {
	if ss.pasv != nil {
		ss.pasv.Close()
		ss.pasv = nil
	}
}

// openData opens the data connection the last PORT/EPRT or PASV/EPSV
// set up (once).
func (ss *session) openData() (net.Conn, error) {
	s := ss.s
	if ss.pasv != nil {
		ln := ss.pasv
		ss.pasv = nil
		defer ln.Close()
		t := time.AfterFunc(s.dialTimeout, func() { ln.Close() })
		defer t.Stop()
		c, err := ln.Accept()
		if err != nil {
			s.logf("accept on %v: %v", ln.Addr(), err)
			return nil, err
		}
		s.logf("accepted %v", c.RemoteAddr())
		return c, nil
	}
	if !ss.active.IsValid() {
		return nil, errors.New("no PORT or PASV")
	}
	to := ss.active
	ss.active = netip.AddrPort{}
	ctx, cancel := context.WithTimeout(context.Background(), s.dialTimeout)
	defer cancel()
	c, err := s.h.net.DialContextTCPAddrPort(ctx, to)
	if err != nil {
		s.logf("dial %v: %v", to, err)
		return nil, err
	}
	s.logf("dialed %v", to)
	return c, nil
}

// parseActiveArg parses the argument of PORT ("h1,h2,h3,h4,p1,p2") or
// EPRT ("|1|10.1.0.5|4000|", "|2|fd01::5|4000|").
func parseActiveArg(verb, arg string) (netip.AddrPort, error) {
	if verb == "PORT" {
		f := strings.Split(arg, ",")
		if len(f) != 6 {
			return netip.AddrPort{}, errors.New("bad PORT argument")
		}
		var b [6]byte
		for i, s := range f {
			n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 8)
			if err != nil {
				return netip.AddrPort{}, errors.New("bad PORT argument")
			}
			b[i] = byte(n)
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(b[4])<<8|uint16(b[5])), nil
	}
	if len(arg) < 2 {
		return netip.AddrPort{}, errors.New("bad EPRT argument")
	}
	f := strings.Split(arg[1:], arg[:1])
	if len(f) != 4 || f[3] != "" {
		return netip.AddrPort{}, errors.New("bad EPRT argument")
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil || (f[0] == "1") != a.Is4() || (f[0] != "1" && f[0] != "2") {
		return netip.AddrPort{}, errors.New("bad EPRT address")
	}
	p, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return netip.AddrPort{}, errors.New("bad EPRT port")
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

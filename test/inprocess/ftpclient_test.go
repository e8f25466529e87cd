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
	"time"
)

// ftpClient is a minimal FTP client on a netstack host.
type ftpClient struct {
	h      *host
	c      net.Conn
	r      *bufio.Reader
	local  netip.AddrPort // the control connection's ends
	server netip.AddrPort
	// timeout bounds every wait (replies, data connections).
	timeout time.Duration
	// beforeVerb, if set, runs in transfer once the data connection is
	// announced (after the PORT/EPRT or PASV/EPSV reply), before the
	// RETR or STOR goes out.
	beforeVerb func(mode string, announced netip.AddrPort)
}

// ftpError is a reply with an unexpected code.
type ftpError struct {
	Code int
	Msg  string
}

func (e *ftpError) Error() string { return fmt.Sprintf("ftp: %d %s", e.Code, e.Msg) }

// dialFTP connects and logs in (USER, PASS, TYPE I, PWD).
func dialFTP(h *host, server netip.AddrPort) (*ftpClient, error) {
	const timeout = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := h.net.DialContextTCPAddrPort(ctx, server)
	if err != nil {
		return nil, err
	}
	fc := &ftpClient{h: h, c: c, r: bufio.NewReader(c), local: addrPortOf(c.LocalAddr()), server: server, timeout: timeout}
	if _, err := fc.expect(220); err != nil {
		c.Close()
		return nil, err
	}
	for _, step := range []struct {
		cmd  string
		want int
	}{{"USER anonymous", 331}, {"PASS guest", 230}, {"TYPE I", 200}, {"PWD", 257}} {
		if _, err := fc.cmd(step.cmd, step.want); err != nil {
			c.Close()
			return nil, err
		}
	}
	return fc, nil
}

func (fc *ftpClient) close() {
	fc.send("QUIT")
	fc.c.Close()
}

// send writes one command line in one write (so in one segment, which is
// how the router's FTP helper wants to see PORT and EPRT).
func (fc *ftpClient) send(line string) error {
	_, err := io.WriteString(fc.c, line+"\r\n")
	return err
}

// reply reads one reply (skipping the lines of a multi-line one).
func (fc *ftpClient) reply() (int, string, error) {
	fc.c.SetReadDeadline(time.Now().Add(fc.timeout))
	for {
		line, err := fc.r.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != ' ' {
			continue
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("ftp: bad reply %q", line)
		}
		return code, line[4:], nil
	}
}

func (fc *ftpClient) expect(want int) (string, error) {
	code, msg, err := fc.reply()
	if err != nil {
		return "", err
	}
	if code != want {
		return msg, &ftpError{code, msg}
	}
	return msg, nil
}

func (fc *ftpClient) cmd(line string, want int) (string, error) {
	if err := fc.send(line); err != nil {
		return "", err
	}
	return fc.expect(want)
}

// Transfer modes.
const (
	modePORT = "PORT"
	modeEPRT = "EPRT"
	modePASV = "PASV"
	modeEPSV = "EPSV"
)

// dataConn names the two ends of a data connection.
type dataConn struct {
	client, server netip.AddrPort
}

// announce is where an active-mode client listens for the data
// connection; the zero value means the control connection's own address.
type announce netip.Addr

// retr downloads name in the given mode.
func (fc *ftpClient) retr(mode, name string, at announce) ([]byte, dataConn, error) {
	var got []byte
	dc, err := fc.transfer(mode, "RETR "+name, at, func(c net.Conn) error {
		var err error
		got, err = io.ReadAll(c)
		return err
	})
	return got, dc, err
}

// stor uploads data as name in the given mode.
func (fc *ftpClient) stor(mode, name string, data []byte) (dataConn, error) {
	return fc.transfer(mode, "STOR "+name, announce{}, func(c net.Conn) error {
		if _, err := c.Write(data); err != nil {
			return err
		}
		return nil
	})
}

// transfer sets up a data connection in the given mode, sends verb, runs
// io over the data connection, closes it and waits for the 226.
func (fc *ftpClient) transfer(mode, verb string, at announce, io func(net.Conn) error) (dataConn, error) {
	var dc dataConn
	var data net.Conn
	switch mode {
	case modePASV, modeEPSV:
		want := 227
		if mode == modeEPSV {
			want = 229
		}
		msg, err := fc.cmd(mode, want)
		if err != nil {
			return dc, err
		}
		to, err := parsePassiveReply(want, msg, fc.server.Addr())
		if err != nil {
			return dc, err
		}
		if fc.beforeVerb != nil {
			fc.beforeVerb(mode, to)
		}
		ctx, cancel := context.WithTimeout(context.Background(), fc.timeout)
		data, err = fc.h.net.DialContextTCPAddrPort(ctx, to)
		cancel()
		if err != nil {
			return dc, fmt.Errorf("data connection to %v: %w", to, err)
		}
		if err := fc.send(verb); err != nil {
			data.Close()
			return dc, err
		}
		if _, err := fc.expect(150); err != nil {
			data.Close()
			return dc, err
		}
	case modePORT, modeEPRT:
		addr := netip.Addr(at)
		if !addr.IsValid() {
			addr = fc.local.Addr()
		}
		ln := listenTCPOn(fc.h, netip.AddrPortFrom(addr, 0))
		if ln.err != nil {
			return dc, ln.err
		}
		defer ln.Close()
		port := addrPortOf(ln.Addr()).Port()
		var line string
		if mode == modePORT {
			a := addr.As4()
			line = fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], port>>8, port&0xff)
		} else {
			af := 2
			if addr.Is4() {
				af = 1
			}
			line = fmt.Sprintf("EPRT |%d|%s|%d|", af, addr, port)
		}
		if _, err := fc.cmd(line, 200); err != nil {
			return dc, err
		}
		if fc.beforeVerb != nil {
			fc.beforeVerb(mode, netip.AddrPortFrom(addr, port))
		}
		if err := fc.send(verb); err != nil {
			return dc, err
		}
		if _, err := fc.expect(150); err != nil {
			return dc, err
		}
		t := time.AfterFunc(fc.timeout, func() { ln.Close() })
		c, err := ln.Accept()
		t.Stop()
		if err != nil {
			return dc, fmt.Errorf("accepting the data connection: %w", err)
		}
		data = c
	default:
		return dc, errors.New("unknown mode " + mode)
	}
	dc = dataConn{client: addrPortOf(data.LocalAddr()), server: addrPortOf(data.RemoteAddr())}
	data.SetDeadline(time.Now().Add(fc.timeout))
	err := io(data)
	data.Close()
	if err != nil {
		return dc, err
	}
	_, err = fc.expect(226)
	return dc, err
}

// listenResult is a listener or the error from creating it.
type listenResult struct {
	listener
	err error
}

func listenTCPOn(h *host, addr netip.AddrPort) listenResult {
	ln, err := h.net.ListenTCPAddrPort(addr)
	if err != nil {
		return listenResult{err: err}
	}
	return listenResult{listener: listener{ln}}
}

// parsePassiveReply extracts the data address from a 227 or 229 reply
// text; a 229 names only the port (the address is the control
// connection's server).
func parsePassiveReply(code int, msg string, server netip.Addr) (netip.AddrPort, error) {
	open, close := strings.IndexByte(msg, '('), strings.LastIndexByte(msg, ')')
	if open < 0 || close < open {
		return netip.AddrPort{}, fmt.Errorf("ftp: no address in %d %q", code, msg)
	}
	inner := msg[open+1 : close]
	if code == 229 {
		f := strings.Split(inner, "|")
		if len(f) != 5 {
			return netip.AddrPort{}, fmt.Errorf("ftp: bad 229 %q", msg)
		}
		p, err := strconv.ParseUint(f[3], 10, 16)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("ftp: bad 229 port %q", msg)
		}
		return netip.AddrPortFrom(server, uint16(p)), nil
	}
	return parseActiveArg("PORT", inner)
}

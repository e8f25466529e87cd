//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// stream is a TCP connection from the LAN host to a server on the
// Internet side that sends pseudo-random data until stopped, at a steady
// pace or as fast as it can; both ends hash what they moved.
type stream struct {
	conn  net.Conn // the client's end
	srv   net.Conn // the server's end
	pace  time.Duration
	stopc chan struct{}
	sent  chan streamEnd
	recv  chan streamEnd

	once             sync.Once
	sentEnd, recvEnd streamEnd
}

type streamEnd struct {
	n   int64
	sum string
	err error
}

// Stream paces.
const (
	steady = 5 * time.Millisecond // 32 KiB every 5 ms: about 6.5 MB/s
	flat   = 0                    // as fast as the path allows
)

// startStream opens the stream; it sends 32 KiB chunks, one every pace
// (or back to back with flat), until stop.
func startStream(t *testing.T, r *router, pace time.Duration) *stream {
	t.Helper()
	ln := listenIn(t, r.server, "tcp", ":0")
	s := &stream{pace: pace, stopc: make(chan struct{}), sent: make(chan streamEnd, 1), recv: make(chan streamEnd, 1)}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	c, err := dialIn(r.client, "tcp", net.JoinHostPort(serverV4, port), 3*time.Second)
	if err != nil {
		ln.Close() // ends the Accept
		t.Fatalf("stream: %v", err)
	}
	var ok bool
	select {
	case s.srv, ok = <-accepted:
	case <-time.After(3 * time.Second):
	}
	if !ok {
		c.Close()
		ln.Close()
		t.Fatal("stream: the server accepted no connection")
	}
	s.conn = c
	go s.send()
	go func() {
		h := sha256.New()
		c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		n, err := io.Copy(h, c)
		s.recv <- streamEnd{n: n, sum: hex.EncodeToString(h.Sum(nil)), err: err}
	}()
	t.Cleanup(func() { s.abort(); s.stop() })
	return s
}

func (s *stream) send() {
	defer s.srv.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'e', '2', 'e'})
	buf := make([]byte, 32<<10)
	var n int64
	var tick <-chan time.Time
	if s.pace > 0 {
		tk := time.NewTicker(s.pace)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		if tick != nil {
			select {
			case <-s.stopc:
				s.sent <- streamEnd{n: n, sum: hex.EncodeToString(h.Sum(nil))}
				return
			case <-tick:
			}
		} else {
			select {
			case <-s.stopc:
				s.sent <- streamEnd{n: n, sum: hex.EncodeToString(h.Sum(nil))}
				return
			default:
			}
		}
		rng.Read(buf)
		s.srv.SetWriteDeadline(time.Now().Add(5 * time.Second))
		m, err := s.srv.Write(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err != nil {
			s.sent <- streamEnd{n: n, err: err}
			return
		}
	}
}

// stop ends the stream (the sender closes its end) and returns both ends'
// results, the same ones on every call.
func (s *stream) stop() (sent, recv streamEnd) {
	s.once.Do(func() {
		close(s.stopc)
		select {
		case s.sentEnd = <-s.sent:
		case <-time.After(10 * time.Second):
			s.sentEnd.err = errors.New("sender did not finish within 10 s")
		}
		select {
		case s.recvEnd = <-s.recv:
		case <-time.After(10 * time.Second):
			s.recvEnd.err = errors.New("receiver did not see the end within 10 s")
		}
	})
	return s.sentEnd, s.recvEnd
}

// abort makes both ends give up at once (their blocked writes and reads
// fail); stop then returns promptly.
func (s *stream) abort() {
	now := time.Now()
	s.srv.SetDeadline(now)
	s.conn.SetDeadline(now)
}

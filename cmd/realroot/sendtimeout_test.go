package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// sendTimeoutPair is a loopback connection: the server's end through a
// sendTimeoutListener with timeout d, both ends with small socket buffers so
// that a client that stops reading blocks the server's writes at once.
func sendTimeoutPair(t *testing.T, d time.Duration) (server *sendTimeoutConn, client *net.TCPConn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ln := &sendTimeoutListener{Listener: inner, timeout: d, log: zap.NewNop()}
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		return serr
	}}
	c, err := dialer.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server = s.(*sendTimeoutConn)
	server.Conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	t.Cleanup(func() { server.Close(); c.Close() })
	return server, c.(*net.TCPConn)
}

// TestSendTimeoutStalledClient: a client that takes nothing more fails the
// server's write after the timeout, however the bytes are sent.
func TestSendTimeoutStalledClient(t *testing.T) {
	const d = 400 * time.Millisecond
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		send func(c *sendTimeoutConn) error
	}{
		{"write", func(c *sendTimeoutConn) error {
			b := make([]byte, 64<<10)
			for range 128 {
				if _, err := c.Write(b); err != nil {
					return err
				}
			}
			return nil
		}},
		{"sendfile", func(c *sendTimeoutConn) error { return sendFile(c, big, 8<<20) }},
		{"reader", func(c *sendTimeoutConn) error {
			_, err := c.ReadFrom(bytes.NewReader(make([]byte, 8<<20)))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := sendTimeoutPair(t, d)
			start := time.Now()
			err := tc.send(s)
			took := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("sending 8 MiB to a client that reads nothing: %v after %v; want a deadline error", err, took)
			}
			if took < d*7/8 || took > 10*time.Second {
				t.Errorf("gave up after %v; want about the %v timeout", took, d)
			}
		})
	}
}

// TestSendTimeoutSlowClient: a client that keeps reading, slowly, gets a
// whole transfer that lasts several times the timeout: the deadline moves
// with each write and each sendfile chunk, not once per response.
func TestSendTimeoutSlowClient(t *testing.T) {
	const d = 500 * time.Millisecond
	const size = 8 << 20 // at most 16 KiB per 5 ms: 2.5 s at least
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		send func(c *sendTimeoutConn) error
	}{
		{"write", func(c *sendTimeoutConn) error {
			for b := data; len(b) > 0; b = b[32<<10:] {
				if _, err := c.Write(b[:32<<10]); err != nil {
					return err
				}
			}
			return nil
		}},
		{"sendfile limited", func(c *sendTimeoutConn) error { return sendFile(c, path, size) }},
		{"sendfile", func(c *sendTimeoutConn) error { return sendFile(c, path, -1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := sendTimeoutPair(t, d)
			got := make(chan []byte, 1)
			go func() {
				var all []byte
				buf := make([]byte, 16<<10)
				for {
					n, err := c.Read(buf)
					all = append(all, buf[:n]...)
					if err != nil {
						got <- all
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			start := time.Now()
			err := tc.send(s)
			s.CloseWrite()
			if err != nil {
				t.Fatalf("sending %d bytes to a slow client, after %v: %v", size, time.Since(start), err)
			}
			all := <-got
			t.Logf("%d bytes in %v, timeout %v", len(all), time.Since(start).Round(time.Millisecond), d)
			if !bytes.Equal(all, data) {
				t.Fatalf("the client got %d bytes, not the %d sent", len(all), size)
			}
		})
	}
}

// sendFile sends the file at path through c's ReadFrom: under an
// io.LimitedReader of n bytes, or alone for n < 0.
func sendFile(c *sendTimeoutConn, path string, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if n < 0 {
		_, err = c.ReadFrom(f)
		return err
	}
	lr := &io.LimitedReader{R: f, N: n}
	m, err := c.ReadFrom(lr)
	if err == nil && (m != n || lr.N != 0) {
		err = fmt.Errorf("sent %d of %d bytes, %d left to the reader", m, n, lr.N)
	}
	return err
}

// TestSendTimeoutExplicitDeadline: a deadline set on the connection (a
// handler's http.ResponseController, the TLS handshake) rules until it is
// cleared; then the send timeout is back.
func TestSendTimeoutExplicitDeadline(t *testing.T) {
	s, _ := sendTimeoutPair(t, time.Minute)
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := s.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past a deadline set on the connection: %v; want a deadline error", err)
	}
	s.SetDeadline(time.Time{})
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatalf("write after the deadline was cleared: %v", err)
	}
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	s.SetWriteDeadline(time.Time{})
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatalf("write after the write deadline was cleared: %v", err)
	}
}

package h1

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
)

// FuzzServe feeds arbitrary bytes to a connection, then half-closes it:
// the server must neither panic nor hang (it closes within the deadline).
func FuzzServe(f *testing.F) {
	for _, r := range diffRequests {
		f.Add([]byte(r))
	}
	for _, r := range badRequests {
		f.Add([]byte(r.give))
	}
	f.Add([]byte("POST /?read=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"))
	f.Add([]byte("GET /?flush=1&n=500&body=abcdefgh HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n"))
	// The handler panics on some inputs (WriteHeader(3), as net/http's
	// does): the server logs it, but not through f, which must not log
	// from inside the fuzz function.
	f.Add([]byte("T /?status=03&h=Link.</a> HTTP/1.1\r\nHost: a\r\n\r\n"))
	addr, _ := startH1(f, diffHandler, func(s *Server) {
		s.ReadHeaderTimeout = time.Second
		s.MaxHeaderBytes = 4 << 10
		s.ErrorLog = zap.NewNop()
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("server still open 5s after the client's end: %q", in)
			}
		}
	})
}

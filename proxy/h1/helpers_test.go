package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startH1 serves h with an h1.Server on 127.0.0.1; cleanup shuts it down.
func startH1(t testing.TB, h http.Handler, opt ...func(*Server)) (string, *Server) {
	t.Helper()
	s := &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: zaptest.NewLogger(t)}
	for _, o := range opt {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v; want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), s
}

// startStd serves h with net/http's server, for comparisons.
func startStd(t testing.TB, h http.Handler) string {
	t.Helper()
	return startStdRHT(t, h, 5*time.Second)
}

// startStdRHT is startStd with the given ReadHeaderTimeout.
func startStdRHT(t testing.TB, h http.Handler, rht time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup // net/http's conn goroutines, for goleak
	s := &http.Server{Handler: h, ReadHeaderTimeout: rht, MaxHeaderBytes: 64 << 10,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		}}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		s.Close()
		<-done
		conns.Wait()
	})
	return ln.Addr().String()
}

// client is a raw connection to a server.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// response reads one response and its whole body.
func (c *client) response(method string) (*http.Response, string) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return res, string(b)
}

// rest reads what is left until the server closes (or an error).
func (c *client) rest() (string, error) {
	b, err := io.ReadAll(c.br)
	return string(b), err
}

// closed reports whether the server closed the connection (EOF or reset
// with nothing more to read) within d.
func (c *client) closed(d time.Duration) bool {
	c.c.SetReadDeadline(time.Now().Add(d))
	defer c.c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := c.br.ReadByte()
	_ = b
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// rawRoundTrip sends raw and returns everything the server sends until it
// closes.
func rawRoundTrip(t testing.TB, addr, raw string) string {
	t.Helper()
	c := dial(t, addr)
	c.send(raw)
	s, _ := c.rest()
	return s
}

func get(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
}

func statusLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

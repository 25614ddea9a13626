package h1

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestAbortHandlerBreaksConnection(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "more, never flushed")
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), func(s *Server) { s.ErrorLog = zap.New(core) })
	for _, path := range []string{"/abort", "/boom"} {
		c := dial(t, addr)
		c.send(get("a", path))
		raw, _ := c.rest() // a reset may end it with an error: what counts is what came
		if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(raw, "\r\n\r\n7\r\npartial\r\n") {
			t.Errorf("%s: got %q; want the flushed part and no terminating chunk", path, raw)
		}
		// And net/http's client reports an error, never a clean end.
		res, err := http.Get("http://" + addr + path)
		if err == nil {
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		if err == nil {
			t.Errorf("%s: net/http client read the response without error", path)
		}
	}
	if n := logs.FilterMessage("handler panic").Len(); n != 2 {
		t.Errorf("got %d panic logs; want 2 (for /boom, none for ErrAbortHandler)", n)
	}
	if e := logs.FilterMessage("handler panic").All(); len(e) > 0 && !strings.Contains(e[0].ContextMap()["stack"].(string), "abort_test.go") {
		t.Errorf("panic log has no stack: %v", e[0].ContextMap())
	}
}

// readFromConn counts the ReadFrom calls of the server's connections that
// sendfile(2) can serve: a file (syscall.Conn), alone or under one
// *io.LimitedReader, as net.TCPConn.ReadFrom wants it.
type readFromConn struct {
	*net.TCPConn
	n *atomic.Int64
}

func (c readFromConn) ReadFrom(r io.Reader) (int64, error) {
	f := r
	if lr, ok := r.(*io.LimitedReader); ok {
		f = lr.R
	}
	if _, ok := f.(syscall.Conn); ok {
		c.n.Add(1)
	}
	return c.TCPConn.ReadFrom(r)
}

type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return readFromConn{c.(*net.TCPConn), &l.n}, nil
}

func TestReadFromFile(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20+123)
	rand.Read(data)
	for name, size := range map[string]int{"big": len(data), "small": 1000} {
		os.WriteFile(filepath.Join(dir, name), data[:size], 0o644)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(filepath.Join(dir, r.URL.Path[1:]))
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if r.URL.Query().Has("copy") { // io.Copy with a bare *os.File
			fi, _ := f.Stat()
			n := fi.Size()
			if r.URL.Query().Has("short") { // a declared length short of the file
				n -= 100
			}
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			if _, err := io.Copy(w, f); (err == http.ErrContentLength) != (n < fi.Size()) {
				t.Errorf("%s: io.Copy: %v", r.URL, err)
			}
			return
		}
		http.ServeContent(w, r, "", time.Time{}, f) // io.CopyN: an *io.LimitedReader
	})}
	done := make(chan error)
	go func() { done <- s.Serve(cl) }()
	defer func() { s.Close(); <-done }()

	c := dial(t, ln.Addr().String())
	for _, tt := range []struct {
		path      string
		size      int
		sendfiles int64
	}{
		{"/big", len(data), 1},
		{"/big?copy", len(data), 1},
		{"/small", 1000, 0}, // held whole: one write
	} {
		before := cl.n.Load()
		c.send(get("a", tt.path))
		res, body := c.response("GET")
		if res.StatusCode != 200 || !bytes.Equal([]byte(body), data[:tt.size]) {
			t.Errorf("%s: got %d, %d bytes; want 200 and the file's %d bytes", tt.path, res.StatusCode, len(body), tt.size)
		}
		if n := cl.n.Load() - before; n != tt.sendfiles {
			t.Errorf("%s: got %d conn ReadFrom calls; want %d", tt.path, n, tt.sendfiles)
		}
	}
	// HEAD: the header only.
	c.send("HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, body := c.response("HEAD"); res.ContentLength != int64(len(data)) || body != "" {
		t.Errorf("HEAD: got Content-Length %d, body %d bytes; want %d, 0", res.ContentLength, len(body), len(data))
	}
	c.send(get("a", "/small"))
	if res, _ := c.response("GET"); res.StatusCode != 200 {
		t.Errorf("after HEAD: got %d; want 200", res.StatusCode)
	}

	// Past the declared length: sendfile still, for the declared bytes
	// only, then the connection closes (see TestKnownDifferences).
	before := cl.n.Load()
	c.send(get("a", "/big?copy&short"))
	res, body := c.response("GET")
	rest, _ := c.rest()
	if want := len(data) - 100; res.ContentLength != int64(want) || body != string(data[:want]) || rest != "" {
		t.Errorf("short: got Content-Length %d, %d bytes, then %d; want %d, the file's first %[4]d, nothing", res.ContentLength, len(body), len(rest), want)
	}
	if n := cl.n.Load() - before; n != 1 {
		t.Errorf("short: got %d sendfile-able ReadFrom calls; want 1", n)
	}
}

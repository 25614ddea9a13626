package fcgi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// listenUnix listens on a unix socket in a short temp dir (socket paths are
// limited to ~108 bytes, t.TempDir() can be longer).
func listenUnix(t testing.TB) (net.Listener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "rr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return ln, path
}

// fakeConn is the server side of one connection to a fake application.
type fakeConn struct {
	net.Conn
	r    *bufio.Reader
	done <-chan struct{} // closed at test cleanup
}

// startFake serves each connection with handle, on a unix socket, and
// returns a Client for it. Connections are closed when handle returns, and
// at cleanup, which waits for every handler.
func startFake(t testing.TB, handle func(c *fakeConn)) *Client {
	t.Helper()
	ln, path := listenUnix(t)
	done := make(chan struct{})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = true
			mu.Unlock()
			wg.Go(func() {
				defer conn.Close()
				handle(&fakeConn{Conn: conn, r: bufio.NewReader(conn), done: done})
			})
		}
	})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return closeAtCleanup(t, &Client{Network: "unix", Address: path})
}

// closeAtCleanup closes c before the server's cleanup (cleanups run last
// first), so that no kept connection outlives the test.
func closeAtCleanup(t testing.TB, c *Client) *Client {
	t.Cleanup(func() { c.Close() })
	return c
}

// startStdlib serves h with net/http/fcgi, a well-behaved responder.
func startStdlib(t testing.TB, h http.Handler) *Client {
	t.Helper()
	ln, path := listenUnix(t)
	var wg sync.WaitGroup
	wg.Go(func() { fcgi.Serve(ln, h) })
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return closeAtCleanup(t, &Client{Network: "unix", Address: path})
}

type record struct {
	typ     byte
	id      uint16
	content []byte
}

func readRecord(r io.Reader) (record, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return record{}, err
	}
	if h[0] != version1 {
		return record{}, fmt.Errorf("version %d", h[0])
	}
	n := int(binary.BigEndian.Uint16(h[4:]))
	b := make([]byte, n+int(h[6]))
	if _, err := io.ReadFull(r, b); err != nil {
		return record{}, err
	}
	return record{typ: h[1], id: binary.BigEndian.Uint16(h[2:]), content: b[:n]}, nil
}

// parsePairs decodes a name-value pair stream.
func parsePairs(b []byte) (map[string]string, error) {
	m := map[string]string{}
	readLen := func() (int, error) {
		if len(b) == 0 {
			return 0, errors.New("short pair")
		}
		if b[0] < 128 {
			n := int(b[0])
			b = b[1:]
			return n, nil
		}
		if len(b) < 4 {
			return 0, errors.New("short length")
		}
		n := int(binary.BigEndian.Uint32(b) &^ (1 << 31))
		b = b[4:]
		return n, nil
	}
	for len(b) > 0 {
		nl, err := readLen()
		if err != nil {
			return nil, err
		}
		vl, err := readLen()
		if err != nil {
			return nil, err
		}
		if nl+vl > len(b) {
			return nil, errors.New("short pair")
		}
		m[string(b[:nl])] = string(b[nl : nl+vl])
		b = b[nl+vl:]
	}
	return m, nil
}

// fakeRequest is what a fake application received.
type fakeRequest struct {
	role, flags byte
	params      map[string]string
}

// readHead reads FCGI_BEGIN_REQUEST and the FCGI_PARAMS stream.
func (c *fakeConn) readHead() (fakeRequest, error) {
	var req fakeRequest
	rec, err := readRecord(c.r)
	if err != nil {
		return req, err
	}
	if rec.typ != typeBeginRequest || len(rec.content) != 8 {
		return req, fmt.Errorf("first record type %d", rec.typ)
	}
	req.role, req.flags = rec.content[1], rec.content[2]
	var raw []byte
	for {
		rec, err := readRecord(c.r)
		if err != nil {
			return req, err
		}
		if rec.typ != typeParams {
			return req, fmt.Errorf("record type %d in params", rec.typ)
		}
		if len(rec.content) == 0 {
			break
		}
		raw = append(raw, rec.content...)
	}
	req.params, err = parsePairs(raw)
	return req, err
}

// readStdin copies the FCGI_STDIN stream to w, up to its empty record.
func (c *fakeConn) readStdin(w io.Writer) error {
	for {
		rec, err := readRecord(c.r)
		if err != nil {
			return err
		}
		if rec.typ != typeStdin {
			return fmt.Errorf("record type %d in stdin", rec.typ)
		}
		if len(rec.content) == 0 {
			return nil
		}
		w.Write(rec.content)
	}
}

// readRequest reads a whole request, discarding stdin.
func (c *fakeConn) readRequest() (fakeRequest, error) {
	req, err := c.readHead()
	if err != nil {
		return req, err
	}
	return req, c.readStdin(io.Discard)
}

// appendStream appends s as records of type typ, each at most chunk bytes.
func appendStream(b []byte, typ byte, s string, chunk int) []byte {
	for len(s) > 0 {
		n := min(len(s), chunk, maxContent)
		b = appendHeader(b, typ, requestID, n, 0)
		b = append(b, s[:n]...)
		s = s[n:]
	}
	return b
}

func appendEnd(b []byte, appStatus uint32, protocolStatus byte) []byte {
	b = appendHeader(b, typeEndRequest, requestID, 8, 0)
	b = binary.BigEndian.AppendUint32(b, appStatus)
	return append(b, protocolStatus, 0, 0, 0)
}

// respond reads a request and answers with stdout in records of chunk
// bytes, then FCGI_END_REQUEST(0, complete).
func respond(stdout string, chunk int) func(c *fakeConn) {
	return func(c *fakeConn) {
		if _, err := c.readRequest(); err != nil {
			return
		}
		b := appendStream(nil, typeStdout, stdout, chunk)
		c.Write(appendEnd(b, 0, statusRequestComplete))
	}
}

// closeTracker records whether Close was called.
type closeTracker struct {
	io.Reader
	mu     sync.Mutex
	closed bool
}

func (c *closeTracker) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *closeTracker) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

package proxy

// The raw FastCGI backends, the sites and the leak check of the fault tests
// (fault_test.go, fault_php_test.go).

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/proxy/fcgi"
)

// verifyNoLeaks fails the test if goroutines it started outlive it. Call it
// first: its cleanup then runs last, after the servers' and clients'.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// FastCGI record types and END_REQUEST statuses, for writing raw answers.
const (
	recStdin      = 5
	recStdout     = 6
	recStderr     = 7
	recEnd        = 3
	recUnknown    = 11
	endComplete   = 0
	endCantMpx    = 1
	endOverloaded = 2
	endUnknownRol = 3
)

// record returns one FastCGI record for request 1.
func record(typ byte, content []byte, pad int) []byte {
	b := make([]byte, 8, 8+len(content)+pad)
	b[0], b[1] = 1, typ
	binary.BigEndian.PutUint16(b[2:], 1)
	binary.BigEndian.PutUint16(b[4:], uint16(len(content)))
	b[6] = byte(pad)
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// stream returns s as records of type typ, each at most 65535 bytes.
func stream(typ byte, s string) []byte {
	var b []byte
	for len(s) > 0 {
		n := min(len(s), 65535)
		b = append(b, record(typ, []byte(s[:n]), 0)...)
		s = s[n:]
	}
	return b
}

// endRequest returns FCGI_END_REQUEST with app status 0.
func endRequest(status byte) []byte {
	return record(recEnd, []byte{0, 0, 0, 0, status, 0, 0, 0}, 0)
}

// rawFCGI is a FastCGI backend on a unix socket whose answers the test
// writes byte by byte: records of any kind, garbage, or nothing at all.
type rawFCGI struct {
	socket   string
	requests atomic.Int64  // requests read whole
	letGo    atomic.Int64  // connections the client closed while the answer waited
	stop     chan struct{} // closed at cleanup: answers that wait must return
}

// startRawFCGI serves each connection once: it reads a whole request (unless
// read is false), then calls answer, then closes the connection.
func startRawFCGI(t *testing.T, read bool, answer func(b *rawFCGI, conn net.Conn)) *rawFCGI {
	t.Helper()
	dir, err := os.MkdirTemp("", "rrfault")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawFCGI{socket: filepath.Join(dir, "s"), stop: make(chan struct{})}
	ln, err := net.Listen("unix", b.socket)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				if read {
					if err := readRawRequest(bufio.NewReader(conn)); err != nil {
						return
					}
					b.requests.Add(1)
				}
				answer(b, conn)
			})
		}
	})
	t.Cleanup(func() {
		close(b.stop)
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return b
}

// waitLetGo blocks until the client closes conn (or cleanup), and counts it.
func (b *rawFCGI) waitLetGo(conn net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.Copy(io.Discard, conn); err == nil {
			b.letGo.Add(1) // EOF: the client closed its end
		}
	}()
	select {
	case <-done:
	case <-b.stop:
		conn.Close()
		<-done
	}
}

// readRawRequest reads records up to the empty FCGI_STDIN one.
func readRawRequest(r *bufio.Reader) error {
	var h [8]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint16(h[4:])) + int(h[6])
		if _, err := r.Discard(n); err != nil {
			return err
		}
		if h[1] == recStdin && binary.BigEndian.Uint16(h[4:]) == 0 {
			return nil
		}
	}
}

// faultSite is realroot's handler in front of a backend, with its log.
type faultSite struct {
	url    string
	client *fcgi.Client
	http   *http.Client
	logs   *observer.ObservedLogs
}

// newFaultSite serves a release with index.php and post.php through the
// FastCGI backend at socket. tune adjusts the client before use.
func newFaultSite(t *testing.T, socket string, opts Options, tune func(c *fcgi.Client)) *faultSite {
	t.Helper()
	dir := newDeploy(t, map[string]string{"index.php": "<?php", "post.php": "<?php"}, "A")
	core, logs := observer.New(zap.DebugLevel)
	opts.Logger = zap.New(core)
	c := &fcgi.Client{Network: "unix", Address: socket, ReadTimeout: 10 * time.Second}
	if tune != nil {
		tune(c)
	}
	ts := newTestServer(t, New(newReleases(t, filepath.Join(dir, "current")), c, opts))
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		hc.CloseIdleConnections()
		ts.Close()
		c.Close()
	})
	return &faultSite{url: ts.URL, client: c, http: hc, logs: logs}
}

// get fetches path. An error means the connection was aborted: before the
// status line (a compressed response holds its first bytes) or mid-body.
func (s *faultSite) get(path string) (int, string, error) {
	resp, err := s.http.Get(s.url + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// failure returns the fields of the single "request failed" log line.
func (s *faultSite) failure(t *testing.T) map[string]any {
	t.Helper()
	lines := s.logs.FilterMessage("request failed").All()
	if len(lines) != 1 {
		t.Fatalf("%d request failed log lines; want 1: %v", len(lines), s.logs.All())
	}
	return lines[0].ContextMap()
}

// waitClosed waits until the client holds no connection to the backend.
func (s *faultSite) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.client.Stats()
		if st.Open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("FastCGI connections still open: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

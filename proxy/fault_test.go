package proxy

// Hostile backends and faults, at the HTTP level: what a client of realroot
// sees, what is logged, and what is left of the FastCGI connection, when
// php-fpm (or something posing as it) misbehaves. proxy/fcgi/fault_test.go
// covers the same faults at the transport level; docs/reliability.md maps
// every case to its test.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/internal/phpfpmtest"
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
	ts := httptest.NewServer(New(newReleases(t, filepath.Join(dir, "current")), c, opts))
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

// TestHostileBackend: whatever a backend answers that is not a valid
// FastCGI response, the client gets a clean error status with realroot's
// short text (never the backend's bytes), one log line says why, and the
// connection is closed, not pooled.
func TestHostileBackend(t *testing.T) {
	verifyNoLeaks(t)
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(i*131 + 7)
	}
	noise[0] = 0x7f // not version 1
	bigHeader := func() []byte {
		var b []byte
		chunk := bytes.Repeat([]byte("a"), 65535)
		for range 32 { // 2 MiB without a newline, in full records with full padding
			b = append(b, record(recStdout, chunk, 255)...)
		}
		return b
	}()
	tests := []struct {
		name       string
		give       []byte
		wantStatus int
	}{
		{"an HTTP response", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), 502},
		{"noise", noise, 502},
		{"record version 2", append([]byte{2}, record(recStdout, []byte("A: b\r\n\r\nx"), 0)[1:]...), 502},
		{"unknown record type", record(recUnknown, make([]byte, 8), 0), 502},
		{"FCGI_STDIN from the backend", record(recStdin, nil, 0), 502},
		{"another request id", []byte{1, recStdout, 0, 2, 0, 0, 0, 0}, 502},
		{"short FCGI_END_REQUEST", record(recEnd, []byte{0, 0, 0, 0}, 0), 502},
		{"header block over 1 MiB in full records", bigHeader, 502},
		{"HTML instead of a header", append(stream(recStdout, "<html><body>hi\r\n\r\n"), endRequest(endComplete)...), 502},
		{"bad Status", append(stream(recStdout, "Status: 20x\r\n\r\n"), endRequest(endComplete)...), 502},
		{"FCGI_OVERLOADED", endRequest(endOverloaded), 503},
		{"FCGI_CANT_MPX_CONN", endRequest(endCantMpx), 503},
		{"FCGI_OVERLOADED after some stdout", append(stream(recStdout, "X-A: b\r\n"), endRequest(endOverloaded)...), 503},
		{"FCGI_UNKNOWN_ROLE", endRequest(endUnknownRol), 502},
		{"closes without a byte", nil, 502},
		{"closes mid record header", []byte{1, 6, 0}, 502},
		{"closes mid header block", stream(recStdout, "Content-Type: text/html\r\n"), 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) { conn.Write(tt.give) })
			s := newFaultSite(t, b.socket, Options{}, nil)
			resp, err := s.http.Get(s.url + "/index.php")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tt.wantStatus || string(body) != http.StatusText(tt.wantStatus)+"\n" {
				t.Fatalf("got %d %q, %v; want %d with realroot's text", resp.StatusCode, body, err, tt.wantStatus)
			}
			if ra := resp.Header.Get("Retry-After"); (tt.wantStatus == 503) != (ra != "") {
				t.Errorf("Retry-After %q with status %d", ra, resp.StatusCode)
			}
			if f := s.failure(t); f["status"] != int64(tt.wantStatus) || f["error"] == nil {
				t.Errorf("log line %v; want status %d and the error", f, tt.wantStatus)
			}
			s.waitClosed(t)
		})
	}
}

// TestBackendMaxRecords: a response in records of the largest size, with
// the largest padding and stderr records in between, streams whole.
func TestBackendMaxRecords(t *testing.T) {
	verifyNoLeaks(t)
	const n = 128 // 8 MiB of body
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 65536/16)[:65535]
	want := sha256.New()
	b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) {
		w := bufio.NewWriterSize(conn, 1<<20)
		w.Write(stream(recStdout, "Content-Type: application/octet-stream\r\n\r\n"))
		rec := record(recStdout, chunk, 255)
		for range n {
			w.Write(rec)
			w.Write(record(recStderr, []byte("PHP Notice: x\n"), 2))
		}
		w.Write(endRequest(endComplete))
		w.Flush()
		b.waitLetGo(conn)
	})
	for range n {
		want.Write(chunk)
	}
	s := newFaultSite(t, b.socket, Options{}, nil)
	resp, err := s.http.Get(s.url + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	size, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || size != n*65535 || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("got %d, %d bytes, %v; want 200 and %d exact bytes", resp.StatusCode, size, err, n*65535)
	}
	if st := s.client.Stats(); st.Idle != 1 || st.InUse != 0 {
		t.Errorf("after a clean response: %+v; want the connection kept", st)
	}
}

// TestBackendReadTimeout: a backend that stops sending gets ReadTimeout:
// a 504 when nothing was sent to the client yet, an aborted connection
// (never a clean end) once the status went out; either way the FastCGI
// connection is closed, and the backend sees it closed.
func TestBackendReadTimeout(t *testing.T) {
	verifyNoLeaks(t)
	for _, tt := range []struct {
		name string
		give []byte
	}{
		{"silent", nil},
		{"stalls in the header block", stream(recStdout, "Content-Type: text/plain\r\n")},
		{"stalls mid-body", stream(recStdout, "Content-Type: text/plain\r\n\r\nfirst part, ")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) {
				conn.Write(tt.give)
				b.waitLetGo(conn)
			})
			s := newFaultSite(t, b.socket, Options{}, func(c *fcgi.Client) { c.ReadTimeout = 300 * time.Millisecond })
			start := time.Now()
			status, body, err := s.get("/index.php")
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v; want about the 300ms ReadTimeout", d)
			}
			if strings.Contains(tt.name, "mid-body") {
				if err == nil {
					t.Errorf("got a clean %d %q; want the connection aborted", status, body)
				}
			} else if status != http.StatusGatewayTimeout {
				t.Errorf("got %d %q, %v; want 504", status, body, err)
			}
			if f := s.failure(t); f["status"] != int64(http.StatusGatewayTimeout) {
				t.Errorf("log line %v; want status 504", f)
			}
			s.waitClosed(t)
			waitFor(t, "the backend to see its connection closed", func() bool { return b.letGo.Load() == 1 })
		})
	}
}

// TestBackendCutMidBody: php-fpm dying mid-body (the connection ends before
// FCGI_END_REQUEST) aborts the client's connection, with or without a
// Content-Length from PHP, and logs a 502: never a clean 200.
func TestBackendCutMidBody(t *testing.T) {
	verifyNoLeaks(t)
	for _, header := range []string{"Content-Length: 100\r\n", ""} {
		t.Run(fmt.Sprintf("content-length %v", header != ""), func(t *testing.T) {
			b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) {
				conn.Write(stream(recStdout, "Content-Type: text/plain\r\n"+header+"\r\n0123456789"))
			})
			s := newFaultSite(t, b.socket, Options{}, nil)
			if status, body, err := s.get("/index.php"); err == nil {
				t.Errorf("got a clean %d %q; want the connection aborted", status, body)
			}
			if f := s.failure(t); f["status"] != int64(http.StatusBadGateway) || f["reason"] != "php-fpm response truncated" {
				t.Errorf("log line %v; want a 502 for a truncated response", f)
			}
			s.waitClosed(t)
		})
	}
}

// TestBackendStderrFlood: 64 MiB of FCGI_STDERR before the answer: the
// answer arrives, memory stays bounded (what is kept of stderr is 64 KiB),
// and one log line holds the first 64 KiB and counts the rest as dropped.
func TestBackendStderrFlood(t *testing.T) {
	verifyNoLeaks(t)
	const records = 1024
	rec := record(recStderr, bytes.Repeat([]byte("E"), 65535), 1)
	b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) {
		for range records {
			if _, err := conn.Write(rec); err != nil {
				return
			}
		}
		conn.Write(append(stream(recStdout, "Content-Type: text/plain\r\n\r\nok"), endRequest(endComplete)...))
		b.waitLetGo(conn)
	})
	s := newFaultSite(t, b.socket, Options{}, nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, err := s.http.Get(s.url + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q, %v; want 200 ok", resp.StatusCode, body, err)
	}
	flood := int64(records * 65535)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB of stderr: %d KiB allocated in all during the request", flood>>20, alloc>>10)
	if alloc > 16<<20 {
		t.Errorf("%d MiB allocated for %d MiB of stderr; want it bounded (< 16 MiB)", alloc>>20, flood>>20)
	}
	lines := s.logs.FilterMessage("php stderr").All()
	if len(lines) != 1 {
		t.Fatalf("%d php stderr log lines; want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if kept, _ := f["stderr"].(string); len(kept) != 64<<10 || f["dropped_bytes"] != flood-64<<10 {
		t.Errorf("php stderr line: %d bytes kept, %v dropped; want %d and %d", len(kept), f["dropped_bytes"], 64<<10, flood-64<<10)
	}
	if lines[0].Level != zapcore.WarnLevel {
		t.Errorf("php stderr logged at %v; want warn", lines[0].Level)
	}
}

// TestBackendNeverReads: a backend that accepts and then neither reads nor
// answers: a GET fails after ReadTimeout, an upload after WriteTimeout,
// both with 504, no hang, the connection closed.
func TestBackendNeverReads(t *testing.T) {
	verifyNoLeaks(t)
	for _, post := range []bool{false, true} {
		t.Run(fmt.Sprintf("post %v", post), func(t *testing.T) {
			b := startRawFCGI(t, false, func(b *rawFCGI, conn net.Conn) { <-b.stop })
			s := newFaultSite(t, b.socket, Options{MaxBodySize: 16 << 20}, func(c *fcgi.Client) {
				c.ReadTimeout, c.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
				if post {
					c.ReadTimeout = time.Minute // the write side must give up first
				}
			})
			start := time.Now()
			var resp *http.Response
			var err error
			if post {
				resp, err = s.http.Post(s.url+"/post.php", "application/octet-stream", bytes.NewReader(make([]byte, 8<<20)))
			} else {
				resp, err = s.http.Get(s.url + "/index.php")
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if d := time.Since(start); resp.StatusCode != http.StatusGatewayTimeout || d > 20*time.Second {
				t.Errorf("got %d after %v; want 504 after about 300ms", resp.StatusCode, d)
			}
			s.waitClosed(t)
		})
	}
}

// unwritableDir returns a temp dir path where no file can be created: a
// path under /dev/null (ENOTDIR) for root, who ignores permissions, else a
// directory without write permission.
func unwritableDir(t *testing.T) string {
	if os.Geteuid() == 0 {
		return "/dev/null/realroot"
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	return dir
}

// TestSpoolFails: an upload past BodyMemory when the temp dir cannot take
// it (not writable, or the disk full midway) is a 500 with a log line
// saying why, and php-fpm never sees the request, nor any part of it.
func TestSpoolFails(t *testing.T) {
	verifyNoLeaks(t)
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := fmt.Fprintf(w, "Content-Type: text/plain\r\n\r\n%d", len(req.Stdin))
		return err
	})
	upload := bytes.Repeat([]byte("u"), 1<<20)
	post := func(t *testing.T, s *faultSite, chunked bool) (int, string) {
		t.Helper()
		var body io.Reader = bytes.NewReader(upload)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		resp, err := s.http.Post(s.url+"/post.php", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	check := func(t *testing.T, s *faultSite, chunked bool) {
		t.Helper()
		before := len(fpm.Requests())
		if status, body := post(t, s, chunked); status != 500 || body != "Internal Server Error\n" {
			t.Errorf("got %d %q; want 500", status, body)
		}
		if f := s.failure(t); f["reason"] != "cannot buffer request body" || f["error"] == nil {
			t.Errorf("log line %v; want the spooling error", f)
		}
		if n := len(fpm.Requests()) - before; n != 0 {
			t.Errorf("php-fpm got %d requests; want none", n)
		}
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("unwritable, chunked %v", chunked), func(t *testing.T) {
			s := newFaultSite(t, fpm.Socket, Options{MaxBodySize: 8 << 20, TempDir: unwritableDir(t)}, nil)
			check(t, s, chunked)
			// A body that fits in memory needs no temp file.
			resp, err := s.http.Post(s.url+"/post.php", "text/plain", strings.NewReader("small"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "5" {
				t.Errorf("small body: %d %q; want 200 5", resp.StatusCode, b)
			}
		})
	}
	t.Run("disk full midway", func(t *testing.T) {
		// RLIMIT_FSIZE makes writes past 256 KiB fail with EFBIG (Go
		// ignores SIGXFSZ), as ENOSPC would: the temp file is created and
		// partly written, then a write fails.
		s := newFaultSite(t, fpm.Socket, Options{MaxBodySize: 8 << 20, TempDir: t.TempDir()}, nil)
		var old syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Skip(err)
		}
		small := old
		small.Cur = 256 << 10
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
			t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
		}
		defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
		check(t, s, false)
		if f := s.failure(t); !strings.Contains(fmt.Sprint(f["error"]), "file too large") {
			t.Errorf("log line %v; want EFBIG", f)
		}
	})
	t.Run("buffered response", func(t *testing.T) {
		// With BufferResponses, a response past BufferMemory that cannot be
		// buffered is a clean 500, never a partial body.
		big := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
			_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\n"+strings.Repeat("r", 2<<20))
			return err
		})
		s := newFaultSite(t, big.Socket, Options{BufferResponses: true, TempDir: unwritableDir(t)}, nil)
		resp, err := s.http.Get(s.url + "/index.php")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 500 || string(b) != "Internal Server Error\n" {
			t.Errorf("got %d, %d bytes, %v; want a clean 500", resp.StatusCode, len(b), err)
		}
		if f := s.failure(t); f["reason"] != "cannot buffer response" {
			t.Errorf("log line %v; want cannot buffer response", f)
		}
	})
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBackendBodyNotAllowed: PHP answering 204 or 304 with a body (a stray
// newline after "?>" is enough) is a 204 or 304 without one, as with nginx;
// the request did not fail and the connection is kept.
func TestBackendBodyNotAllowed(t *testing.T) {
	verifyNoLeaks(t)
	for _, status := range []int{204, 304} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			b := startRawFCGI(t, true, func(b *rawFCGI, conn net.Conn) {
				conn.Write(append(stream(recStdout, fmt.Sprintf("Status: %d\r\n\r\n\n", status)), endRequest(endComplete)...))
				b.waitLetGo(conn)
			})
			s := newFaultSite(t, b.socket, Options{}, nil)
			if got, body, err := s.get("/index.php"); got != status || body != "" || err != nil {
				t.Errorf("got %d %q, %v; want %d", got, body, err, status)
			}
			if lines := s.logs.FilterMessage("request failed").All(); len(lines) != 0 {
				t.Errorf("logged %v; want no failure", lines[0].ContextMap())
			}
			if st := s.client.Stats(); st.Idle != 1 {
				t.Errorf("pool %+v; want the connection kept", st)
			}
		})
	}
}

// phpFaultSite is served by a real php-fpm in the fault tests under load.
var phpFaultSite = map[string]string{
	"index.php": `<?php echo "ok ", $_SERVER['REQUEST_METHOD'];`,
	"post.php": `<?php $n = 0; $f = fopen('php://input', 'rb');
while (!feof($f)) { $n += strlen(fread($f, 65536)); }
echo $n;`,
}

// newPHPFaultSite serves phpFaultSite through fpm with a pool of
// maxConns connections.
func newPHPFaultSite(t *testing.T, fpm *phpfpmtest.Server, maxConns int) *faultSite {
	t.Helper()
	dir := newDeploy(t, phpFaultSite, "A")
	core, logs := observer.New(zap.InfoLevel)
	c := &fcgi.Client{Network: "unix", Address: fpm.Socket, MaxConns: maxConns, ReadTimeout: 10 * time.Second}
	ts := httptest.NewServer(New(newReleases(t, filepath.Join(dir, "current")), c, Options{Logger: zap.New(core)}))
	t.Cleanup(func() {
		ts.Close()
		c.Close()
	})
	return &faultSite{url: ts.URL, client: c, logs: logs}
}

// result is one request of a load loop.
type result struct {
	start, end time.Time
	status     int
	err        error // transport error, or a wrong body
}

func (r result) ok() bool { return r.err == nil && r.status == 200 }

var zeros = make([]byte, 256<<10)

// phpRequest runs request j of client i: a GET of index.php, or a POST to
// post.php of a size that varies from a few bytes to past BodyMemory.
func phpRequest(hc *http.Client, base string, i, j int) result {
	r := result{start: time.Now()}
	var resp *http.Response
	want := "ok GET"
	if (i+j)%2 == 0 {
		resp, r.err = hc.Get(fmt.Sprintf("%s/index.php?c=%d&r=%d", base, i, j))
	} else {
		n := (i*7919 + j*104729) % len(zeros)
		want = fmt.Sprint(n)
		resp, r.err = hc.Post(base+"/post.php", "application/octet-stream", bytes.NewReader(zeros[:n]))
	}
	if r.err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		r.status = resp.StatusCode
		if err != nil {
			r.err = err
		} else if r.status == 200 && string(b) != want {
			r.err = fmt.Errorf("body %q; want %q", b, want)
		}
	}
	r.end = time.Now()
	return r
}

// loop runs n clients, each doing requests until stop is closed or it has
// done max of them; it returns every result.
func loop(base string, n, max int, stop <-chan struct{}) []result {
	var (
		mu  sync.Mutex
		all []result
		wg  sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
			defer hc.CloseIdleConnections()
			for j := 0; j < max; j++ {
				select {
				case <-stop:
					return
				default:
				}
				r := phpRequest(hc, base, i, j)
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
				if !r.ok() {
					time.Sleep(20 * time.Millisecond) // php-fpm is down: don't spin
				}
			}
		})
	}
	wg.Wait()
	return all
}

// TestFaultPHPKilled kills php-fpm (SIGKILL to its process group) while 4
// clients loop over GETs and POSTs, and restarts it: only requests in
// flight at the kill or sent while it is down fail, with 502 (or, for a
// response already started, an aborted connection); every request sent
// once it is back succeeds; and the pool holds no dead connection.
func TestFaultPHPKilled(t *testing.T) {
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	s := newPHPFaultSite(t, fpm, 4)

	stop := make(chan struct{})
	done := make(chan []result)
	go func() { done <- loop(s.url, 4, 100000, stop) }()
	time.Sleep(700 * time.Millisecond)
	killed := time.Now()
	if err := fpm.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(300 * time.Millisecond)
	fpm.Restart(t)
	back := time.Now()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	results := <-done

	var before, during, after, failed, aborted int
	var recovery, slowest time.Duration
	for _, r := range results {
		switch {
		case r.end.Before(killed):
			before++
		case r.start.After(back):
			after++
			slowest = max(slowest, r.end.Sub(r.start))
		default:
			during++
		}
		if r.ok() {
			if r.start.After(back) && recovery == 0 {
				recovery = r.end.Sub(back)
			}
			continue
		}
		failed++
		inFlight := r.start.Before(down) && r.end.After(killed)
		switch {
		case r.start.After(back) || r.end.Before(killed):
			t.Errorf("request %v..%v failed (%d, %v) outside the outage %v..%v", r.start.Format("15:04:05.000"),
				r.end.Format("15:04:05.000"), r.status, r.err, killed.Format("15:04:05.000"), back.Format("15:04:05.000"))
		case r.err != nil && inFlight:
			aborted++
		case r.err != nil || r.status != http.StatusBadGateway:
			t.Errorf("request during the outage: %d, %v; want 502", r.status, r.err)
		}
	}
	t.Logf("%d requests: %d before the kill, %d overlapping the outage (%d failed, %d of them aborted), %d after (first success %v after the restart, slowest %v)",
		len(results), before, during, failed, aborted, after, recovery, slowest)
	if before == 0 || after == 0 {
		t.Fatalf("load too thin: %d requests before the kill, %d after the restart", before, after)
	}
	if slowest > 5*time.Second {
		t.Errorf("slowest request after the restart took %v", slowest)
	}

	// Every idle connection now is one php-fpm serves: taking them all
	// (more requests at once than MaxConns) finds none dead.
	st := s.client.Stats()
	if st.InUse != 0 || st.Open > 4 {
		t.Errorf("pool after the load: %+v; want nothing in use, at most 4 open", st)
	}
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if r := phpRequest(hc, s.url, 0, 2*i); !r.ok() {
				t.Errorf("after recovery: %d, %v", r.status, r.err)
			}
		})
	}
	wg.Wait()
	if st2 := s.client.Stats(); st2.Retries != st.Retries {
		t.Errorf("a dead connection was left in the pool: before %+v, after %+v", st, st2)
	}
	t.Logf("pool: %+v", s.client.Stats())
}

// TestFaultPHPMaxRequests: php-fpm recycling its workers every 50 requests
// (pm.max_requests) under 4 clients × 300 requests, half of them POSTs of
// up to 256 KiB: not one request fails.
func TestFaultPHPMaxRequests(t *testing.T) {
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4, MaxRequests: 50})
	s := newPHPFaultSite(t, fpm, 4)
	results := loop(s.url, 4, 300, nil)
	var failed []string
	for _, r := range results {
		if !r.ok() {
			failed = append(failed, fmt.Sprintf("%d %v", r.status, r.err))
		}
	}
	st := s.client.Stats()
	t.Logf("%d requests, %d failed; pool %+v", len(results), len(failed), st)
	if len(results) != 1200 || len(failed) != 0 {
		t.Errorf("%d requests, %d failed: %q", len(results), len(failed), failed[:min(len(failed), 10)])
	}
	if lines := s.logs.FilterMessage("request failed").All(); len(lines) != 0 {
		t.Errorf("%d request failed log lines; first %v", len(lines), lines[0].ContextMap())
	}
}

// TestSlowBodyClosed: a client that stalls mid-body past BodyTimeout gets
// 408 and its connection closed (nginx's client_body_timeout), so that it
// holds no connection nor goroutine afterwards.
func TestSlowBodyClosed(t *testing.T) {
	verifyNoLeaks(t)
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	for _, te := range []string{"Content-Length: 100000\r\n\r\n" + strings.Repeat("x", 1000), "Transfer-Encoding: chunked\r\n\r\n100\r\n" + strings.Repeat("x", 100)} {
		s := newFaultSite(t, fpm.Socket, Options{BodyTimeout: 300 * time.Millisecond}, nil)
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "POST /post.php HTTP/1.1\r\nHost: x\r\n"+te)
		got, err := io.ReadAll(conn)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) || err != nil {
			t.Errorf("%.30q: got %.40q, %v; want 408 and the connection closed", te, got, err)
		}
	}
	if n := len(fpm.Requests()); n != 0 {
		t.Errorf("php-fpm got %d requests; want none", n)
	}
}

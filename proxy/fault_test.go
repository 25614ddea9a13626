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
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"realroot/internal/fcgitest"
	"realroot/internal/testutil"
	"realroot/proxy/fcgi"
)

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
			testutil.WaitFor(t, "the backend to see its connection closed", func() bool { return b.letGo.Load() == 1 })
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

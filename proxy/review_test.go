// Regression tests of a review of the handler (2026-11-22): each failed
// before its fix.

package proxy

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/fcgitest"
	"realroot/internal/testutil"
	"realroot/proxy/fcgi"
)

// TestCompressedShortBody: PHP declares Content-Length: 5000, sends 2000
// bytes and ends its request cleanly. Uncompressed, the server breaks the
// connection (the body is short of its length); compressed, the length is
// dropped, and the client must still not get a body that looks whole.
// Before a review's fix the 2000 bytes went out as a complete gzip stream.
func TestCompressedShortBody(t *testing.T) {
	page := htmlPage(5000)
	ts := newFakeServer(t, Options{}, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/html\r\nContent-Length: 5000\r\n\r\n"+page[:2000])
		return err
	})
	for _, enc := range []string{"gzip"} { // without Accept-Encoding the server breaks the connection
		t.Run("accept "+enc, func(t *testing.T) {
			req, _ := http.NewRequest("GET", ts.URL+"/index.php", nil)
			if enc != "" {
				req.Header.Set("Accept-Encoding", enc)
			}
			resp, err := identityClient.Do(req)
			if err != nil {
				return // the connection broke: honest
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return // cut: honest
			}
			if resp.Header.Get("Content-Encoding") == "gzip" {
				zr, zerr := gzip.NewReader(strings.NewReader(string(b)))
				if zerr != nil {
					return
				}
				b, err = io.ReadAll(zr)
				if err != nil {
					return // a cut gzip stream: honest
				}
			}
			t.Errorf("status %d, Content-Encoding %q: a complete-looking body of %d bytes; PHP declared 5000 (want the response cut)",
				resp.StatusCode, resp.Header.Get("Content-Encoding"), len(b))
		})
	}
}

// TestChunkedErrorCloses: a chunked request gets Connection: close
// (handler.go, against TE+CL smuggling), and keeps it when it ends in an
// error (404 here), so that what follows the chunked body is never read as
// a second request. Before the fix, fail() deleted every header first.
func TestChunkedErrorCloses(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php", "a.txt": "a"}, "A")
	srv := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nphp")
		return err
	})
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket}, Options{})
	std := httptest.NewServer(h)
	t.Cleanup(std.Close)
	h1 := newTestServer(t, h)
	smuggled := "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
	for _, target := range []string{"/missing.txt"} { // "/index.php" (served) does close
		for name, addr := range map[string]string{"net/http": std.Listener.Addr().String(), "h1": h1.Listener.Addr().String()} {
			t.Run(name+target, func(t *testing.T) {
				raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s",
					target, 5+len(smuggled), smuggled)
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, raw)
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				io.ReadAll(resp.Body)
				if !resp.Close {
					t.Errorf("first response %d without Connection: close", resp.StatusCode)
				}
				if resp2, err := http.ReadResponse(br, nil); err == nil {
					t.Errorf("first response %d, then the smuggled request was answered: %d", resp.StatusCode, resp2.StatusCode)
				}
			})
		}
	}
}

// TestAccelBufferingCase: X-Accel-Buffering is read case-insensitively, as
// nginx does ("No" turns buffering off: ngx_tolower in
// ngx_http_upstream_process_buffering). Before the fix a script sending
// "No" was held whole under BufferResponses.
func TestAccelBufferingCase(t *testing.T) {
	gate := make(chan struct{})
	ts := newFakeServer(t, Options{BufferResponses: true}, func(req *fcgitest.Request, w io.Writer) error {
		io.WriteString(w, "X-Accel-Buffering: No\r\nContent-Type: text/plain\r\n\r\none\n")
		select {
		case <-gate:
		case <-time.After(2 * time.Second):
			io.WriteString(w, "gate never opened\n")
			return nil
		}
		_, err := io.WriteString(w, "two\n")
		return err
	})
	defer close(gate)
	resp, err := identityClient.Get(ts.URL + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 64)
	n, _ := io.ReadAtLeast(resp.Body, b, 4)
	if got := string(b[:n]); got != "one\n" {
		t.Errorf("first bytes %q; want %q streamed before the script ends", got, "one\n")
	}
}

// TestHalfCloseCut: a client that half-closes its side (shutdown(SHUT_WR))
// while a PHP response streams makes the server cancel the request's
// context: realroot aborts the exchange (499) and must break the
// connection, as the client still reads. Before the fix the handler
// returned normally and the server ended the chunked body cleanly: a cut
// body that looked complete.
func TestHalfCloseCut(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	srv := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		io.WriteString(w, "Content-Type: image/png\r\n\r\nfirst;")
		time.Sleep(500 * time.Millisecond)
		_, err := io.WriteString(w, "second")
		return err
	})
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket}, Options{})
	for i, addr := range bothServers(t, h) {
		t.Run(serverNames[i], func(t *testing.T) {
			c := dialRaw(t, addr)
			io.WriteString(c, "GET /index.php HTTP/1.1\r\nHost: t\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, 6)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("first chunk: %v", err)
			}
			c.(*net.TCPConn).CloseWrite() // still reading
			rest, err := io.ReadAll(resp.Body)
			if err == nil && string(first)+string(rest) != "first;second" {
				t.Errorf("body %q ended cleanly; PHP sent %q (want the connection broken)", string(first)+string(rest), "first;second")
			}
		})
	}
}

// TestHalfCloseBeforeAnswer: a client that sends its request and half-closes
// at once (printf ... | nc, some probes) has its context cancelled before
// php-fpm answers: realroot logs 499 and closes the connection. Before the
// fix the server sent its default empty 200.
func TestHalfCloseBeforeAnswer(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	srv := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		time.Sleep(200 * time.Millisecond)
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nhello from php")
		return err
	})
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket}, Options{})
	for i, addr := range bothServers(t, h) {
		t.Run(serverNames[i], func(t *testing.T) {
			c := dialRaw(t, addr)
			io.WriteString(c, "GET /index.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
			c.(*net.TCPConn).CloseWrite()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return // no response: honest
			}
			b, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode == 200 && string(b) != "hello from php" {
				t.Errorf("got a clean 200 %q; PHP answered %q (want PHP's answer, or no response)", b, "hello from php")
			}
		})
	}
}

// TestLeaseHeldWhilePHPRuns: a client that goes away mid-request leaves
// php-fpm running the script (PHP notices only when it writes, if at all):
// the request keeps its release's lease until php-fpm is done with it, so
// that the release does not read as drained, and is not pruned, under a
// script that still includes its files. Before the fix the lease went with
// the client.
func TestLeaseHeldWhilePHPRuns(t *testing.T) {
	files := map[string]string{"public/index.php": "<?php echo 'front';", "public/slow.php": `<?php
usleep(1500000);
file_put_contents($_GET['f'], __DIR__);
echo "done";`}
	dir := newDeploy(t, files, "A")
	srv, rs := newPHPServer(t, dir, Options{})
	mdir := t.TempDir()
	os.Chmod(mdir, 0o777)
	marker := filepath.Join(mdir, "ran")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow.php?f="+marker, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("slow.php answered within 300ms")
	}
	rel := rs.Pin()
	defer rel.Unpin()
	// Until the script has run, its request is in flight (besides ours).
	for {
		_, err := os.Stat(marker)
		ran := err == nil
		n := rel.InFlight() - 1
		if ran {
			break
		}
		if n < 1 {
			t.Fatalf("release %s: %d requests in flight while slow.php still runs; want 1", rel.Root, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Then it ends.
	testutil.WaitFor(t, "the request to end", func() bool { return rel.InFlight() == 1 })
}

// dialRaw connects to addr, for 5 s at most; the connection closes at
// cleanup.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

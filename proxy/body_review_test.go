package proxy

// From a review of request bodies on their way to php-fpm (body.go): each test
// here failed before its fix. Both HTTP/1 servers are run (bothServers).

import (
	"bufio"
	"crypto/md5"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// bodyEchoSite echoes what PHP got of the body.
var bodyEchoSite = map[string]string{
	"post.php": `<?php
$in = file_get_contents('php://input');
echo $_SERVER['CONTENT_LENGTH'] ?? '<unset>', ' ', strlen($in), ' ', md5($in);`,
}

// bodyEchoServers serves bodyEchoSite through a real php-fpm with both
// HTTP/1 servers (net/http, h1).
func bodyEchoServers(t *testing.T, opts Options) [2]string {
	t.Helper()
	dir := newDeploy(t, bodyEchoSite, "A")
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	c := &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second}
	t.Cleanup(func() { c.Close() })
	return bothServers(t, New(newReleases(t, filepath.Join(dir, "current")), c, opts))
}

// TestBodyOverLimitClosed: a body declared over MaxBodySize gets 413
// and its connection closed within BodyTimeout, also when the client sends
// none of it. Before, net/http read the unread body (up to 256 KiB) after
// the 413 with no deadline: the connection and its goroutine stayed until
// the client went.
func TestBodyOverLimitClosed(t *testing.T) {
	addrs := bodyEchoServers(t, Options{MaxBodySize: 1 << 10, BodyTimeout: 200 * time.Millisecond})
	for i, addr := range addrs {
		for _, hdr := range []string{"", "Expect: 100-continue\r\n"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "POST /post.php HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"+hdr+"\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s %q: %v", serverNames[i], hdr, err)
			}
			io.Copy(io.Discard, resp.Body)
			rest, err := io.ReadAll(br) // the client waits for the close
			if resp.StatusCode != 413 || err != nil || len(rest) != 0 {
				t.Errorf("%s %q: got %d, then %q, %v; want 413 and the connection closed", serverNames[i], hdr, resp.StatusCode, rest, err)
			}
		}
	}
}

// TestChunkedSlowSteady: a client that sends one big chunk slowly
// but steadily, every gap well under BodyTimeout, gets its upload through
// whole, as with a Content-Length. Before, it got 408: net/http's chunked
// reader fills the whole 32 KiB asked of it under the one deadline set
// before the read, so BodyTimeout bounded 32 KiB, not the wait between two
// reads.
func TestChunkedSlowSteady(t *testing.T) {
	addrs := bodyEchoServers(t, Options{BodyTimeout: time.Second})
	piece := strings.Repeat("q", 1<<10)
	body := strings.Repeat(piece, 16)
	want := fmt.Sprintf("%d %d %x", len(body), len(body), md5.Sum([]byte(body)))
	for i, addr := range addrs {
		for _, chunked := range []bool{false, true} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			framing := fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
			if chunked {
				framing = fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n", len(body))
			}
			io.WriteString(c, "POST /post.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+framing)
			for range 16 {
				time.Sleep(150 * time.Millisecond) // the client's pace, not a wait for the server
				io.WriteString(c, piece)
			}
			if chunked {
				io.WriteString(c, "\r\n0\r\n\r\n")
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("%s chunked %v: %v", serverNames[i], chunked, err)
			}
			got, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(got) != want || err != nil {
				t.Errorf("%s chunked %v: got %d %q, %v; want 200 %q", serverNames[i], chunked, resp.StatusCode, got, err, want)
			}
		}
	}
}

// TestUnreadBodyBounded: a request that declares a body which realroot
// does not read (a missing file, a static file) and never sends it gets
// its answer, and its connection closed, within BodyTimeout. Before,
// net/http read the declared body (up to 256 KiB) with no deadline before
// it wrote the 404 or 405: no answer, and the connection held until the
// client went; proxy/h1 answered at its header timeout.
func TestUnreadBodyBounded(t *testing.T) {
	dir := newDeploy(t, map[string]string{"file.txt": "static"}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{BodyTimeout: 200 * time.Millisecond})
	for i, addr := range bothServers(t, h) {
		for _, tt := range []struct {
			path string
			want int
		}{{"/missing", 404}, {"/file.txt", 405}} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.SetDeadline(start.Add(5 * time.Second))
			io.WriteString(c, "POST "+tt.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("%s POST %s, body never sent: %v after %v; want %d within BodyTimeout",
					serverNames[i], tt.path, err, time.Since(start).Round(time.Millisecond), tt.want)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			rest, err := io.ReadAll(br)
			if resp.StatusCode != tt.want || err != nil || len(rest) != 0 {
				t.Errorf("%s POST %s: got %d, then %q, %v; want %d and the connection closed",
					serverNames[i], tt.path, resp.StatusCode, rest, err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s POST %s: answered and closed after %v; want within BodyTimeout (200ms)", serverNames[i], tt.path, d.Round(time.Millisecond))
			}
		}
	}
}

// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProxyProtocolSilentConn: with proxy-protocol on a
// plain listener, the default http1-server (lean) reads the PROXY header in
// its accept loop (h1.newConn calls RemoteAddr, which reads the header), so
// one connection that sends nothing stops every other client from being
// accepted until header-timeout.
func TestProxyProtocolSilentConn(t *testing.T) {
	_, c := fakePHP(t)
	c.ProxyProtocol = true
	c.TrustedProxies = []string{"192.0.2.0/24"} // 127.0.0.1 is an ordinary client
	c.HeaderTimeout = 20 * time.Second
	if c.HTTP1Server != "lean" {
		t.Fatalf("default http1-server %q; the test is about lean", c.HTTP1Server)
	}
	td := startDaemon(t, c)

	silent, err := net.Dial("tcp", td.addr) // connects, sends nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	status, err := rawGet(td.addr, nil, nil) // 5 s deadline
	if status != 200 || err != nil {
		t.Fatalf("a second client while one connection is silent: %d, %v after %v; want 200 at once", status, err, time.Since(start).Round(time.Millisecond))
	}
}

// TestRedirectOpaqueTarget: a request target in absolute form with an
// opaque part ("x:.evil.example") makes r.URL.RequestURI() return
// ".evil.example", which the redirect appends right after the host: the
// Location points to another host than the request's.
func TestRedirectOpaqueTarget(t *testing.T) {
	srv := httptest.NewServer(redirectHandler("443"))
	defer srv.Close()
	conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET x:.evil.example/p HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode == http.StatusMovedPermanently {
		u, err := url.Parse(loc)
		if err != nil || u.Hostname() != "good.example" {
			t.Errorf("301 to %q (host %q); want a redirect to good.example or a 400", loc, u.Hostname())
		}
	}
}

// TestLogFileErrorNamesSetting: a log file that cannot be opened fails
// the start with os.OpenFile's error alone, which names the path but not
// the setting (log-file or access-log-file).
func TestLogFileErrorNamesSetting(t *testing.T) {
	dir := t.TempDir()
	for _, key := range []string{"log-file", "access-log-file"} {
		t.Run(key, func(t *testing.T) {
			_, c := fakePHP(t)
			bad := filepath.Join(dir, "missing-dir", "x.log")
			if key == "log-file" {
				c.LogFile = bad
			} else {
				c.AccessLogFile = bad
			}
			var out strings.Builder
			_, err := newLogs(c, &out)
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("newLogs with %s %s: %v; want an error naming %s", key, bad, err, key)
			}
		})
	}
}

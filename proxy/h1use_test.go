package proxy

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// The handler's uses of its ResponseWriter and Request (Flush, ReadFrom and
// sendfile, http.ServeContent, read deadlines, MaxBytesReader, 1xx, HEAD,
// 204/304, PHP's own Content-Length and Status, compression) served by
// net/http's server and by proxy/h1 side by side: the wire must be the same.

// fakeCGI are the CGI responses of the fake php-fpm, by QUERY_STRING.
var fakeCGI = map[string]string{
	"html":        "Content-Type: text/html\r\n\r\n<p>hi</p>",
	"big":         "Content-Type: text/plain\r\n\r\n" + randomText(100<<10, 2),
	"cl-exact":    "Content-Length: 5\r\n\r\nhello",
	"cl-over":     "Content-Length: 5\r\n\r\nhello world",
	"cl-under":    "Content-Length: 50\r\n\r\nhello",
	"cl-over-big": "Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n" + randomText(5000, 3),
	"204":         "Status: 204 No Content\r\nContent-Type: text/html\r\n\r\n\n",
	"304":         "Status: 304 Not Modified\r\nETag: \"v1\"\r\nContent-Type: text/css\r\nContent-Length: 99\r\n\r\n",
	"100":         "Status: 100 Continue\r\n\r\n",
	"101":         "Status: 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"103":         "Status: 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
	"299":         "Status: 299 Custom\r\n\r\nx",
	"huge-header": "Set-Cookie: a=" + strings.Repeat("c", 16<<10) + "\r\nSet-Cookie: b=1\r\nX-Big: " + strings.Repeat("h", 200<<10) + "\r\n\r\nok",
	"te-chunked":  "Transfer-Encoding: chunked\r\n\r\nab",
	"conn-close":  "Connection: close\r\n\r\nbye",
	"accel":       "Content-Disposition: attachment\r\nX-Accel-Redirect: /big.txt\r\n\r\n",
	"accel-gzip":  "Content-Encoding: gzip\r\nX-Accel-Redirect: /big.txt\r\n\r\n", // no Content-Length then
}

// cgiUpstream answers with fakeCGI's response, by QUERY_STRING; "params"
// tells what it got. A body comes in one read with its end, as php-fpm
// sends a short response: no flush, unless it is over 32 KiB.
type cgiUpstream struct{}

func (cgiUpstream) Do(_ context.Context, req *gofast.Request) (*fcgi.Response, error) {
	q := req.Params["QUERY_STRING"]
	raw := fakeCGI[q]
	if q == "params" { // but those of the connection and the request id; and the body
		var ps []string
		for k, v := range req.Params {
			if k != "REMOTE_PORT" && k != "SERVER_PORT" && k != "HTTP_X_REQUEST_ID" {
				ps = append(ps, k+"="+v)
			}
		}
		slices.Sort(ps)
		var in []byte
		if req.Stdin != nil {
			in, _ = io.ReadAll(req.Stdin)
		}
		raw = fmt.Sprintf("Content-Type: text/plain\r\n\r\n%s\n%d %08x", strings.Join(ps, "\n"), len(in), crc32.ChecksumIEEE(in))
	}
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	resp := &fcgi.Response{Status: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(iotest.DataErrReader(strings.NewReader(body)))}
	for _, line := range strings.Split(head, "\r\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "Status" {
			resp.Status, _ = strconv.Atoi(v[:3])
			continue
		}
		resp.Header.Add(k, v)
	}
	return resp, nil
}

// h1useSite is a release with static files and index.php (the fake's).
var h1useSite = map[string]string{
	"index.php": "<?php",
	"small.css": "body{}",
	"big.txt":   randomText(300<<10, 4), // past the file cache: ServeContent and sendfile
	"app.js":    randomText(10<<10, 5),
	"app.js.gz": "GZ",
}

func req(method, target string, hdr ...string) string {
	s := method + " " + target + " HTTP/1.1\r\nHost: t\r\n"
	for _, h := range hdr {
		s += h + "\r\n"
	}
	return s + "\r\n"
}

func post(target, body string, hdr ...string) string {
	return req("POST", target, append(hdr, fmt.Sprintf("Content-Length: %d", len(body)))...) + body
}

// TestH1UseFake: static files and exact CGI responses through both servers.
func TestH1UseFake(t *testing.T) {
	dir := newDeploy(t, h1useSite, "A")
	handler := func(buffered bool) http.Handler {
		return New(newReleases(t, filepath.Join(dir, "current")), cgiUpstream{},
			Options{MaxBodySize: 2048, BodyTimeout: time.Second, BufferResponses: buffered, BufferMemory: 4096})
	}
	stream, buffered := bothServers(t, handler(false)), bothServers(t, handler(true))
	over := strings.Repeat("b", 3000) // MaxBodySize is 2 KiB
	tests := []wireCase{
		{name: "static sibling", raw: req("GET", "/app.js", "Accept-Encoding: gzip")},
		{name: "static 405", raw: post("/small.css", "x")},
		{name: "static HTTP/1.0 keep-alive", raw: "GET /big.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{name: "php params", raw: req("GET", "/index.php/a%2Fb/c?params", "Cookie: a=1", "Cookie: b=2", "X-Forwarded-For: 1.2.3.4", "Proxy: x")},
		{name: "php params absolute-form", raw: req("GET", "http://u:p@h.test:8080/index.php?params")},
		{name: "php compressed", raw: req("GET", "/index.php?big", "Accept-Encoding: gzip")},
		{name: "php HTTP/1.0", raw: "GET /index.php?big HTTP/1.0\r\n\r\n"},
		{name: "php x-accel-redirect range", raw: req("GET", "/index.php?accel", "Range: bytes=10-19")},
		{name: "post", raw: post("/index.php?params", "a=1", "Content-Type: application/x-www-form-urlencoded")},
		{name: "post chunked", raw: req("POST", "/index.php?params", "Transfer-Encoding: chunked") + "5\r\nhello\r\n0\r\n\r\n"},
		{name: "post 100-continue", raw: post("/index.php?params", "hello", "Expect: 100-continue")},
		{name: "post over the limit", raw: post("/index.php?params", over)},
		{name: "post over the limit, 100-continue", raw: post("/index.php?params", over, "Expect: 100-continue")},
		{name: "post chunked over the limit", raw: req("POST", "/index.php?params", "Transfer-Encoding: chunked") + "bb8\r\n" + over + "\r\n0\r\n\r\n"},
		{name: "post stalled", raw: req("POST", "/index.php?params", "Content-Length: 10") + "abc", noProbe: true},
		{name: "post bad chunking", raw: req("POST", "/index.php?params", "Transfer-Encoding: chunked") + "zz\r\n", noProbe: true},
		{name: "buffered compressed", addrs: buffered, raw: req("GET", "/index.php?big", "Accept-Encoding: gzip")},
		// PHP's body spooled to a file goes out by ReadFrom: cut at PHP's
		// Content-Length by sendBuffered (TestBufferedContentLength), so
		// net/http, which would send the excess, answers as h1 does.
		{name: "buffered cl-over-big", addrs: buffered, raw: req("GET", "/index.php?cl-over-big")},
	}
	for _, h := range []string{"Range: bytes=100-5099", "Range: bytes=999999999-", `If-Match: "nope"`,
		"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", "Accept-Encoding: gzip", "Accept-Encoding: br"} {
		tests = append(tests, wireCase{name: "static " + h, raw: req("GET", "/big.txt", h)})
	}
	for _, m := range []string{"GET", "HEAD"} {
		for _, target := range []string{"/small.css", "/big.txt", "/index.php?html", "/index.php?big", "/index.php?accel"} {
			tests = append(tests, wireCase{name: m + " " + target, raw: req(m, target)}) // HEAD: PHP's body dropped
		}
		tests = append(tests, wireCase{name: "buffered " + m, addrs: buffered, raw: req(m, "/index.php?html")})
	}
	for _, q := range []string{"cl-exact", "cl-over", "cl-under", "cl-over-big", "204", "304", "100", "101", "103", "299", "accel-gzip",
		"huge-header", "te-chunked", "conn-close"} {
		tests = append(tests, wireCase{name: "php " + q, raw: req("GET", "/index.php?"+q)})
	}
	for _, q := range []string{"big", "cl-over", "cl-under", "204", "304"} {
		tests = append(tests, wireCase{name: "buffered " + q, addrs: buffered, raw: req("GET", "/index.php?"+q)})
	}
	compareOnWire(t, stream, tests)
}

// h1usePHP are scripts for a real php-fpm.
var h1usePHP = map[string]string{
	"hello.php":     `<?php echo "hello";`,
	"big.php":       `<?php echo str_repeat("0123456789abcdef\n", 8192);`,
	"nocontent.php": `<?php http_response_code(204); echo "\n";`,
	"notmod.php":    `<?php http_response_code(304); header('ETag: "v1"'); header('Content-Type: text/css');`,
	"cl.php":        `<?php header('Content-Length: ' . $_GET['n']); echo str_repeat('x', (int)$_GET['len']);`,
	"status.php":    `<?php header('Status: 299 Custom'); header('X-Big: ' . str_repeat('h', 60000)); echo str_repeat('m', 40000);`,
	"sse.php": `<?php
header('Content-Type: text/event-stream');
while (ob_get_level() > 0) ob_end_flush();
echo "data: one\n\n";
flush();
for ($i = 0; $i < 500 && !file_exists($_GET['gate']); $i++) usleep(10000);
echo "data: two\n\n";`,
	"slow.php": `<?php for ($i = 0; $i < 500; $i++) usleep(10000); echo "late";`,
	"long.php": `<?php
while (ob_get_level() > 0) ob_end_flush();
for ($i = 0; $i < 500; $i++) { echo str_repeat("x", 65536); flush(); usleep(10000); }`,
	"small.css": "body{}",
	"huge.bin":  "", "huge.txt": "", // made large below
}

// TestH1UsePHP: a real php-fpm's responses through both servers; an event
// stream arrives piece by piece; a client that leaves mid-request, or while
// a large file is sent (sendfile, or compressed), ends the request and leaves
// no goroutine or file behind.
func TestH1UsePHP(t *testing.T) {
	dir := newDeploy(t, h1usePHP, "A")
	for _, name := range []string{"huge.bin", "huge.txt"} {
		if err := os.Truncate(filepath.Join(dir, "releases/A", name), 256<<20); err != nil { // sparse
			t.Fatal(err)
		}
	}
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	done := make(chan string, 128) // the requests done
	handler := func(buffered bool) http.Handler {
		return New(newReleases(t, filepath.Join(dir, "current")),
			&fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second},
			Options{BufferResponses: buffered, BufferMemory: 4096, Observer: observerFunc(func(route string, status int) {
				done <- fmt.Sprint(route, " ", status)
			})})
	}
	stream, buffered := bothServers(t, handler(false)), bothServers(t, handler(true))
	compareOnWire(t, stream, []wireCase{
		{name: "HEAD", raw: req("HEAD", "/hello.php")},
		{name: "big", raw: req("GET", "/big.php")},
		{name: "204", raw: req("GET", "/nocontent.php")},
		{name: "304", raw: req("GET", "/notmod.php")},
		{name: "status and big header", raw: req("GET", "/status.php")},
		{name: "content-length short of body", raw: req("GET", "/cl.php?n=3&len=11")},
		{name: "content-length past body", raw: req("GET", "/cl.php?n=50&len=5")},
		{name: "buffered HEAD", addrs: buffered, raw: req("HEAD", "/hello.php")},
		{name: "buffered 304", addrs: buffered, raw: req("GET", "/notmod.php")},
		{name: "buffered content-length past body", addrs: buffered, raw: req("GET", "/cl.php?n=9000&len=5000")},
	})
	for len(done) > 0 {
		<-done
	}
	waitFor := func(t *testing.T, want string, d time.Duration) {
		t.Helper()
		select {
		case got := <-done:
			if got != want {
				t.Errorf("observed %q; want %q", got, want)
			}
		case <-time.After(d):
			t.Errorf("nothing observed after %v; want %q: the request goes on", d, want)
		}
	}
	wait := func(t *testing.T, want string) { t.Helper(); waitFor(t, want, 3*time.Second) }

	for i, addr := range stream {
		t.Run("event stream/"+serverNames[i], func(t *testing.T) {
			gate := filepath.Join(t.TempDir(), "gate")
			c := dialWire(t, addr, req("GET", "/sse.php?gate="+gate, "Accept-Encoding: gzip"))
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.TransferEncoding, []string{"chunked"}) || res.Header.Get("Content-Encoding") != "" {
				t.Errorf("Transfer-Encoding %q, Content-Encoding %q; want chunked, none", res.TransferEncoding, res.Header.Get("Content-Encoding"))
			}
			br := bufio.NewReader(res.Body)
			if line, err := br.ReadString('\n'); line != "data: one\n" {
				t.Fatalf("first event: %q, %v; want it before the script goes on", line, err)
			}
			os.WriteFile(gate, nil, 0o644) // the script waits for it: the event was streamed
			if rest, err := io.ReadAll(br); string(rest) != "\ndata: two\n\n" || err != nil {
				t.Errorf("rest: %q, %v", rest, err)
			}
			wait(t, "php 200")
		})
		for _, raw := range []string{req("GET", "/slow.php"), post("/slow.php", "a=1")} {
			t.Run("client gone/"+serverNames[i]+"/"+strings.Fields(raw)[0], func(t *testing.T) {
				c := dialWire(t, addr, raw)
				time.Sleep(200 * time.Millisecond)
				c.Close()
				// The request ends when php-fpm is done with slow.php
				// (5 s): it keeps its release's lease until then.
				waitFor(t, "php 499", 15*time.Second)
			})
		}
		// Cut mid-body, the status went out: it stays in the log, as
		// nginx logs it (static below too).
		t.Run("client gone mid-body/"+serverNames[i]+"/php", func(t *testing.T) {
			c := dialWire(t, addr, req("GET", "/long.php"))
			if _, err := io.ReadFull(c, make([]byte, 16<<10)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			wait(t, "php 200")
		})
		for _, target := range []string{"/huge.bin", "/huge.txt"} {
			t.Run("client gone/"+serverNames[i]+target, func(t *testing.T) {
				fds := settle(t, -1)
				c := dialWire(t, addr, req("GET", target, "Accept-Encoding: gzip"))
				if _, err := io.ReadFull(c, make([]byte, 16<<10)); err != nil {
					t.Fatal(err)
				}
				if g, _ := leftovers(t); g == 0 {
					t.Errorf("no goroutine serving the download seen") // leftovers is broken
				}
				c.Close()
				wait(t, "static 200")
				settle(t, fds)
			})
		}
	}
}

package proxy

import (
	"bufio"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// phpSite is served by a real php-fpm in the end-to-end tests.
var phpSite = map[string]string{
	"public/index.php": `<?php
echo "front ", $_SERVER['REQUEST_URI'], " ", $_SERVER['SCRIPT_NAME'], "\n";`,
	"public/env.php": `<?php
foreach (['SCRIPT_FILENAME','SCRIPT_NAME','DOCUMENT_ROOT','PATH_INFO','PATH_TRANSLATED','REQUEST_URI','QUERY_STRING','HTTP_PROXY','HTTP_X_REQUEST_ID'] as $k) {
	echo $k, '=', $_SERVER[$k] ?? '<unset>', "\n";
}
echo 'DIR=', __DIR__, "\n";`,
	"public/post.php": `<?php
$in = file_get_contents('php://input');
echo strlen($in), ' ', md5($in), ' ', $_POST['name'] ?? '', "\n";`,
	"public/cookie.php": `<?php
header('Set-Cookie: big=' . str_repeat('c', 16384));
header('Set-Cookie: small=1', false);
header('Content-Security-Policy: ' . str_repeat("default-src 'self'; ", 3000));
echo "ok";`,
	"public/status.php": `<?php
http_response_code(418);
header('X-Accel-Buffering: no');
echo "teapot";`,
	"public/redirect.php": `<?php
header('Location: /elsewhere');`,
	"public/sse.php": `<?php
header('Content-Type: text/event-stream');
while (ob_get_level() > 0) ob_end_flush(); // php.ini-production buffers 4 KiB
echo "data: one\n\n";
flush();
// Wait until the test has read the first event, which proves it was
// streamed: nothing else can wake this loop.
for ($i = 0; $i < 500; $i++) {
	clearstatcache(true);
	if (file_exists($_GET['gate'])) { echo "data: two\n\n"; exit; }
	usleep(10000);
}
echo "data: gate never opened\n\n";`,
	"public/stderr.php": `<?php
error_log("something odd in stderr.php");
echo "logged";`,
	"public/dump.php": `<?php echo "dump";`,
	"public/app.css":  "body{}",
}

// newPHPServer serves dir/current/public through a real php-fpm.
func newPHPServer(t *testing.T, dir string, opts Options) (*httptest.Server, *resolve.Releases) {
	t.Helper()
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if opts.FrontController == "" {
		opts.FrontController = "/index.php"
	}
	h := New(rs, &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second}, opts)
	srv := newTestServer(t, h)
	t.Cleanup(srv.Close)
	return srv, rs
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

func TestPHP(t *testing.T) {
	dir := newDeploy(t, phpSite, "A")
	core, logs := observer.New(zap.InfoLevel)
	srv, rs := newPHPServer(t, dir, Options{Logger: zap.New(core)})
	root := rs.Current().Root

	t.Run("params", func(t *testing.T) {
		_, body := get(t, srv.URL+"/env.php/a/b?q=1", "Proxy", "http://evil.test", "X-Request-Id", "abc")
		for _, want := range []string{
			"SCRIPT_FILENAME=" + root + "/env.php\n",
			"SCRIPT_NAME=/env.php\n",
			"DOCUMENT_ROOT=" + root + "\n",
			"PATH_INFO=/a/b\n",
			"PATH_TRANSLATED=" + root + "/a/b\n",
			"REQUEST_URI=/env.php/a/b?q=1\n",
			"QUERY_STRING=q=1\n",
			"HTTP_PROXY=<unset>\n",
			"HTTP_X_REQUEST_ID=abc\n",
			"DIR=" + root + "\n",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("env.php output lacks %q:\n%s", want, body)
			}
		}
		if strings.Contains(body, "/current/") {
			t.Errorf("a symlink path reached PHP:\n%s", body)
		}
	})
	t.Run("front controller", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/blog/post?x=1")
		if resp.StatusCode != 200 || body != "front /blog/post?x=1 /index.php\n" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("post", func(t *testing.T) {
		resp, err := http.Post(srv.URL+"/post.php", "application/x-www-form-urlencoded", strings.NewReader("name=realroot"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got, want := string(b), fmt.Sprintf("13 %x realroot\n", md5.Sum([]byte("name=realroot"))); got != want {
			t.Fatalf("post.php = %q; want %q", got, want)
		}
	})
	t.Run("chunked upload", func(t *testing.T) {
		data := strings.Repeat("0123456789abcdef", 20000) // 320000 bytes, spooled to a file
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < len(data); i += 10000 {
				pw.Write([]byte(data[i : i+10000]))
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", srv.URL+"/post.php", pr)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), "320000 ") {
			t.Fatalf("chunked upload reached PHP as %q; want 320000 bytes", b)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		resp, err := http.Post(srv.URL+"/post.php", "application/octet-stream", strings.NewReader(strings.Repeat("x", 2<<20)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("2 MiB body: status %d; want 413", resp.StatusCode)
		}
	})
	t.Run("long headers", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/cookie.php")
		cookies := resp.Header.Values("Set-Cookie")
		if body != "ok" || len(cookies) != 2 || len(cookies[0]) != len("big=")+16384 || cookies[1] != "small=1" {
			t.Fatalf("got %q with %d cookies", body, len(cookies))
		}
		if n := len(resp.Header.Get("Content-Security-Policy")); n < 50000 {
			t.Fatalf("CSP header is %d bytes; want 60000", n)
		}
	})
	t.Run("status and hidden headers", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/status.php")
		if resp.StatusCode != 418 || body != "teapot" || resp.Header.Get("X-Accel-Buffering") != "" {
			t.Fatalf("got %d %q X-Accel-Buffering=%q", resp.StatusCode, body, resp.Header.Get("X-Accel-Buffering"))
		}
	})
	t.Run("redirect", func(t *testing.T) {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(srv.URL + "/redirect.php")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "/elsewhere" {
			t.Fatalf("got %d Location %q; want 302 /elsewhere", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("server-sent events stream", func(t *testing.T) {
		gate := filepath.Join(t.TempDir(), "gate")
		resp, err := http.Get(srv.URL + "/sse.php?gate=" + gate)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Fatalf("first event: %q, %v", line, err)
		}
		// The first event arrived while PHP still waits for the gate.
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "\ndata: two\n\n" {
			t.Fatalf("rest = %q", rest)
		}
	})
	t.Run("server-sent events stream, br and gzip accepted", func(t *testing.T) {
		gate := filepath.Join(t.TempDir(), "gate")
		req, _ := http.NewRequest("GET", srv.URL+"/sse.php?gate="+gate, nil)
		req.Header.Set("Accept-Encoding", "gzip, deflate, br")
		resp, err := identityClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if enc := resp.Header.Get("Content-Encoding"); enc != "" {
			t.Fatalf("event stream sent with Content-Encoding %q", enc)
		}
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
			t.Fatalf("first event: %q, %v", line, err)
		}
		if err := os.WriteFile(gate, nil, 0o644); err != nil { // PHP still waits for it
			t.Fatal(err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "\ndata: two\n\n" {
			t.Fatalf("rest = %q", rest)
		}
	})
	t.Run("stderr is logged", func(t *testing.T) {
		_, body := get(t, srv.URL+"/stderr.php")
		if body != "logged" {
			t.Fatalf("body %q", body)
		}
		var found bool
		for _, e := range logs.FilterMessage("php stderr").All() {
			if strings.Contains(e.ContextMap()["stderr"].(string), "something odd in stderr.php") {
				found = true
			}
		}
		if !found {
			t.Fatalf("no php stderr log line; logs: %v", logs.All())
		}
	})
	t.Run("not found", func(t *testing.T) {
		for _, p := range []string{"/missing.php", "/app.css/x.php", "/.env"} {
			if resp, _ := get(t, srv.URL+p); resp.StatusCode != 404 {
				t.Errorf("GET %s = %d; want 404", p, resp.StatusCode)
			}
		}
	})
}

// TestPHPUnreachable: php-fpm not listening is a 502.
func TestPHPUnreachable(t *testing.T) {
	dir := newDeploy(t, phpSite, "A")
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	h := New(rs, &fcgi.Client{Network: "unix", Address: filepath.Join(dir, "nope.sock")}, Options{})
	srv := newTestServer(t, h)
	defer srv.Close()
	if resp, _ := get(t, srv.URL+"/dump.php"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("php-fpm down: status %d; want 502", resp.StatusCode)
	}
}

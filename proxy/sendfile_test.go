package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"realroot/internal/fcgitest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// TestInternalRedirect: X-Accel-Redirect and X-Sendfile from PHP serve the
// file they name, from the allowed places only, with PHP's other headers;
// neither header reaches the client, and nothing escapes.
func TestInternalRedirect(t *testing.T) {
	csv := strings.Repeat("id,name,amount\n1,alice,10\n", 200)
	files := t.TempDir() // InternalLocations["/protected/"]
	writeTree(t, files, map[string]string{
		"a.pdf":       "%PDF-1.7 fake pdf",
		"sub/b.txt":   "b in sub",
		"my file.txt": "spaced",
		"big.csv":     csv,
	})
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret.txt": "outside secret"})
	downloads := filepath.Join(t.TempDir(), "downloads") // SendfileDirs
	writeTree(t, downloads, map[string]string{"x.bin": "x bytes"})
	writeTree(t, downloads+"2", map[string]string{"x.bin": "sibling dir"})
	for link, target := range map[string]string{
		"escape": "/etc/passwd",
		"up":     filepath.Join("..", filepath.Base(outside), "secret.txt"),
		"inner":  "sub/b.txt",
	} {
		if err := os.Symlink(target, filepath.Join(files, link)); err != nil {
			t.Fatal(err)
		}
	}

	cgi := func(headers ...string) string { return strings.Join(headers, "\r\n") + "\r\n\r\n" }
	responses := map[string]string{
		"pdf": cgi("Content-Type: application/pdf", `Content-Disposition: attachment; filename="a.pdf"`,
			"Cache-Control: private", "Set-Cookie: dl=1", "X-Accel-Redirect: /protected/a.pdf"),
		"default-type":       cgi("Content-Type: text/html; charset=UTF-8", "X-Accel-Redirect: /protected/a.pdf"),
		"with-body":          cgi("Status: 404 Not Found", "X-Accel-Redirect: /protected/a.pdf") + "PHP's body, not sent",
		"query":              cgi("X-Accel-Redirect: /protected/a.pdf?token=1"),
		"encoded-name":       cgi("X-Accel-Redirect: /protected/my%20file.txt"),
		"subdir":             cgi("X-Accel-Redirect: /protected/sub/b.txt"),
		"symlink-inside":     cgi("X-Accel-Redirect: /protected/inner"),
		"csv":                cgi("Content-Type: text/csv", "X-Accel-Redirect: /protected/big.csv"),
		"release":            cgi("Content-Type: text/plain", "X-Accel-Redirect: /private/report.txt"),
		"traversal":          cgi("X-Accel-Redirect: /protected/../../etc/passwd"),
		"encoded-traversal":  cgi("X-Accel-Redirect: /protected/%2e%2e/%2E%2E/etc/passwd"),
		"release-traversal":  cgi("X-Accel-Redirect: /../../../../etc/passwd"),
		"dotfile":            cgi("X-Accel-Redirect: /.env"),
		"script":             cgi("X-Accel-Redirect: /index.php"),
		"symlink-absolute":   cgi("X-Accel-Redirect: /protected/escape"),
		"symlink-escape":     cgi("X-Accel-Redirect: /protected/up"),
		"missing":            cgi("X-Accel-Redirect: /protected/nope.pdf"),
		"directory":          cgi("X-Accel-Redirect: /protected/sub/"),
		"relative":           cgi("X-Accel-Redirect: protected/a.pdf"),
		"named-location":     cgi("X-Accel-Redirect: @files"),
		"sendfile":           cgi("Content-Type: application/octet-stream", "X-Sendfile: "+downloads+"/x.bin"),
		"sendfile-outside":   cgi("Content-Type: text/plain", "X-Sendfile: "+outside+"/secret.txt") + "PHP's body",
		"sendfile-traversal": cgi("X-Sendfile: " + downloads + "/../" + filepath.Base(outside) + "/secret.txt"),
		"sendfile-sibling":   cgi("X-Sendfile: " + downloads + "2/x.bin"),
		"sendfile-relative":  cgi("X-Sendfile: downloads/x.bin"),
		"sendfile-etc":       cgi("X-Sendfile: /etc/passwd"),
	}
	fake := func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, responses[req.Params["QUERY_STRING"]])
		return err
	}
	site := map[string]string{"index.php": "<?php", "private/report.txt": "report", ".env": "DB_PASSWORD=x"}
	opts := Options{
		FrontController:   "/index.php",
		Deny:              []string{"/private"},
		InternalLocations: map[string]string{"/protected/": files, "/protected/sub/": files + "/sub"},
		SendfileDirs:      []string{downloads},
	}
	ts, _ := newFakeSite(t, site, opts, fake)
	opts.SendfileDirs = nil
	noSendfile, _ := newFakeSite(t, site, opts, fake)

	tests := []struct {
		name     string
		srv      *httptest.Server
		give     string
		header   []string
		status   int
		body     string
		wantHdrs map[string]string
	}{
		{name: "internal location", give: "pdf", status: 200, body: "%PDF-1.7 fake pdf",
			wantHdrs: map[string]string{"Content-Type": "application/pdf", "Content-Disposition": `attachment; filename="a.pdf"`,
				"Cache-Control": "private", "Set-Cookie": "dl=1", "Content-Length": "17", "Accept-Ranges": "bytes"}},
		{name: "PHP's default text/html: type by extension", give: "default-type", status: 200, body: "%PDF-1.7 fake pdf",
			wantHdrs: map[string]string{"Content-Type": "application/pdf"}},
		{name: "PHP's body and status are not the file's", give: "with-body", status: 200, body: "%PDF-1.7 fake pdf"},
		{name: "query dropped", give: "query", status: 200, body: "%PDF-1.7 fake pdf"},
		{name: "percent-decoded", give: "encoded-name", status: 200, body: "spaced",
			wantHdrs: map[string]string{"Content-Type": "text/plain; charset=utf-8"}},
		{name: "longest prefix", give: "subdir", status: 200, body: "b in sub"},
		{name: "symlink inside followed", give: "symlink-inside", status: 200, body: "b in sub"},
		{name: "range", give: "pdf", header: []string{"Range", "bytes=0-3"}, status: 206, body: "%PDF",
			wantHdrs: map[string]string{"Content-Range": "bytes 0-3/17"}},
		{name: "compressed", give: "csv", header: []string{"Accept-Encoding", "gzip"}, status: 200,
			wantHdrs: map[string]string{"Content-Encoding": "gzip", "Content-Type": "text/csv"}},
		{name: "range uncompressed", give: "csv", header: []string{"Accept-Encoding", "gzip", "Range", "bytes=0-1"}, status: 206, body: "id",
			wantHdrs: map[string]string{"Content-Encoding": ""}},
		{name: "denied path of the release, through PHP", give: "release", status: 200, body: "report"},
		{name: "traversal", give: "traversal", status: 404},
		{name: "encoded traversal", give: "encoded-traversal", status: 404},
		{name: "traversal in the release", give: "release-traversal", status: 404},
		{name: "dotfile", give: "dotfile", status: 404},
		{name: "script source", give: "script", status: 404},
		{name: "absolute symlink", give: "symlink-absolute", status: 404},
		{name: "symlink escaping", give: "symlink-escape", status: 404},
		{name: "missing", give: "missing", status: 404},
		{name: "directory", give: "directory", status: 404},
		{name: "relative", give: "relative", status: 404},
		{name: "named location", give: "named-location", status: 404},
		{name: "x-sendfile", give: "sendfile", status: 200, body: "x bytes",
			wantHdrs: map[string]string{"Content-Type": "application/octet-stream"}},
		{name: "x-sendfile outside", give: "sendfile-outside", status: 404},
		{name: "x-sendfile traversal", give: "sendfile-traversal", status: 404},
		{name: "x-sendfile sibling dir", give: "sendfile-sibling", status: 404},
		{name: "x-sendfile relative", give: "sendfile-relative", status: 404},
		{name: "x-sendfile /etc/passwd", give: "sendfile-etc", status: 404},
		{name: "x-sendfile ignored without dirs", srv: noSendfile, give: "sendfile-outside", status: 200, body: "PHP's body",
			wantHdrs: map[string]string{"Content-Type": "text/plain"}},
		{name: "x-sendfile ignored without dirs, no body", srv: noSendfile, give: "sendfile", status: 200, body: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.srv
			if srv == nil {
				srv = ts
			}
			resp, body := rawGet(t, "GET", srv.URL+"/download?"+tt.give, tt.header...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 || tt.status == 206 {
				if tt.body != "" || resp.Header.Get("Content-Encoding") == "" {
					if string(body) != tt.body {
						t.Errorf("body %q; want %q", body, tt.body)
					}
				} else if got := decode(t, resp.Header.Get("Content-Encoding"), body); got != csv {
					t.Errorf("decoded body: %d bytes; want %d", len(got), len(csv))
				}
			}
			for _, leak := range []string{"root:", "secret", "DB_PASSWORD", "<?php"} {
				if strings.Contains(string(body), leak) {
					t.Errorf("body leaks %q: %q", leak, body)
				}
			}
			for _, k := range []string{"X-Accel-Redirect", "X-Sendfile"} {
				if v := resp.Header.Get(k); v != "" {
					t.Errorf("%s reached the client: %q", k, v)
				}
			}
			for k, v := range tt.wantHdrs {
				if got := strings.Join(resp.Header.Values(k), ", "); got != v {
					t.Errorf("%s: %q; want %q", k, got, v)
				}
			}
		})
	}

	t.Run("conditional", func(t *testing.T) {
		resp, _ := rawGet(t, "GET", ts.URL+"/download?pdf")
		et := resp.Header.Get("Etag")
		if et == "" || resp.Header.Get("Last-Modified") == "" {
			t.Fatalf("no ETag (%q) or Last-Modified", et)
		}
		resp, body := rawGet(t, "GET", ts.URL+"/download?pdf", "If-None-Match", et)
		if resp.StatusCode != 304 || len(body) != 0 {
			t.Fatalf("If-None-Match: %d %q; want 304", resp.StatusCode, body)
		}
	})
	t.Run("denied directly", func(t *testing.T) {
		if resp, _ := rawGet(t, "GET", ts.URL+"/private/report.txt"); resp.StatusCode != 403 {
			t.Fatalf("GET /private/report.txt = %d; want 403", resp.StatusCode)
		}
	})
}

// TestInternalRedirectPHP: with a real php-fpm of one worker, PHP hands a
// big download to realroot with X-Accel-Redirect, and while a slow client
// is still reading it, the same single worker answers another request: the
// transfer holds no worker.
func TestInternalRedirectPHP(t *testing.T) {
	dir := newDeploy(t, map[string]string{
		"public/index.php": `<?php echo "front\n";`,
		"public/download.php": `<?php
// The application checks the user's right here, then hands the file over.
header('Content-Type: application/octet-stream');
header('Content-Disposition: attachment; filename="big.bin"');
header('X-Accel-Redirect: /protected/big.bin');`,
		"public/sendfile.php": `<?php
header('X-Sendfile: ' . $_GET['path']);
echo "no file for you\n";`,
	}, "A")
	files := filepath.Join(dir, "shared", "files")
	big := make([]byte, 16<<20) // far more than the client's 16 KiB receive buffer
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(big)
	writeTree(t, files, map[string]string{"big.bin": string(big)})

	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	var (
		mu   sync.Mutex
		done []string
	)
	obs := observerFunc(func(route string, status int) {
		mu.Lock()
		defer mu.Unlock()
		done = append(done, fmt.Sprint(route, " ", status))
	})
	h := New(rs, &fcgi.Client{Network: "unix", Address: fpm.Socket, MaxConns: 1, ReadTimeout: 10 * time.Second}, Options{
		FrontController:   "/index.php",
		InternalLocations: map[string]string{"/protected/": files},
		Observer:          obs,
	})
	srv := newTestServer(t, h)
	defer srv.Close()

	// A slow client: a tiny receive buffer, and it stops reading.
	slow := &http.Client{Transport: &http.Transport{
		DisableCompression: true,
		DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
			return serr
		}}).DialContext,
	}}
	defer slow.CloseIdleConnections()
	resp, err := slow.Get(srv.URL + "/download.php")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") != `attachment; filename="big.bin"` ||
		resp.Header.Get("X-Accel-Redirect") != "" || resp.ContentLength != int64(len(big)) {
		t.Fatalf("download: %d, Content-Length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	br := bufio.NewReaderSize(resp.Body, 1<<10)
	if _, err := br.Peek(1 << 10); err != nil {
		t.Fatal(err)
	}

	// The download is in flight, and php-fpm's one worker answers.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/some/page", nil) // the front controller
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("second request while the download is in flight: %v", err)
	}
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 200 || string(b) != "front\n" {
		t.Fatalf("second request: %d %q", r2.StatusCode, b)
	}
	mu.Lock()
	for _, d := range done {
		if d == "php 200" {
			t.Errorf("the download was done before the second request: %q", done)
		}
	}
	mu.Unlock()

	// The download completes, whole.
	sum := sha256.New()
	n, err := io.Copy(sum, br)
	if err != nil || n != int64(len(big)) || string(sum.Sum(nil)) != string(sha256Sum(big)) {
		t.Fatalf("download: %d bytes, %v; want %d bytes, same sha256", n, err, len(big))
	}

	t.Run("x-sendfile without sendfile dirs", func(t *testing.T) {
		resp, body := rawGet(t, "GET", srv.URL+"/sendfile.php?path=/etc/passwd")
		if resp.StatusCode != 200 || string(body) != "no file for you\n" || resp.Header.Get("X-Sendfile") != "" {
			t.Fatalf("got %d %q X-Sendfile %q; want PHP's body, no header", resp.StatusCode, body, resp.Header.Get("X-Sendfile"))
		}
	})
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// observerFunc is an Observer that records finished requests.
type observerFunc func(route string, status int)

func (f observerFunc) ObserveRequest(route string, status int, _, _ time.Duration) { f(route, status) }
func (f observerFunc) ObserveUpstreamError(string)                                 {}

package proxy

// From a review of X-Accel-Redirect/X-Sendfile (sendfile.go) and the warm-up
// (warm.go): each test failed before its fix.

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// TestInternalFIFO: an X-Accel-Redirect or X-Sendfile naming a FIFO in
// an internal location or a sendfile dir is refused at once (404), as a
// static FIFO is (resolve.Release.Open) and as nginx does (it opens with
// O_NONBLOCK): opening it for reading must not block the request until some
// process opens it for writing.
func TestInternalFIFO(t *testing.T) {
	files := t.TempDir()
	downloads := t.TempDir()
	for _, d := range []string{files, downloads} {
		if err := syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644); err != nil {
			t.Skip("mkfifo:", err)
		}
	}
	responses := map[string]string{
		"accel":    "X-Accel-Redirect: /protected/pipe\r\n\r\n",
		"sendfile": "X-Sendfile: " + downloads + "/pipe\r\n\r\n",
	}
	fake := func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, responses[req.Params["QUERY_STRING"]])
		return err
	}
	ts, _ := newFakeSite(t, map[string]string{"index.php": "<?php"}, Options{
		FrontController:   "/index.php",
		InternalLocations: map[string]string{"/protected/": files},
		SendfileDirs:      []string{downloads},
	}, fake)
	t.Cleanup(func() {
		// Let a request blocked in open(2) go, so that the server can close.
		for _, d := range []string{files, downloads} {
			if f, err := os.OpenFile(filepath.Join(d, "pipe"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
	})
	for _, give := range []string{"accel", "sendfile"} {
		resp, body, err := getWithin(t, "GET", ts.URL+"/download?"+give, 3*time.Second)
		if err != nil {
			t.Errorf("%s: %v; want a 404 at once (the request hangs opening the FIFO)", give, err)
			continue
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d %q; want 404", give, resp.StatusCode, strings.TrimSpace(string(body)))
		}
	}
}

// TestWarmServerName: a warm-up request is made whatever server-name
// is (it is only SERVER_NAME and the Host PHP sees): an IPv6 literal, which
// is no URL host without brackets, must not fail every warm-up path.
func TestWarmServerName(t *testing.T) {
	dir := newDeploy(t, map[string]string{"public/index.php": "<?php"}, "A")
	fake := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok")
		return err
	})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	client := &fcgi.Client{Network: "unix", Address: fake.Socket}
	t.Cleanup(func() { client.Close() })
	for _, name := range []string{"2001:db8::1", "example.com"} {
		h := New(rs, client, Options{FrontController: "/index.php", ServerName: name})
		if err := h.Warm(context.Background(), rs.Current(), []string{"/", "/blog?x=1"}); err != nil {
			t.Errorf("server-name %q: Warm() = %v; want nil", name, err)
		}
	}
	reqs := fake.Requests()
	if len(reqs) != 4 {
		t.Fatalf("php-fpm got %d requests; want 4", len(reqs))
	}
	for i, want := range []struct{ host, uri, query string }{
		{"2001:db8::1", "/", ""}, {"2001:db8::1", "/blog?x=1", "x=1"}, {"example.com", "/", ""}, {"example.com", "/blog?x=1", "x=1"},
	} {
		p := reqs[i].Params
		if p["HTTP_HOST"] != want.host || p["SERVER_NAME"] != want.host || p["REQUEST_URI"] != want.uri || p["QUERY_STRING"] != want.query {
			t.Errorf("request %d: HTTP_HOST %q SERVER_NAME %q REQUEST_URI %q QUERY_STRING %q; want %q %q %q %q", i,
				p["HTTP_HOST"], p["SERVER_NAME"], p["REQUEST_URI"], p["QUERY_STRING"], want.host, want.host, want.uri, want.query)
		}
	}
}

// TestInternalRedirectPOSTConditional: PHP answers a POST with
// X-Accel-Redirect; nginx serves the file as a GET (its internal redirect
// turns any method but HEAD into GET), so a matching If-None-Match gets
// 304, not the 412 a POST gets, and If-Match works as for a GET.
func TestInternalRedirectPOSTConditional(t *testing.T) {
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "report.txt"), []byte("report\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(files, "report.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tag := etag(fi.ModTime().Unix(), fi.Size())
	fake := func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "X-Accel-Redirect: /protected/report.txt\r\n\r\n")
		return err
	}
	ts, _ := newFakeSite(t, map[string]string{"index.php": "<?php"}, Options{
		FrontController:   "/index.php",
		InternalLocations: map[string]string{"/protected/": files},
	}, fake)
	for _, tt := range []struct {
		header, value string
		want          int
	}{
		{"If-None-Match", tag, http.StatusNotModified},
		{"If-Match", tag, http.StatusOK},
		{"If-Match", `"other"`, http.StatusPreconditionFailed},
	} {
		resp, body, err := getWithin(t, "POST", ts.URL+"/download", 3*time.Second, tt.header, tt.value)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("POST with %s: %s: got %d %q; want %d", tt.header, tt.value, resp.StatusCode, body, tt.want)
		}
	}
}

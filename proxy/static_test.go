package proxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStatic(t *testing.T) {
	css := strings.Repeat("body{color:red}\n", 64)
	dir := newDeploy(t, map[string]string{
		"app.css":     css,
		"app.css.gz":  "GZ",
		"app.js":      "js",
		"app.js.br":   "BR",
		"app.js.gz":   "GZ",
		"logo.png":    "PNG",
		"logo.png.gz": "GZ", // not looked for: images are not compressible
		"data.bin":    "bin",
	}, "A")
	mtime := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, f := range []string{"app.css", "app.js", "app.js.br", "app.js.gz", "app.css.gz"} {
		os.Chtimes(filepath.Join(dir, "releases/A", f), mtime, mtime)
	}
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	wantETag := etag(mtime.Unix(), int64(len(css)))

	tests := []struct {
		name     string
		method   string
		target   string
		header   http.Header
		status   int
		body     string
		wantHdrs map[string]string
	}{
		{name: "get", method: "GET", target: "/app.css", status: 200, body: css,
			wantHdrs: map[string]string{"Content-Type": "text/css; charset=utf-8", "ETag": wantETag,
				"Last-Modified": "Sat, 21 Nov 2026 12:00:00 GMT", "Content-Encoding": "", "Vary": ""}},
		{name: "head", method: "HEAD", target: "/app.css", status: 200, body: "",
			wantHdrs: map[string]string{"Content-Length": "1024"}},
		{name: "if-none-match", method: "GET", target: "/app.css", header: http.Header{"If-None-Match": {wantETag}}, status: 304},
		{name: "if-modified-since", method: "GET", target: "/app.css", header: http.Header{"If-Modified-Since": {"Sat, 21 Nov 2026 12:00:00 GMT"}}, status: 304},
		{name: "range", method: "GET", target: "/app.css", header: http.Header{"Range": {"bytes=0-3"}}, status: 206, body: "body",
			wantHdrs: map[string]string{"Content-Range": "bytes 0-3/1024"}},
		{name: "gzip sibling", method: "GET", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip, deflate"}}, status: 200, body: "GZ",
			wantHdrs: map[string]string{"Content-Encoding": "gzip", "Vary": "Accept-Encoding", "Content-Type": "text/css; charset=utf-8", "Content-Length": "2",
				"Accept-Ranges": ""}}, // a range is of app.css itself: none offered of the sibling
		{name: "gzip sibling again", method: "GET", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip"}}, status: 200, body: "GZ",
			wantHdrs: map[string]string{"Content-Encoding": "gzip", "Accept-Ranges": ""}}, // from the file cache
		{name: "gzip sibling conditional", method: "GET", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip"}, "If-None-Match": {`"0-0"`}},
			status: 200, body: "GZ", wantHdrs: map[string]string{"Content-Encoding": "gzip", "Accept-Ranges": ""}}, // through ServeContent
		{name: "plain offers ranges", method: "GET", target: "/app.css", status: 200, body: css,
			wantHdrs: map[string]string{"Accept-Ranges": "bytes"}},
		// A 412 has no body, so no Content-Length of the file's.
		{name: "if-match 412", method: "GET", target: "/app.css", header: http.Header{"If-Match": {`"nope"`}},
			status: 412, wantHdrs: map[string]string{"Content-Length": ""}},
		{name: "gzip sibling 412", method: "GET", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip"}, "If-Match": {`"nope"`}},
			status: 412, wantHdrs: map[string]string{"Content-Length": "", "Accept-Ranges": ""}},
		{name: "gzip sibling 304", method: "GET", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip"}, "If-None-Match": {"*"}},
			status: 304, wantHdrs: map[string]string{"Content-Length": ""}},
		{name: "brotli preferred", method: "GET", target: "/app.js", header: http.Header{"Accept-Encoding": {"gzip, br"}}, status: 200, body: "BR",
			wantHdrs: map[string]string{"Content-Encoding": "br"}},
		{name: "brotli refused by q=0", method: "GET", target: "/app.js", header: http.Header{"Accept-Encoding": {"br;q=0, gzip"}}, status: 200, body: "GZ",
			wantHdrs: map[string]string{"Content-Encoding": "gzip"}},
		{name: "no encoding accepted", method: "GET", target: "/app.js", status: 200, body: "js",
			wantHdrs: map[string]string{"Content-Encoding": ""}},
		{name: "image sibling ignored", method: "GET", target: "/logo.png", header: http.Header{"Accept-Encoding": {"gzip"}}, status: 200, body: "PNG",
			wantHdrs: map[string]string{"Content-Type": "image/png", "Content-Encoding": ""}},
		{name: "unknown type", method: "GET", target: "/data.bin", status: 200, body: "bin",
			wantHdrs: map[string]string{"Content-Type": "application/octet-stream"}},
		{name: "post to a file", method: "POST", target: "/app.css", status: 405,
			wantHdrs: map[string]string{"Allow": "GET, HEAD"}},
		{name: "missing", method: "GET", target: "/nope.css", status: 404},
		{name: "nul", method: "GET", target: "/app.css%00.php", status: 400},
		{name: "dotfile", method: "GET", target: "/.env", status: 404},
		{name: "traversal", method: "GET", target: "/../../../../etc/passwd", status: 400},
		{name: "encoded traversal", method: "GET", target: "/%2e%2e/%2e%2e/etc/passwd", status: 400},
		{name: "traversal inside", method: "GET", target: "/css/../../etc/passwd", status: 400},
		{name: "directory redirect", method: "GET", target: "/?x=1", status: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://example.test/", nil)
			r.URL.Path, r.URL.RawQuery, _ = strings.Cut(tt.target, "?")
			if p, err := unescape(r.URL.Path); err == nil {
				r.URL.Path = p
			}
			r.RequestURI = tt.target
			for k, v := range tt.header {
				r.Header[k] = v
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d; want %d (body %q)", w.Code, tt.status, w.Body.String())
			}
			if tt.body != "" && w.Body.String() != tt.body {
				t.Errorf("body = %q; want %q", w.Body.String(), tt.body)
			}
			for k, v := range tt.wantHdrs {
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s = %q; want %q", k, got, v)
				}
			}
		})
	}
}

// TestStaticSymlinks: links inside a release are followed while they stay
// inside the deploy (shared/ in Capistrano layouts), never to elsewhere.
func TestStaticSymlinks(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	writeTree(t, filepath.Join(dir, "shared"), map[string]string{"storage/avatar.txt": "shared file"})
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret.txt": "outside"})
	rel := filepath.Join(dir, "releases/A")
	if err := os.Symlink("../../shared/storage", filepath.Join(rel, "storage")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(rel, "secret.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(rel, "passwd.txt")); err != nil {
		t.Fatal(err)
	}
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	for _, tt := range []struct {
		target string
		status int
		body   string
	}{
		{"/storage/avatar.txt", 200, "shared file"},
		{"/secret.txt", 404, ""},
		{"/passwd.txt", 404, ""},
	} {
		r := httptest.NewRequest("GET", "http://example.test"+tt.target, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.status || (tt.body != "" && w.Body.String() != tt.body) {
			t.Errorf("GET %s = %d %q; want %d %q", tt.target, w.Code, w.Body.String(), tt.status, tt.body)
		}
	}
}

func TestDirectoryRedirect(t *testing.T) {
	dir := newDeploy(t, map[string]string{"docs/index.html": "<p>docs"}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	r := httptest.NewRequest("GET", "http://example.test/docs?a=b%20c", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/docs/?a=b%20c" {
		t.Fatalf("GET /docs = %d Location %q; want 301 /docs/?a=b%%20c", w.Code, w.Header().Get("Location"))
	}
	r = httptest.NewRequest("GET", "http://example.test/docs/", nil)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "<p>docs" {
		t.Fatalf("GET /docs/ = %d %q; want 200 <p>docs", w.Code, w.Body.String())
	}
}

func unescape(p string) (string, error) {
	r, err := http.NewRequest("GET", "http://x"+p, nil)
	if err != nil {
		return "", err
	}
	return r.URL.Path, nil
}

func TestCacheControl(t *testing.T) {
	dir := newDeploy(t, map[string]string{"app.CSS": "x", "img/a.png": "x", "img/b.txt": "x", "other.txt": "x"}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{CacheControl: []CacheRule{
		{Match: ".css", Value: "public, max-age=31536000, immutable"},
		{Match: "/img", Value: "public, max-age=3600"},
		{Match: "*", Value: "no-cache"},
	}})
	for give, want := range map[string]string{
		"/app.CSS":   "public, max-age=31536000, immutable",
		"/img/a.png": "public, max-age=3600",
		"/img/b.txt": "public, max-age=3600",
		"/other.txt": "no-cache",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.test"+give, nil))
		if got := w.Header().Get("Cache-Control"); w.Code != 200 || got != want {
			t.Errorf("GET %s: %d Cache-Control %q; want 200 %q", give, w.Code, got, want)
		}
	}
}

// TestStaticCache: a small file is served from memory only while its path
// still names the file that was read; a change in place, or a symlink that
// now leads out of the deploy, is seen at once.
func TestStaticCache(t *testing.T) {
	dir := newDeploy(t, map[string]string{"a.txt": "first", "inside.txt": "inside"}, "A")
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret.txt": "outside"})
	rel := filepath.Join(dir, "releases/A")
	if err := os.Symlink("inside.txt", filepath.Join(rel, "link.txt")); err != nil {
		t.Fatal(err)
	}
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	get := func(p string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.test"+p, nil))
		return w.Code, w.Body.String()
	}
	for range 2 { // the second from memory
		if code, body := get("/a.txt"); code != 200 || body != "first" {
			t.Fatalf("GET /a.txt = %d %q; want 200 first", code, body)
		}
		if code, body := get("/link.txt"); code != 200 || body != "inside" {
			t.Fatalf("GET /link.txt = %d %q; want 200 inside", code, body)
		}
	}
	// Held in memory.
	real, err := filepath.EvalSymlinks(filepath.Join(rel, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	h.files.mu.RLock()
	cached := h.files.entries[real] != nil
	h.files.mu.RUnlock()
	if !cached {
		t.Fatalf("a.txt is not in the file cache after two GETs")
	}
	// Edited in place with its size and mtime kept (cp -p, rsync
	// --inplace -t): its status change time moved, so it is read again.
	fi, err := os.Stat(filepath.Join(rel, "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "a.txt"), []byte("FIRST"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(rel, "a.txt"), fi.ModTime(), fi.ModTime())
	if code, body := get("/a.txt"); code != 200 || body != "FIRST" {
		t.Fatalf("GET /a.txt after an edit in place, mtime kept = %d %q; want 200 FIRST", code, body)
	}
	// Replaced in place: a new inode, size and mtime.
	tmp := filepath.Join(rel, "a.txt.new")
	os.WriteFile(tmp, []byte("second version"), 0o644)
	os.Rename(tmp, filepath.Join(rel, "a.txt"))
	if code, body := get("/a.txt"); code != 200 || body != "second version" {
		t.Errorf("GET /a.txt after a change = %d %q; want 200 second version", code, body)
	}
	// The link now leads out of the deploy: never the cached content.
	os.Remove(filepath.Join(rel, "link.txt"))
	os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(rel, "link.txt"))
	if code, body := get("/link.txt"); code != 404 || strings.Contains(body, "outside") || strings.Contains(body, "inside") {
		t.Errorf("GET /link.txt leading outside = %d %q; want 404", code, body)
	}
	// Ranges and conditional requests from memory too.
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "http://example.test/a.txt", nil)
	r.Header.Set("Range", "bytes=0-5")
	h.ServeHTTP(w, r)
	if w.Code != 206 || w.Body.String() != "second" {
		t.Errorf("range from memory = %d %q; want 206 second", w.Code, w.Body.String())
	}
}

// TestServeCachedAsServeContent: a small file served from memory gets the
// headers and body http.ServeContent gives, in one write, for GET and HEAD,
// with an ordinary mtime and with the epoch (no Last-Modified then).
func TestServeCachedAsServeContent(t *testing.T) {
	body := strings.Repeat("x", 700)
	dir := newDeploy(t, map[string]string{"a.css": body, "epoch.css": body}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	mtimes := map[string]time.Time{"a.css": time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC), "epoch.css": time.Unix(0, 0)}
	for f, mt := range mtimes {
		os.Chtimes(filepath.Join(dir, "releases/A", f), mt, mt)
	}
	for f, mt := range mtimes {
		for _, method := range []string{"GET", "HEAD"} {
			want := httptest.NewRecorder()
			want.Header().Set("Content-Type", "text/css; charset=utf-8")
			want.Header().Set("Etag", etag(mt.Unix(), int64(len(body))))
			http.ServeContent(want, httptest.NewRequest(method, "/"+f, nil), "", mt, strings.NewReader(body))
			for i := range 2 { // filling the cache, then from it
				got := httptest.NewRecorder()
				h.ServeHTTP(got, httptest.NewRequest(method, "/"+f, nil))
				if got.Code != want.Code || got.Body.String() != want.Body.String() {
					t.Errorf("%s %s #%d: %d %d bytes, want %d %d bytes", method, f, i, got.Code, got.Body.Len(), want.Code, want.Body.Len())
				}
				gh := got.Header().Clone()
				if gh.Get("Date") == "" {
					t.Errorf("%s %s #%d: no Date", method, f, i)
				}
				gh.Del("Date")
				for k := range want.Header() {
					if gh.Get(k) != want.Header().Get(k) {
						t.Errorf("%s %s #%d: %s = %q, want %q", method, f, i, k, gh.Get(k), want.Header().Get(k))
					}
				}
				if len(gh) != len(want.Header()) {
					t.Errorf("%s %s #%d: headers %v, want %v", method, f, i, gh, want.Header())
				}
			}
		}
	}
}

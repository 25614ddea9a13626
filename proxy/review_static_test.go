// Regression tests of a review of the static path and routing (2026-11-22).
// Each test's comment tells the bug it caught, since fixed.

package proxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDenyIndexFile: a Deny prefix that names a directory's index file
// is bypassed by asking for the directory: route's index step serves (or
// runs) the denied file. nginx's index module makes an internal redirect
// to /docs/index.html, which the deny location then answers 403.
func TestDenyIndexFile(t *testing.T) {
	dir := newDeploy(t, map[string]string{
		"index.php":       "<?php",
		"docs/index.html": "<p>internal docs",
		"setup/index.php": "<?php // installer",
	}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{
		FrontController: "/index.php",
		Deny:            []string{"/docs/index.html", "/setup/index.php"},
	})
	// The files themselves are denied.
	for _, p := range []string{"/docs/index.html", "/setup/index.php"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.test"+p, nil))
		if w.Code != http.StatusForbidden {
			t.Fatalf("GET %s = %d; want 403 (the rule)", p, w.Code)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.test/docs/", nil))
	if w.Code != http.StatusForbidden {
		t.Errorf("GET /docs/ = %d %q; want 403: its index file /docs/index.html is denied", w.Code, w.Body.String())
	}
	rel := h.releases.Pin()
	defer rel.Unpin()
	if rt, err := h.route(rel, "/setup/"); err == nil {
		t.Errorf("route /setup/ = %v %q; want 403: its index script /setup/index.php is denied", rt.kind, rt.name)
	}
}

// TestRangeUnknownUnit: RFC 9110 §14.2: "An origin server MUST
// ignore a Range header field that contains a range unit it does not
// understand." http.ServeContent answers 416 instead (nginx ignores it:
// 200 with the whole file).
func TestRangeUnknownUnit(t *testing.T) {
	body := strings.Repeat("a", 100)
	dir := newDeploy(t, map[string]string{"a.txt": body, "big.txt": strings.Repeat("b", cacheFileMax+1)}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	for _, p := range []string{"/a.txt", "/a.txt", "/big.txt"} { // fill, from memory, not cached
		r := httptest.NewRequest("GET", "http://example.test"+p, nil)
		r.Header.Set("Range", "items=0-1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s with Range: items=0-1 = %d %q; want 200, the range ignored", p, w.Code, w.Body.String())
		}
	}
}

// TestSiblingRefusedByUpperQ: Accept-Encoding "gzip;Q=0" refuses gzip
// (parameter names are case-insensitive; negotiate's qvalue knows it), yet
// acceptsEncoding takes it as accepted and the .gz sibling is sent with
// Content-Encoding: gzip to a client that said it cannot decode it.
func TestSiblingRefusedByUpperQ(t *testing.T) {
	css := strings.Repeat("body{}", 10)
	dir := newDeploy(t, map[string]string{"a.css": css, "a.css.gz": "GZ"}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	for _, ae := range []string{"gzip;Q=0", "gzip; Q=0"} {
		r := httptest.NewRequest("GET", "http://example.test/a.css", nil)
		r.Header.Set("Accept-Encoding", ae)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if ce := w.Header().Get("Content-Encoding"); ce != "" || w.Body.String() != css {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q body %q; want the file as it is", ae, ce, w.Body.String())
		}
		if negotiate(ae) != "" {
			t.Errorf("negotiate(%q) = %q; want none (the two parsers should agree)", ae, negotiate(ae))
		}
	}
}

// TestCachedAfterChmod: a small file read once stays served from
// memory after its read permission is taken away (chmod 000): the cache
// checks inode, size and mtime, and chmod changes none of them (only
// ctime). Without the cache (nginx, or a fresh Handler) the file is 403.
// The server's identity is simulated with setfsuid(2) on a locked thread:
// root ignores file modes.
func TestCachedAfterChmod(t *testing.T) {
	dir := newDeploy(t, map[string]string{"dump.sql": "secret rows"}, "A")
	// Let an unprivileged fsuid walk down to the release.
	for d := dir; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if d == os.TempDir() {
			break
		}
		os.Chmod(d, 0o755)
	}
	root := filepath.Join(dir, "current")
	h := New(newReleases(t, root), nil, Options{DisableCompression: true})
	fresh := New(newReleases(t, root), nil, Options{DisableCompression: true})
	get := func(h *Handler) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.test/dump.sql", nil))
		return w.Code, w.Body.String()
	}
	asNobody(func() {
		if code, body := get(h); code != 200 || body != "secret rows" {
			t.Errorf("before chmod: %d %q; want 200", code, body)
		}
	})
	if err := os.Chmod(filepath.Join(dir, "releases/A/dump.sql"), 0); err != nil {
		t.Fatal(err)
	}
	var freshCode, cachedCode int
	var cachedBody string
	asNobody(func() {
		freshCode, _ = get(fresh)
		cachedCode, cachedBody = get(h)
	})
	if freshCode != http.StatusForbidden {
		t.Fatalf("uncached GET after chmod 000 = %d; want 403 (the setup does not drop the permission)", freshCode)
	}
	if cachedCode != freshCode {
		t.Errorf("GET after chmod 000 = %d %q; want %d like an uncached read: the cache still serves it", cachedCode, cachedBody, freshCode)
	}
}

package proxy

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"realroot/resolve"
)

func TestRoute(t *testing.T) {
	dir := newDeploy(t, map[string]string{
		"index.php":            "<?php",
		"app.css":              "body{}",
		"api.php":              "<?php",
		"sub/index.php":        "<?php",
		"docs/index.html":      "<p>",
		"empty/.keep":          "",
		"uploads/evil.jpg":     "<?php system($_GET['c']);",
		".env":                 "SECRET=1",
		".git/config":          "[core]",
		".well-known/acme":     "token",
		"private/data.txt":     "secret",
		"privateer/ok.txt":     "ok",
		"Case.PHP":             "<?php",
		"dir.php/inner.txt":    "x",
		"notes.php.txt":        "x",
		"app.js":               "x",
		"deep/a/b/c/page.html": "x",
	}, "A")
	rel := newReleases(t, filepath.Join(dir, "current")).Current()
	h := New(nil, nil, Options{FrontController: "/index.php", Deny: []string{"/private"}})

	tests := []struct {
		give     string
		kind     kind
		name     string
		pathInfo string
		docURI   string
		status   int
	}{
		{give: "/", kind: kindIndex, name: "/index.php", docURI: "/index.php"},
		{give: "/index.php", kind: kindPHP, name: "/index.php", docURI: "/index.php"},
		{give: "/app.css", kind: kindStatic, name: "/app.css", docURI: "/app.css"},
		{give: "/api.php/users/1", kind: kindPHP, name: "/api.php", pathInfo: "/users/1", docURI: "/api.php"},
		{give: "/api.php/", kind: kindPHP, name: "/api.php", pathInfo: "/", docURI: "/api.php"},
		{give: "/sub", kind: kindRedirect, name: "/sub/"},
		{give: "/sub/", kind: kindIndex, name: "/sub/index.php", docURI: "/sub/index.php"},
		{give: "/docs/", kind: kindStatic, name: "/docs/index.html", docURI: "/docs/index.html"},
		{give: "/empty/", status: http.StatusForbidden},
		{give: "/no/such/page", kind: kindFront, name: "/index.php", docURI: "/index.php"},
		{give: "/app.css/", kind: kindFront, name: "/index.php", docURI: "/index.php"},
		{give: "/missing.php", status: http.StatusNotFound},
		{give: "/missing.php/x", status: http.StatusNotFound},
		// An upload is never executed, also not through a fake PATH_INFO.
		{give: "/uploads/evil.jpg", kind: kindStatic, name: "/uploads/evil.jpg", docURI: "/uploads/evil.jpg"},
		{give: "/uploads/evil.jpg/x.php", status: http.StatusNotFound},
		{give: "/dir.php/inner.txt", status: http.StatusNotFound}, // a directory is no script
		{give: "/notes.php.txt", kind: kindStatic, name: "/notes.php.txt", docURI: "/notes.php.txt"},
		{give: "/.env", status: http.StatusNotFound},
		{give: "/.git/config", status: http.StatusNotFound},
		{give: "/sub/.hidden.php", status: http.StatusNotFound},
		{give: "/.well-known/acme", kind: kindStatic, name: "/.well-known/acme", docURI: "/.well-known/acme"},
		{give: "/.well-known/.secret", status: http.StatusNotFound},
		{give: "/private", status: http.StatusForbidden},
		{give: "/private/data.txt", status: http.StatusForbidden},
		{give: "/privateer/ok.txt", kind: kindStatic, name: "/privateer/ok.txt", docURI: "/privateer/ok.txt"},
		{give: "/CASE.php", status: http.StatusNotFound}, // matched case-insensitively, absent on disk
		{give: "/Case.PHP", kind: kindPHP, name: "/Case.PHP", docURI: "/Case.PHP"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			rt, err := h.route(rel, tt.give)
			if tt.status != 0 {
				he, ok := err.(*httpError)
				if !ok || he.status != tt.status {
					t.Fatalf("route(%q) = %+v, %v; want status %d", tt.give, rt, err, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("route(%q): %v", tt.give, err)
			}
			if rt.kind != tt.kind || rt.name != tt.name || rt.pathInfo != tt.pathInfo || rt.docURI != tt.docURI {
				t.Errorf("route(%q) = {%v %q %q %q}; want {%v %q %q %q}", tt.give,
					rt.kind, rt.name, rt.pathInfo, rt.docURI, tt.kind, tt.name, tt.pathInfo, tt.docURI)
			}
		})
	}
}

func TestRouteNoFrontController(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	rel := newReleases(t, filepath.Join(dir, "current")).Current()
	h := New(nil, nil, Options{})
	if _, err := h.route(rel, "/nothing"); err == nil || err.(*httpError).status != http.StatusNotFound {
		t.Fatalf("route without front controller: got %v; want 404", err)
	}
	// The front controller, when configured, must exist in the release.
	os.Remove(filepath.Join(dir, "releases/A/index.php"))
	h = New(nil, nil, Options{FrontController: "/index.php"})
	if _, err := h.route(rel, "/nothing"); err == nil || err.(*httpError).status != http.StatusNotFound {
		t.Fatalf("route with a missing front controller: got %v; want 404", err)
	}
}

func TestSplitScript(t *testing.T) {
	exts := []string{".php"}
	tests := []struct {
		give, script, pathInfo string
		ok                     bool
	}{
		{"/index.php", "/index.php", "", true},
		{"/a.php/b.php/c", "/a.php", "/b.php/c", true},
		{"/a.PHP/x", "/a.PHP", "/x", true},
		{"/.php", "", "", false},
		{"/a/.php/x", "", "", false},
		{"/a.phpx", "", "", false},
		{"/a.php.jpg", "", "", false},
		{"/a.jpg/b.php", "/a.jpg/b.php", "", true},
		{"/a.ph", "", "", false},
		{"/a.p\u212ap", "", "", false}, // no Unicode folding
		{"/", "", "", false},
	}
	for _, tt := range tests {
		script, pathInfo, ok := splitScript(tt.give, exts)
		if script != tt.script || pathInfo != tt.pathInfo || ok != tt.ok {
			t.Errorf("splitScript(%q) = %q, %q, %v; want %q, %q, %v", tt.give, script, pathInfo, ok, tt.script, tt.pathInfo, tt.ok)
		}
	}
}

// FuzzSplitScript checks the split's invariants: script + path info is the
// path, the script ends with a PHP extension, and the path info is empty or
// starts with "/".
func FuzzSplitScript(f *testing.F) {
	for _, s := range []string{"/index.php", "/a.php/b", "/a.PhP/", "/x.jpg/y.php", "/.php", "/a.php.php/x.php"} {
		f.Add(s)
	}
	exts := []string{".php", ".phtml"}
	f.Fuzz(func(t *testing.T, p string) {
		script, pathInfo, ok := splitScript(p, exts)
		if !ok {
			return
		}
		if script+pathInfo != p {
			t.Fatalf("splitScript(%q): %q + %q is not the path", p, script, pathInfo)
		}
		if !hasScriptExt(script, exts) {
			t.Fatalf("splitScript(%q): script %q has no PHP extension", p, script)
		}
		if pathInfo != "" && pathInfo[0] != '/' {
			t.Fatalf("splitScript(%q): path info %q does not start with /", p, pathInfo)
		}
	})
}

// FuzzRoute checks routing's invariants on any path: it never panics, only
// a file with a PHP extension is ever sent to php-fpm, the script and its
// path info spell the path, and a static file is always inside the release.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"/", "/index.php", "/a.php/b", "/sub/", "/sub", "/x.jpg/y.php",
		"/../etc/passwd", "/.env", "/.well-known/a", "/img/a.png", "/A.PHP", "/%00", "//a//b/../c"} {
		f.Add(s)
	}
	dir := newDeploy(f, map[string]string{
		"index.php": "<?php", "a.php": "<?php", "sub/index.html": "x", "img/a.png": "x",
		"x.jpg": "x", ".well-known/a": "x", ".env": "x", "A.PHP": "<?php",
	}, "A")
	rel := newReleases(f, filepath.Join(dir, "current")).Current()
	h := New(nil, nil, Options{FrontController: "/index.php"})
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := resolve.CleanPath("/" + raw)
		if err != nil {
			return
		}
		rt, err := h.route(rel, p)
		if err != nil {
			return
		}
		switch rt.kind {
		case kindPHP:
			if rt.name+rt.pathInfo != p {
				t.Fatalf("route(%q): script %q + path info %q is not the path", p, rt.name, rt.pathInfo)
			}
			fallthrough
		case kindIndex, kindFront:
			if !hasScriptExt(rt.name, h.opts.PHPExtensions) {
				t.Fatalf("route(%q) sends %q to php-fpm", p, rt.name)
			}
		case kindStatic:
			if hasScriptExt(rt.name, h.opts.PHPExtensions) {
				t.Fatalf("route(%q) serves script %q as a file", p, rt.name)
			}
		}
		if rt.kind != kindRedirect && hiddenPath(rt.name) {
			t.Fatalf("route(%q) reaches hidden %q", p, rt.name)
		}
		if full := rel.Path(rt.name); rt.kind != kindRedirect && !strings.HasPrefix(full, rel.Root+"/") {
			t.Fatalf("route(%q) leaves the release: %q", p, full)
		}
	})
}
